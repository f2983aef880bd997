"""The follow loop: what wakes it, and the run states QEMU reports as events.

The runs use the fake QEMU (tests/fakeqemu): a real program speaking QMP,
whose scripted VM stops with internal-error or panics as QEMU's does, with
the same QMP events.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.console import Console
from harness.deadline import Deadline
from harness.follow import POLL, Handler, _timeout
from tests.fakeqemu import FAKE_QEMU, script_env

ROOT = Path(__file__).resolve().parents[1]
P = "AERO_VIRTIO_SELFTEST|"


@pytest.fixture(scope="module")
def tiny_disk(tmp_path_factory) -> Path:
    disk = tmp_path_factory.mktemp("disk") / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    return disk


def run(tmp_path: Path, disk: Path, *args: str, **script: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", "selftest", "--qemu-system", str(FAKE_QEMU), "--disk", str(disk),
         "--accel", "tcg", "--timeout", "60", "--http-port", "27580", "--udp-port", "27581",
         "--artifacts", str(tmp_path / "a"), *args],
        cwd=ROOT, env=script_env(tmp_path, **script), capture_output=True, text=True, timeout=120,
    )


def test_a_vm_that_stops_with_internal_error_ends_the_run_at_once(tmp_path, tiny_disk):
    """QEMU's STOP event wakes the loop; the run state it then asks for is the verdict."""
    started = time.monotonic()
    proc = run(tmp_path, tiny_disk, serial=[{"after": 0.1, "write": f"{P}START|version=1\r\n"}],
               then="internal-error")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "FAIL: VM_INTERNAL_ERROR: " in proc.stdout and "last marker: START" in proc.stdout
    assert time.monotonic() - started < 30  # not the 60 s timeout


def test_a_panic_held_by_qemu_is_reported(tmp_path, tiny_disk):
    proc = run(tmp_path, tiny_disk, "--qemu-arg=-device", "--qemu-arg=pvpanic",
               serial=[{"after": 0.1, "write": f"{P}START|version=1\r\n"}], then="panic")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "FAIL: GUEST_PANICKED: " in proc.stdout


class Scheduled(Handler):
    def __init__(self, at):
        self.at = at

    def next_tick(self):
        return self.at


class Watcher:
    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        return self.fd


def test_an_idle_run_sleeps_until_the_deadline():
    deadline = Deadline(600)
    quiet = Console(live=False)
    timeout = _timeout(Watcher(5), [Handler(), Scheduled(None)], quiet, deadline)
    assert 599 < timeout <= 600


def test_the_loop_wakes_for_the_first_moment_asked_for():
    now = time.monotonic()
    deadline = Deadline(600)
    assert _timeout(Watcher(5), [Scheduled(now + 3), Scheduled(now + 1)], Console(live=False), deadline) <= 1
    assert _timeout(Watcher(5), [Scheduled(now - 1)], Console(live=False), deadline) == 0
    # A status line on a terminal is updated a few times a second; without inotify the log is read every POLL.
    assert _timeout(Watcher(5), [], Console(live=True), deadline) <= Console.STATUS_EVERY
    assert _timeout(Watcher(None), [], Console(live=False), deadline) == POLL
