"""The Invoke front: settings from the command line, invoke.yaml and INVOKE_SELFTEST_* reach the harness."""

import json
import os
import subprocess
import sys
from pathlib import Path

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
                               "--qemu-arg=-cpu", "--qemu-arg=max"))
    assert argv[argv.index("-m") + 1] == "1536" and argv[argv.index("-smp") + 1] == "3"
    assert argv[argv.index("-accel") + 1] == "tcg" and argv[-2:] == ["-cpu", "max"]


def test_environment_variables_are_settings():
    argv = dry_run_argv(invoke("selftest", "--dry-run", env={"INVOKE_SELFTEST_MEMORY": "1024",
                                                             "INVOKE_SELFTEST_ACCEL": "tcg"}))
    assert argv[argv.index("-m") + 1] == "1024" and argv[argv.index("-accel") + 1] == "tcg"


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
