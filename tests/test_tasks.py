"""The Invoke front: settings from the command line, invoke.yaml and INVOKE_SELFTEST_* reach the harness;
mistakes are usage errors (exit 4) wherever they are made."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def invoke(*args, env=None):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=full_env)


def dry_run_argv(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.splitlines()[0])


def test_command_line_reaches_the_argv():
    argv = dry_run_argv(invoke("selftest", "--dry-run", "--memory", "1536", "--smp", "3", "--accel", "tcg",
                               "--tcg-thread", "multi", "--qemu-arg=-cpu", "--qemu-arg=max"))
    assert argv[argv.index("-m") + 1] == "1536" and argv[argv.index("-smp") + 1] == "3"
    assert argv[argv.index("-accel") + 1] == "tcg,thread=multi" and argv[-2:] == ["-cpu", "max"]


def test_environment_variables_are_settings():
    argv = dry_run_argv(invoke("selftest", "--dry-run", env={"INVOKE_SELFTEST_MEMORY": "1024",
                                                             "INVOKE_SELFTEST_ACCEL": "tcg"}))
    assert argv[argv.index("-m") + 1] == "1024" and argv[argv.index("-accel") + 1] == "tcg,thread=single"


def test_config_file_is_read_and_the_command_line_wins(tmp_path):
    config = tmp_path / "invoke.yaml"
    config.write_text("selftest:\n  memory: 3072\n  smp: 4\n  http_port: 28080\n")
    argv = dry_run_argv(invoke("-f", str(config), "selftest", "--dry-run", "--smp", "1"))
    assert argv[argv.index("-m") + 1] == "3072"
    assert argv[argv.index("-smp") + 1] == "1"
    assert "name=opt/aero/http_url,string=http://10.0.2.2:28080/aero-virtio-selftest" in argv


def test_exit_code_comes_through_invoke():
    proc = invoke("selftest", "--disk", "/nonexistent.qcow2")
    assert proc.returncode == 4 and "FAIL: USAGE: --disk /nonexistent.qcow2 does not exist" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_a_flag_given_wins_over_the_configuration_even_at_its_default(tmp_path):
    config = tmp_path / "invoke.yaml"
    config.write_text("selftest:\n  snapshot: false\n  follow_serial: true\n")
    argv = dry_run_argv(invoke("-f", str(config), "selftest", "--dry-run", "--accel", "tcg"))
    assert not any("snapshot=on" in a for a in argv)
    argv = dry_run_argv(invoke("-f", str(config), "selftest", "--dry-run", "--accel", "tcg", "--snapshot"))
    assert any(a.startswith("file=") and a.endswith(",snapshot=on") for a in argv)


def test_unknown_flag_is_a_usage_error_with_the_nearest_option():
    proc = invoke("selftest", "--timout", "5")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert proc.stdout == "FAIL: USAGE: unknown option --timout for invoke selftest\n"
    assert "hint: did you mean --timeout?" in proc.stderr


def test_unknown_task_is_a_usage_error():
    proc = invoke("selftst")
    assert proc.returncode == 4 and "FAIL: USAGE: no task named 'selftst'" in proc.stdout
    assert "did you mean selftest?" in proc.stderr


def test_bad_value_is_a_usage_error_of_invoke_not_of_python_m_harness():
    proc = invoke("selftest", "--memory", "lots")
    assert proc.returncode == 4
    assert proc.stdout == "FAIL: USAGE: --memory: 'lots' is not a whole number\n"
    assert "python -m harness" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr


def test_bad_environment_setting_is_a_usage_error_naming_it():
    proc = invoke("selftest", "--dry-run", env={"INVOKE_SELFTEST_TIMEOUT": "abc"})
    assert proc.returncode == 4
    assert proc.stdout == "FAIL: USAGE: INVOKE_SELFTEST_TIMEOUT: 'abc' is not a number\n"
    assert "Traceback" not in proc.stderr


def test_misspelled_key_in_invoke_yaml_is_a_usage_error_naming_the_file(tmp_path):
    config = tmp_path / "invoke.yaml"
    config.write_text("selftest:\n  timout: 5\n")
    proc = invoke("-f", str(config), "selftest", "--dry-run")
    assert proc.returncode == 4
    assert proc.stdout == f"FAIL: USAGE: selftest.timout in {config} is not a selftest setting\n"
    assert "did you mean timeout?" in proc.stderr


def test_help_shows_typed_values_and_list_every_exit_code():
    help_text = invoke("--help", "selftest").stdout
    for spec in ("--timeout=FLOAT", "--memory=INT", "--qemu-arg=ARG", "--require-test=NAME", "--[no-]snapshot"):
        assert spec in help_text
    listing = " ".join(invoke("--list").stdout.split())
    assert "4 USAGE, 5 HOST_ERROR, 70 INTERNAL_ERROR, 130 INTERRUPTED" in listing
    assert "10 SSH_UNREACHABLE" in listing


def test_provision_media_takes_the_ports_it_puts_in_the_task(tmp_path):
    from harness.options import default

    for name in default("provision_media", "inf"):
        (tmp_path / "drivers" / name).mkdir(parents=True)
        (tmp_path / "drivers" / name / f"{name}.inf").write_text("[Version]\r\n")
    (tmp_path / "selftest.exe").write_bytes(b"MZ")
    proc = invoke("provision-media", "--drivers", str(tmp_path / "drivers"), "--selftest",
                  str(tmp_path / "selftest.exe"), "--out", str(tmp_path / "p.iso"), "--udp-port", "19000",
                  "--http-port", "27880")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '--http-url \\"http://10.0.2.2:27880/aero-virtio-selftest\\"' in proc.stderr
    assert '--udp-port \\"19000\\"' in proc.stderr


def test_a_program_of_ones_own_gets_the_same_usage_errors(capsys):
    import tasks
    from tools.invoke_front import HarnessProgram

    with pytest.raises(SystemExit) as exited:
        HarnessProgram(namespace=tasks.ns).run(["invoke", "selftest", "--smp", "two"])
    assert exited.value.code == 4
    assert capsys.readouterr().out == "FAIL: USAGE: --smp: 'two' is not a whole number\n"
