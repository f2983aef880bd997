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
from harness.follow import BURST, POLL, FirmwareWatch, Handler, _sleep
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


SERIAL = 5  # the serial log's inotify descriptor, as far as the plan goes


def test_an_idle_run_sleeps_until_something_happens():
    fds, timeout = _sleep(SERIAL, 0.0, [Handler(), Scheduled(None)], Console(live=False), Deadline(600))
    assert SERIAL in fds and 599 < timeout <= 600  # the deadline is the only moment asked for
    fds, timeout = _sleep(SERIAL, 0.0, [Handler()], Console(live=False), Deadline(None))
    assert timeout is None


def test_the_loop_wakes_for_the_first_moment_asked_for():
    now = time.monotonic()
    deadline = Deadline(600)
    assert _sleep(SERIAL, 0.0, [Scheduled(now + 3), Scheduled(now + 1)], Console(live=False), deadline)[1] <= 1
    assert _sleep(SERIAL, 0.0, [Scheduled(now - 1)], Console(live=False), deadline)[1] == 0
    # A status line on a terminal is updated a few times a second.
    assert _sleep(SERIAL, 0.0, [], Console(live=True), deadline)[1] <= Console.STATUS_EVERY


def test_a_talking_guest_is_read_every_burst_interval_and_without_inotify_every_poll():
    fds, timeout = _sleep(SERIAL, time.monotonic(), [], Console(live=False), Deadline(600))
    assert SERIAL not in fds and timeout <= BURST
    fds, timeout = _sleep(None, 0.0, [], Console(live=False), Deadline(600))
    assert timeout == pytest.approx(POLL, abs=0.01)


def test_the_firmware_watch_reads_all_that_is_new_at_one_wake_up(tmp_path):
    """Woken once for 70 KB (more than one read), it still sees the last line: nothing wakes it for the rest."""
    log = tmp_path / "firmware.log"
    log.write_bytes(b"SeaBIOS (version 1.16.3)\n")
    watch = FirmwareWatch(log)
    assert watch.on_tick(None) is None
    with open(log, "ab") as f:
        f.write(b"Booting from Hard Disk...\n" * 2800 + b"No bootable device.\n")
    assert log.stat().st_size > 64 * 1024
    verdict = watch.on_tick(None)
    watch.close()
    assert verdict is not None and verdict.token == "NO_BOOTABLE_DEVICE"
