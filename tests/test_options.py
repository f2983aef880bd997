"""One declaration, every front: argparse, the Invoke tasks, invoke.yaml keys and the remote argv agree with it."""

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

import tasks
from harness import options
from harness.cli import build_parser, config_from_args, given_values
from harness.config import SelftestConfig
from harness.errors import UsageError
from harness.exitcodes import ExitCode
from harness.install import InstallConfig
from harness.options import COMMANDS, OPTIONS, options_for, resolve
from images.provision import GuestSettings
from tools.commands import EVERYTHING
from tools.invoke_front import OptionContext


def subparser(command):
    parser = build_parser(EVERYTHING)
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def flags_of(opt):
    return {opt.flag, opt.negative_flag} if opt.kind is bool else {opt.flag}


class FakeSettings:
    """Settings as a dict of sections, each value set in 'invoke.yaml'."""

    def __init__(self, data):
        self.data = data

    def get(self, section, name):
        value = self.data.get(section, {}).get(name)
        return None if value is None else (value, f"{section}.{name} in invoke.yaml")

    def keys(self, section):
        return [(key, f"{section}.{key} in invoke.yaml") for key in self.data.get(section, {})]


def sample(opt):
    """A value of the option's type that is not its default."""
    if opt.kind is bool:
        return not opt.default
    if opt.choices:
        return next(c for c in opt.choices if c != opt.default)
    one = {int: 7, float: 2.5, str: "-x", Path: Path("/tmp/x")}[opt.kind]
    return (one, {int: 8, float: 3.5, str: "y", Path: Path("/tmp/y")}[opt.kind]) if opt.repeatable else one


# --- the declaration itself ---------------------------------------------------


def test_declaration_is_consistent():
    names = {c.name for c in COMMANDS}
    for opt in OPTIONS:
        assert opt.commands and set(opt.commands) <= names, opt.name
        assert opt.section, opt.name
        assert opt.repeatable == isinstance(opt.default, tuple), opt.name
        assert not opt.choices or opt.default in opt.choices, opt.name
        assert opt.kind in (str, int, float, bool, Path), opt.name
    for cmd in COMMANDS:
        taken = [o.name for o in options_for(cmd.name)]
        assert len(taken) == len(set(taken)), f"{cmd.name} takes an option twice"


def test_help_shows_the_declared_default():
    for opt in OPTIONS:
        if opt.required:
            assert opt.help_text().endswith("(required)")
        elif opt.default_help:
            assert f"(default: {opt.default_help})" in opt.help_text()
        elif opt.default not in (None, False, ()):
            assert f"(default: {options.show(opt.default)})" in opt.help_text(), opt.name


def test_config_objects_take_their_defaults_from_the_declaration():
    for cls, command in ((SelftestConfig, "selftest"), (InstallConfig, "install-win7")):
        defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
        for opt in options_for(command):
            if opt.attr in defaults:
                assert defaults[opt.attr] == opt.default, (cls.__name__, opt.name)
    guest = GuestSettings()
    assert guest.udp_port == options.default("selftest", "udp_port")
    assert guest.http_url == "http://10.0.2.2:18080/aero-virtio-selftest"
    for name, field in (("dns_host", "dns_host"), ("inf", "infs"), ("arch", "arch"), ("test_switch", "test_switches"),
                        ("admin_password", "admin_password"), ("computer_name", "computer_name"),
                        ("test_signing", "test_signing"), ("blk_root", "blk_root")):
        assert getattr(guest, field) == options.default("provision_media", name)


def test_every_selftest_option_feeds_the_config():
    fields = {f.name for f in dataclasses.fields(SelftestConfig)}
    for opt in options_for("selftest"):
        assert opt.internal or opt.attr in fields, f"--{opt.name} reaches no SelftestConfig field"


# --- the fronts -----------------------------------------------------------------


@pytest.mark.parametrize("command", [c.name for c in COMMANDS])
def test_argparse_front_is_the_declaration(command):
    parser = subparser(command)
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    declared = options_for(command)
    assert set(actions) == {o.name for o in declared}
    for opt in declared:
        action = actions[opt.name]
        assert set(action.option_strings) == flags_of(opt)
        assert action.required == opt.required
        if opt.internal:
            assert action.help == argparse.SUPPRESS
        else:
            assert action.help.replace("%%", "%") == opt.help_text()
        if opt.kind is not bool:
            assert action.metavar == opt.value_name


@pytest.mark.parametrize("command", [c.name for c in COMMANDS])
def test_invoke_front_is_the_declaration(command):
    task = tasks.ns[command]
    arguments = {a.name: a for a in task.get_arguments()}
    declared = [o for o in options_for(command) if not o.internal]
    assert set(arguments) == {o.name for o in declared}
    context = OptionContext(name=command, args=list(arguments.values()))
    for opt in declared:
        arg = arguments[opt.name]
        assert arg.kind is (bool if opt.kind is bool else list if opt.repeatable else opt.kind)
        spec, text = context.help_for(opt.flag)
        assert text == opt.help_text()
        assert spec == (f"--[no-]{opt.flag[2:]}" if opt.kind is bool else f"{opt.flag}={opt.value_name}")
    # Nothing is given until a flag is.
    assert all(a.value in (None, []) for a in arguments.values())


def test_invoke_help_shows_types_and_values_of_repeatable_options():
    context = OptionContext(name="selftest", args=tasks.ns["selftest"].get_arguments())
    specs = {spec for spec, _ in context.help_tuples()}
    assert {"--timeout=FLOAT", "--memory=INT", "--disk=PATH", "--qemu-arg=ARG", "--require-test=NAME",
            "--[no-]snapshot", "--http-path=STRING"} <= specs


def test_invoke_yaml_keys_are_the_declared_settings():
    configuration = tasks.ns.configuration()
    sections = {o.section for o in OPTIONS if not o.internal}
    assert set(configuration) >= sections
    for section in sections:
        assert set(configuration[section]) == {o.name for o in options.settings_of(section)}
        assert all(value is None for value in configuration[section].values())


def test_remote_argv_is_every_forwarded_option_and_means_the_same_on_the_host():
    forwarded = [o for o in options_for("remote-selftest") if "selftest" in o.commands and o.forward]
    assert {o.name for o in forwarded} >= {"timeout", "memory", "qemu_arg", "require_test", "follow_serial"}
    assert not {"disk", "artifacts", "qemu_system"} & {o.name for o in forwarded}
    values = resolve("remote-selftest", {"host": ["kvm01"], **{o.name: sample(o) for o in forwarded}})
    argv = options.forwarded_argv(values)
    again = resolve("selftest", given_values(build_parser().parse_args(["selftest", *argv])))
    for opt in forwarded:
        assert getattr(again, opt.name) == getattr(values, opt.name), opt.name
    # Defaults are not passed: the host runs the same harness.
    assert options.forwarded_argv(resolve("remote-selftest", {"host": ["kvm01"]})) == []


def test_help_names_only_options_the_command_takes():
    every_flag = {f for o in OPTIONS for f in flags_of(o)}
    for cmd in COMMANDS:
        takes = {f for o in options_for(cmd.name) for f in flags_of(o)}
        for opt in options_for(cmd.name):
            for flag in re.findall(r"--[a-z][a-z0-9-]*", opt.help_text()):
                assert flag in takes or flag not in every_flag, f"{cmd.name} {opt.flag}'s help names {flag}"


def test_selftest_and_remote_summaries_list_every_exit_code():
    remote = options.summary_line(options.command("remote-selftest"))
    local = options.summary_line(options.command("selftest"))
    for code in ExitCode:
        assert f"{code.value} {code.name}" in remote
        assert (f"{code.value} {code.name}" in local) == (not code.name.startswith(("SSH_", "REMOTE_")))


# --- resolving values -------------------------------------------------------------


def test_a_given_flag_wins_over_a_setting_even_when_it_is_the_default():
    settings = FakeSettings({"selftest": {"snapshot": False, "memory": 4096, "timeout": "900"}})
    values = resolve("selftest", {"snapshot": True, "memory": 2048}, settings)
    assert values.snapshot is True and values.memory == 2048
    assert values.timeout == 900.0
    assert resolve("selftest", {}, settings).snapshot is False


def test_settings_are_typed_lists_split_and_bools_read():
    settings = FakeSettings({"selftest": {"qemu_arg": "-cpu max", "require_test": "virtio-blk", "dry_run": "yes",
                                          "follow_serial": "0", "disk": "~/win7.qcow2"},
                             "remote_selftest": {"host": ["kvm01", "kvm02"]}})
    values = resolve("remote-selftest", {}, settings)
    assert values.qemu_arg == ("-cpu", "max") and values.require_test == ("virtio-blk",)
    assert values.dry_run is True and values.follow_serial is False
    assert values.disk == Path.home() / "win7.qcow2" and values.host == ("kvm01", "kvm02")


@pytest.mark.parametrize("data, message, hint", [
    ({"timeout": "abc"}, "selftest.timeout in invoke.yaml: 'abc' is not a number", "--timeout: seconds"),
    ({"memory": 1.5}, "selftest.memory in invoke.yaml: expected a whole number, not float", "--memory"),
    ({"accel": "kmv"}, "selftest.accel in invoke.yaml: 'kmv' is not one of auto, kvm", "--accel"),
    ({"snapshot": "maybe"}, "'maybe' is neither true nor false", "--snapshot"),
    ({"timout": 5}, "selftest.timout in invoke.yaml is not a selftest setting", "did you mean timeout?"),
])
def test_bad_settings_are_usage_errors_that_say_where(data, message, hint):
    with pytest.raises(UsageError) as err:
        resolve("selftest", {}, FakeSettings({"selftest": data}))
    assert message in err.value.message and hint in err.value.hint


def test_required_options_and_unknown_names():
    with pytest.raises(UsageError, match="remote-selftest needs --host"):
        resolve("remote-selftest", {})
    with pytest.raises(UsageError, match="selftest takes no option timout"):
        resolve("selftest", {"timout": 5})


def test_config_from_values_feeds_every_field():
    values = resolve("selftest", {"require_test": ["virtio-net"], "qemu_arg": ["-cpu", "max"], "memory": 1024})
    cfg = config_from_args(values)
    assert cfg.require_tests == ("virtio-net",) and cfg.qemu_args == ("-cpu", "max") and cfg.memory == 1024
    assert cfg.artifacts.parts[0] == "artifacts"


def test_remote_options_come_from_the_values(tmp_path):
    from harness.cli import RUNTIME, remote_options
    from harness.console import Console

    disk = tmp_path / "win7.qcow2"
    disk.write_bytes(b"QFI\xfb" + bytes(508))
    values = resolve("remote-selftest", {"host": ["kvm01", "kvm02"], "disk": disk, "timeout": 90, "memory": 4096,
                                         "ssh_config": tmp_path / "ssh_config"})
    opts = remote_options(values, Console(), RUNTIME)
    assert opts.hosts == ("kvm01", "kvm02") and opts.disk == disk and opts.remote_disk is None
    assert opts.timeout == 90.0 and opts.ssh_config == tmp_path / "ssh_config" and opts.remote_python == "python3"
    assert opts.selftest_args == ("--timeout", "90", "--memory", "4096")
    assert opts.artifacts.name.startswith("remote-")


def test_unknown_argument_suggests_the_nearest_option():
    err = options.unknown_argument("--timout=5", ["--timeout", "--memory"], "invoke selftest")
    assert err.message == "unknown option --timout for invoke selftest" and err.hint == "did you mean --timeout?"
    assert "takes no argument '5'" in options.unknown_argument("5", ["--timeout"], "invoke selftest").message
