"""Every option of every command, declared once; the fronts are derived from here.

``OPTIONS`` below is the one declaration. From it come ``python -m harness``'s
argparse options (harness/cli.py), the Invoke tasks with their flags, help and
``invoke.yaml`` / ``INVOKE_<SECTION>_<NAME>`` settings (tools/invoke_front.py),
the arguments remote-selftest gives ``python -m harness selftest`` on a host
(``forwarded_argv``), and the defaults of the config objects (SelftestConfig,
InstallConfig, images.provision.GuestSettings take theirs from ``default``).

To add an option: one ``Option(...)`` line in its group below, then its use (the
field of the config object it feeds, and the code that reads it).

This module is pure (no I/O) and needs only the standard library.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Protocol, Sequence, Tuple, Type

from harness.devicetests import DEVICE_TESTS
from harness.errors import UsageError
from harness.exitcodes import ExitCode

ACCELS = ("auto", "kvm", "tcg", "hvf", "whpx", "xen", "nvmm")
TCG_THREADS = ("single", "multi")
DEFAULT_HTTP_PATH = "/aero-virtio-selftest"

# How a value of each kind is shown after a flag: --timeout=FLOAT, --memory=INT.
VALUE_NAMES: Dict[type, str] = {str: "STRING", int: "INT", float: "FLOAT", Path: "PATH"}
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class Option:
    """One option: its name, the kind and default of its value, its help, and who takes it."""

    name: str  # the Python name; the flag is --name with dashes
    kind: Type[Any]  # str, int, float, bool or Path: the type of one value
    default: Any
    help: str  # without the default: help_text() adds it
    commands: Tuple[str, ...] = ()  # the commands that take it (default: its group's)
    section: str = ""  # its invoke.yaml section, and INVOKE_<SECTION>_<NAME> (set by its group)
    repeatable: bool = False  # given several times; the value is a tuple, which a given list replaces
    choices: Tuple[str, ...] = ()
    required: bool = False
    metavar: str = ""  # how the value is shown in help (default: from choices or kind)
    default_help: str = ""  # how help shows a default computed at run time, or the lack of one
    field: str = ""  # the config object's attribute, when it is not `name`
    forward: bool = True  # remote-selftest gives it to the run on the host (when both take it)
    dashed: bool = False  # values may start with '-' (QEMU arguments): always passed as --name=VALUE
    internal: bool = False  # remote-selftest's own plumbing: python -m harness only, not in help or settings

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def negative_flag(self) -> str:
        return "--no-" + self.name.replace("_", "-")

    @property
    def attr(self) -> str:
        return self.field or self.name

    @property
    def value_name(self) -> str:
        if self.metavar:
            return self.metavar
        if self.choices:
            return self.name.upper()
        return VALUE_NAMES[self.kind]

    def help_text(self) -> str:
        text = self.help
        if self.choices:
            text += f"; one of {', '.join(self.choices)}"
        if self.repeatable:
            text += "; repeatable"
        if self.required:
            return f"{text} (required)"
        shown = self.default_help or show(self.default)
        return f"{text} (default: {shown})" if shown else text

    def parse(self, text: str, where: str) -> Any:
        """One value typed on a command line or in an environment variable; ``where`` names it in errors."""
        problem = self.problem(text)
        if problem:
            raise UsageError(f"{where}: {problem}", hint=f"{self.flag}: {self.help_text()}")
        return self._convert(text)

    def problem(self, text: str) -> Optional[str]:
        """What is wrong with ``text`` as one value of this option, or None."""
        if self.kind is int:
            try:
                int(text)
            except ValueError:
                return f"{text!r} is not a whole number"
        elif self.kind is float:
            try:
                float(text)
            except ValueError:
                return f"{text!r} is not a number"
        elif self.kind is bool and text.strip().lower() not in TRUE_WORDS + FALSE_WORDS:
            return f"{text!r} is neither true nor false"
        if self.choices and text not in self.choices:
            close = difflib.get_close_matches(text, self.choices, n=1)
            also = f" (did you mean {close[0]}?)" if close else ""
            return f"{text!r} is not one of {', '.join(self.choices)}{also}"
        return None

    def _convert(self, text: str) -> Any:
        if self.kind is bool:
            return text.strip().lower() in TRUE_WORDS
        if self.kind is Path:
            return Path(text).expanduser()
        return self.kind(text)

    def coerce(self, value: Any, where: str) -> Any:
        """A value from a command line, a configuration file or a program, as this option's type."""
        if value is None:
            return None
        if not self.repeatable:
            return self._one(value, where)
        if isinstance(value, str):  # an environment variable, or a one-line list in a file
            try:
                value = shlex.split(value)
            except ValueError as exc:
                hint = "separate the values with spaces, quoted as in a shell"
                raise UsageError(f"{where}: {exc}", hint=hint) from exc
        elif not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(self._one(item, where) for item in value)

    def _one(self, value: Any, where: str) -> Any:
        if isinstance(value, str):
            return self.parse(value, where)
        expected = {bool: (bool,), int: (int,), float: (int, float), str: (int, float), Path: (Path,)}[self.kind]
        if isinstance(value, expected) and (self.kind is bool or not isinstance(value, bool)):
            return self.parse(str(value), where) if self.choices else self.kind(value)
        raise UsageError(f"{where}: expected {describe(self.kind)}, not {type(value).__name__}",
                         hint=f"{self.flag}: {self.help_text()}")

    def to_argv(self, value: Any) -> List[str]:
        """``value`` as arguments of a command line that gives it back."""
        if value is None:
            return []
        if self.kind is bool:
            return [self.flag if value else self.negative_flag]
        out: List[str] = []
        for item in value if self.repeatable else (value,):
            text = str(int(item)) if isinstance(item, float) and item.is_integer() else str(item)
            out += [f"{self.flag}={text}"] if self.dashed or text.startswith("-") else [self.flag, text]
        return out


def show(default: Any) -> str:
    """A default as help text shows it."""
    if default is None or default is False:
        return ""
    if default is True:
        return "on"
    if isinstance(default, float):
        return f"{default:g}"
    if isinstance(default, tuple):
        return ", ".join(str(item) for item in default)
    return str(default)


def describe(kind: type) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text", Path: "a path"}[kind]


def _group(section: str, commands: Tuple[str, ...], *options: Option) -> Tuple[Option, ...]:
    return tuple(dataclasses.replace(o, section=section, commands=o.commands or commands) for o in options)


RUN = ("selftest", "remote-selftest")

# Shared by the commands that start a guest; each group keeps its own copy (and section).
MEMORY = Option("memory", int, 2048, "guest memory in MiB")
SMP = Option("smp", int, 2, "guest CPUs")
ACCEL = Option("accel", str, "auto", "accelerator: auto uses KVM when it really runs guest code here, else TCG",
               choices=ACCELS)
TCG_THREAD = Option("tcg_thread", str, "single", "under TCG: single runs the guest's CPUs in one QEMU thread, "
                    "multi gives each its own (QEMU's multi-threaded TCG now and then crashes a guest at boot)",
                    choices=TCG_THREADS)
QEMU_SYSTEM = Option("qemu_system", str, "qemu-system-x86_64", "QEMU binary to run (a name on PATH or a path)")
QEMU_ARG = Option("qemu_arg", str, (), "an extra QEMU argument, appended as is (--qemu-arg=-cpu --qemu-arg=host)",
                  repeatable=True, metavar="ARG", field="qemu_args", dashed=True)

# Devices and device tests (README, "Devices" and "Device tests"); names as in upstream's Python harness.
DEVICE_OPTIONS = (
    Option("virtio_transitional", bool, False, "early images: QEMU's transitional virtio-blk and virtio-net, no "
           "input devices (default: the contract-v1 devices)"),
    Option("with_virtio_tablet", bool, False, "also attach a virtio tablet (aero_virtio_tablet0)"),
    Option("with_virtio_snd", bool, False, "also attach virtio-sound (QEMU 8.2 and later), record its playback "
           "to virtio-snd.wav, and require the sound tests to PASS and the playback to be heard"),
    Option("virtio_msix_vectors", int, None, "MSI-X vectors of every virtio device", metavar="N",
           default_help="QEMU's"),
    Option("virtio_net_vectors", int, None, "MSI-X vectors of virtio-net", metavar="N", default_help="as above"),
    Option("virtio_blk_vectors", int, None, "MSI-X vectors of virtio-blk", metavar="N", default_help="as above"),
    Option("virtio_input_vectors", int, None, "MSI-X vectors of the virtio input devices", metavar="N",
           default_help="as above"),
    Option("virtio_snd_vectors", int, None, "MSI-X vectors of virtio-sound", metavar="N", default_help="as above"),
    Option("virtio_disable_msix", bool, False, "vectors=0 on every virtio device: the guest gets INTx"),
    Option("require_intx", bool, False, "every device's interrupts must be INTx, as the guest reports them"),
    Option("require_msi", bool, False, "every device's interrupts must be MSI or MSI-X, as the guest reports them"),
    Option("require_virtio_net_msix", bool, False, "the guest must report MSI-X for virtio-net"),
    Option("require_virtio_blk_msix", bool, False, "the guest must report MSI-X for virtio-blk"),
    Option("require_virtio_snd_msix", bool, False, "the guest must report MSI-X for virtio-snd"),
    Option("require_virtio_input_msix", bool, False, "the guest must report MSI-X for virtio-input"),
    Option("disable_udp", bool, False, "no UDP echo; virtio-net-udp is then not required"),
    Option("http_log", Path, None, "write one line per HTTP request (time, client, request line, status, bytes)",
           metavar="FILE", default_help="none"),
    *(Option(t.option, bool, False, f"require {', '.join(t.tests)} (image provisioned with {t.guest_switch}); "
             f"the host sends: {t.host_action}") for t in DEVICE_TESTS),
    Option("blk_resize_delta_mib", int, 64, "how many MiB --with-blk-resize (or a READY from the guest) grows "
           "the disk by", metavar="MIB"),
    Option("virtio_snd_wav_peak_threshold", int, 200, "the playback is heard when its peak passes this (16-bit "
           "scale)", metavar="N"),
    Option("virtio_snd_wav_rms_threshold", int, 50, "... or when its RMS passes this (16-bit scale)", metavar="N"),
)

OPTIONS: Tuple[Option, ...] = (
    # selftest, and remote-selftest, which passes these on to the run on each host.
    *_group(
        "selftest", RUN,
        Option("disk", Path, None, "guest disk image, qcow2 or raw (remote-selftest uploads it unless the host "
               "already has the same content)", default_help="the built-in test guest, built on demand",
               forward=False),
        dataclasses.replace(QEMU_SYSTEM, help="QEMU binary to run, a name on PATH or a path (remote-selftest: "
                            "on the host)", forward=False),
        Option("timeout", float, 600.0, "seconds to wait for the guest's RESULT line"),
        Option("http_port", int, 18080, "port of the HTTP endpoint on 127.0.0.1 (the guest sees 10.0.2.2)",
               commands=(*RUN, "provision-media")),
        Option("udp_port", int, 18081, "port of the UDP echo on 127.0.0.1", commands=(*RUN, "provision-media")),
        Option("http_path", str, DEFAULT_HTTP_PATH, "URL path the guest GETs; PATH-large is the 1 MiB resource",
               commands=(*RUN, "provision-media")),
        MEMORY,
        SMP,
        ACCEL,
        TCG_THREAD,
        Option("snapshot", bool, True, "run on a throw-away overlay so the base image is never written; "
               "--no-snapshot boots (and writes) the image itself (remote-selftest refuses it)"),
        Option("follow_serial", bool, False, "print the guest's serial lines as they arrive"),
        Option("dry_run", bool, False, "print the QEMU command (JSON and shell) and start nothing"),
        Option("require_test", str, (), "a guest TEST that must PASS, beyond those of the device profile "
               "(README, Devices)", repeatable=True, metavar="NAME", field="require_tests", default_help="none"),
        QEMU_ARG,
        Option("artifacts", Path, None, "folder for serial.log, qemu.log, result.json, junit.xml, screen.png "
               "(remote-selftest: each host's in <artifacts>/<host>/)", forward=False,
               default_help="artifacts/selftest-<date>-<time>, or artifacts/remote-<date>-<time>"),
        *DEVICE_OPTIONS,
        # Many runs (harness/repeat.py, harness/fleet.py); the runs themselves get none of these.
        Option("repeat", int, 1, "run the selftest N times, each run in <artifacts>/run-NNN/, then a summary (table, "
               "totals, junit.xml); remote-selftest spreads the runs over the hosts' slots", metavar="N",
               forward=False),
        Option("jobs", int, None, "with --repeat: runs at once, each in a network namespace of its own",
               commands=("selftest",), metavar="J", forward=False,
               default_help="as many as the cores (--smp each) and the free memory (--memory each) allow"),
        Option("until_fail", bool, False, "with --repeat: start no new run after the first failure (the runs under "
               "way finish)", forward=False),
        Option("exit_on_stdin_eof", bool, False, "end the run when stdin closes or reads ^C", commands=("selftest",),
               internal=True),
        Option("session_deadline", float, None, "end the run after this many seconds", commands=("selftest",),
               internal=True),
        Option("private_network", bool, False, "the run is alone in a network namespace (--repeat starts it there): "
               "bring lo up, take no host-wide port lock", commands=("selftest",), internal=True),
        Option("run_index", int, None, "this run's number in a --repeat, offered to the guest through fw_cfg "
               "(opt/aero/run_index)", commands=("selftest",), internal=True),
    ),
    *_group(
        "remote_selftest", ("remote-selftest",),
        Option("host", str, (), "an SSH host, HOST[:SLOTS]: a name from ~/.ssh/config or user@host (with a port: "
               "user@host:PORT:SLOTS); SLOTS is how many runs of a --repeat it takes at once (default 1); hosts run "
               "in parallel", repeatable=True, required=True, metavar="HOST", field="hosts"),
        Option("remote_disk", str, None, "a disk image already on the host (never written: runs use an overlay)"),
        Option("accept_new_host_key", bool, False, "accept and record the key of a host not yet in known_hosts "
               "(otherwise refused)"),
        Option("ssh_config", Path, None, "ssh_config file to resolve hosts with",
               default_help="~/.ssh/config, as Fabric does"),
        Option("remote_python", str, "python3", "Python 3.9 or newer on the host"),
    ),
    *_group(
        "provision_media", ("provision-media",),
        Option("drivers", Path, None, "folder holding the driver packages (searched for the allow-listed INFs)",
               required=True),
        Option("selftest", Path, None, "aero-virtio-selftest.exe", required=True),
        Option("out", Path, Path("build/provision.iso"), "the ISO to write"),
        Option("http_url", str, None, "URL the guest's selftest GETs",
               default_help="http://10.0.2.2:<http-port><http-path>, as the harness serves"),
        Option("dns_host", str, "host.lan", "host name the selftest resolves"),
        Option("blk_root", str, None, "the selftest's --blk-root", default_help="not passed"),
        Option("test_switch", str, (), "a selftest switch such as net-link-flap (becomes --test-net-link-flap)",
               repeatable=True, metavar="NAME"),
        Option("guest_switch", str, (), "any switch of the guest selftest, for its scheduled task: NAME for a flag "
               "(expect-blk-msi), NAME=VALUE for one with a value (net-timeout-sec=60); checked against the "
               "selftest's own list", repeatable=True, metavar="SWITCH", dashed=True),
        Option("check_guest_switches", bool, True, "refuse a switch the selftest does not know (with the nearest "
               "one); --no-check-guest-switches passes it on as given, for a selftest newer than this harness"),
        Option("test_signing", bool, True, "turn test signing on (bcdedit) for test-signed drivers"),
        Option("inf", str, ("aero_virtio_blk", "aero_virtio_net", "aero_virtio_input", "aero_virtio_tablet"),
               "an INF of the allow-list; giving it replaces the default list", repeatable=True, metavar="NAME"),
        Option("with_virtio_snd", bool, False, "also install the sound driver (aero_virtio_snd), for runs with "
               "--with-virtio-snd"),
        Option("virtio_input_compat_id_name", bool, True, "set the input driver's compat mode (registry DWORD "
               "aero_virtio_input\\Parameters\\CompatIdName = 1), which stock QEMU's keyboard and mouse need"),
        Option("edition", str, None, "the edition to install from a multi-edition ISO, by its name in install.wim "
               "(such as 'Windows 7 PROFESSIONAL')", default_help="the one the ISO or product key implies"),
        Option("image_index", int, None, "the edition to install, by its index in install.wim (1 is the first)",
               metavar="N", default_help="as for --edition"),
        Option("arch", str, "amd64", "Windows architecture", choices=("amd64", "x86")),
        Option("product_key", str, None, "Windows product key for autounattend.xml; never printed or logged",
               default_help="$AERO_WIN7_PRODUCT_KEY, else none"),
        Option("admin_password", str, "Aero-Test-1", "password of the auto-logon account 'aero'"),
        Option("computer_name", str, "AERO-WIN7", "the guest's computer name"),
    ),
    *_group(
        "install_win7", ("install-win7",),
        Option("iso", Path, None, "the Windows 7 installation ISO", required=True),
        Option("media", Path, None, "the provisioning ISO from provision-media", required=True),
        Option("out", Path, None, "the image to create (qcow2)", required=True),
        Option("size", str, "32G", "virtual size of the new disk"),
        Option("force", bool, False, "overwrite --out if it exists"),
        Option("timeout", float, 3 * 3600.0, "seconds to wait for provisioning to report DONE"),
        MEMORY,
        SMP,
        ACCEL,
        TCG_THREAD,
        QEMU_SYSTEM,
        Option("screenshot_every", float, 300.0, "seconds between screenshots saved to the artifacts"),
        QEMU_ARG,
        Option("artifacts", Path, None, "folder for serial.log, qemu.log, install.json and the screenshots",
               default_help="artifacts/install-<date>-<time>"),
    ),
    *_group(
        "bench", ("bench",),
        Option("pairs", int, 5, "rounds of compared runs (bare QEMU, the harness under TCG, the harness with the "
               "auto accelerator) for the overhead figures, and runs for the latency figure"),
        Option("wait_seconds", float, 60.0, "idle time over which the CPU figure is taken"),
        Option("log_mib", int, (64, 256, 1024), "serial log size for the memory figure, in MiB", repeatable=True,
               metavar="MIB"),
        QEMU_SYSTEM,
        Option("out", Path, None, "where to write the figures", default_help="build/bench.json"),
        Option("http_port", int, 18080, "port of the HTTP endpoint the runs serve on 127.0.0.1"),
        Option("udp_port", int, 18081, "port of the UDP echo the runs serve on 127.0.0.1"),
    ),
    *_group(
        "build_test_guest", ("build-test-guest",),
        Option("out", Path, None, "where to write the image",
               default_help="build/test-guest.qcow2; with --sound build/test-guest-snd.qcow2"),
        Option("sound", bool, False, "build the sound guest: a newer kernel with Linux's virtio-snd driver, "
               "which plays a tone through it, for selftest runs with sound (QEMU 8.2 and later)"),
        Option("installer_iso", Path, None, "also write a CD that plays the Windows installer, for trying "
               "install-win7 (see README)"),
    ),
)


@dataclass(frozen=True)
class Command:
    name: str
    summary: str  # argparse's help for it, the first line of the Invoke task's docstring
    exit_codes: Tuple[ExitCode, ...] = ()  # listed after the summary (invoke --list shows them)


def _codes(remote: bool) -> Tuple[ExitCode, ...]:
    return tuple(c for c in ExitCode if remote or not c.name.startswith(("SSH_", "REMOTE_")))


COMMANDS: Tuple[Command, ...] = (
    Command("selftest", "Boot a guest under QEMU, serve its tests and judge its selftest", _codes(remote=False)),
    Command("remote-selftest", "Run the same selftest on remote KVM hosts over SSH; artifacts land in "
            "<artifacts>/<host>/", _codes(remote=True)),
    Command("build-test-guest", "Build the Linux test guest from Debian packages and print its path"),
    Command("bench", "Measure the harness on the test guest: overhead, verdict latency, idle CPU, memory, start-up"),
    Command("provision-media", "Build the provisioning ISO (drivers, selftest, provision.cmd, autounattend.xml) "
            "for a Windows 7 image"),
    Command("install-win7", "Install Windows 7 unattended onto a new image with the provisioning media, following "
            "its progress"),
)


def command(name: str) -> Command:
    for cmd in COMMANDS:
        if cmd.name == name:
            return cmd
    raise KeyError(name)


def summary_line(cmd: Command) -> str:
    """The command's summary with its exit codes: one line, as ``invoke --list`` shows it."""
    if not cmd.exit_codes:
        return cmd.summary + "."
    return f"{cmd.summary} (exit {', '.join(f'{c.value} {c.name}' for c in cmd.exit_codes)})."


def options_for(command_name: str) -> List[Option]:
    return [o for o in OPTIONS if command_name in o.commands]


def sections_for(command_name: str) -> List[str]:
    return list(dict.fromkeys(o.section for o in options_for(command_name) if not o.internal))


def settings_of(section: str) -> List[Option]:
    """The options whose value invoke.yaml's ``section:`` (and INVOKE_<SECTION>_*) may set."""
    return list({o.name: o for o in OPTIONS if o.section == section and not o.internal}.values())


def default(section: str, name: str) -> Any:
    """The declared default of an option, for the config objects' own defaults."""
    for o in OPTIONS:
        if o.section == section and o.name == name:
            return o.default
    raise KeyError(f"{section}.{name}")


# --- settings ----------------------------------------------------------------


class Settings(Protocol):
    """Values from a configuration (Invoke's): each with where it came from, for error messages."""

    def get(self, section: str, name: str) -> Optional[Tuple[Any, str]]:
        """The value of ``section.name`` and where it was set, or None when it is not set."""

    def keys(self, section: str) -> Iterable[Tuple[str, str]]:
        """Every key set in ``section``, with where it was set."""


def check_settings(command_name: str, settings: Settings) -> None:
    """A key of this command's sections that no option declares is a usage error, not silently ignored."""
    for section in sections_for(command_name):
        known = [o.name for o in settings_of(section)]
        for key, where in settings.keys(section):
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]}?" if close else f"the {section} settings: {', '.join(known)}"
                raise UsageError(f"{where} is not a {section} setting", hint=hint)


def resolve(command_name: str, given: Mapping[str, Any], settings: Optional[Settings] = None) -> argparse.Namespace:
    """Every option of a command with its value: as given, else from the settings, else the declared default.

    ``given`` holds what the command line gave (a flag given always wins, also when
    it repeats the default); values are converted to the option's type.
    """
    options = options_for(command_name)
    unknown = set(given) - {o.name for o in options}
    if unknown:
        raise UsageError(f"{command_name} takes no option {', '.join(sorted(unknown))}")
    if settings is not None:
        check_settings(command_name, settings)
    values: Dict[str, Any] = {}
    for o in options:
        found = settings.get(o.section, o.name) if settings is not None and not o.internal else None
        if given.get(o.name) is not None:
            value = o.coerce(given[o.name], o.flag)
        elif found is not None:
            value = o.coerce(*found)
        else:
            value = o.default
        if o.required and value in (None, ()):
            where = f"; or {o.section}.{o.name} in invoke.yaml" if settings is not None else ""
            raise UsageError(f"{command_name} needs {o.flag}", hint=f"{o.flag}: {o.help_text()}{where}")
        values[o.name] = value
    return argparse.Namespace(**values)


def build(cls: Type[Any], command_name: str, values: argparse.Namespace, **also: Any) -> Any:
    """A config object (a dataclass) from a command's values: each option feeds the field of its name.

    An option whose value is None leaves a field that has a default at that default
    (artifacts: a folder named after the time).
    """
    fields = {f.name: f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
              for f in dataclasses.fields(cls)}
    kwargs = {o.attr: getattr(values, o.name) for o in options_for(command_name)
              if o.attr in fields and not (getattr(values, o.name) is None and fields[o.attr])}
    kwargs.update(also)
    return cls(**kwargs)


def forwarded_argv(values: argparse.Namespace) -> List[str]:
    """The selftest options of a remote-selftest run, as arguments for ``python -m harness selftest`` on a host.

    Only values that differ from the default are passed (both ends run the same
    harness); --disk, --artifacts and --qemu-system are remote-selftest's own business.
    """
    out: List[str] = []
    for o in options_for("remote-selftest"):
        if "selftest" in o.commands and o.forward:
            value = getattr(values, o.name, None)
            if value is not None and _normal(o, value) != o.default:
                out += o.to_argv(value)
    return out


# A --repeat's own options; the runs it starts get the others.
REPEAT_OPTIONS = ("repeat", "jobs", "until_fail")


def repeat_argv(values: argparse.Namespace) -> List[str]:
    """The selftest options of a ``--repeat``, as arguments for each of its runs (``python -m harness selftest``).

    Only values that differ from the default; not the repeat's own options, nor
    --disk, --artifacts and --http-log, which each run gets its own of.
    """
    out: List[str] = []
    for o in options_for("selftest"):
        if o.internal or o.name in (*REPEAT_OPTIONS, "disk", "artifacts", "http_log"):
            continue
        value = getattr(values, o.name, None)
        if value is not None and _normal(o, value) != o.default:
            out += o.to_argv(value)
    return out


def _normal(o: Option, value: Any) -> Any:
    return tuple(value) if o.repeatable else value


def unknown_argument(token: str, flags: Sequence[str], program: str) -> UsageError:
    """An argument a command does not take, with the nearest option when there is one."""
    if not token.startswith("-"):
        return UsageError(f"{program} takes no argument {token!r}", hint=f"{program} --help lists its options")
    name = token.split("=", 1)[0]
    close = difflib.get_close_matches(name, flags, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else f"{program} --help lists its options"
    return UsageError(f"unknown option {name} for {program}", hint=hint)
