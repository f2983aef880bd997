"""Faults with real QEMU and the test guest: the harness must give the right code and
message, leave no QEMU running, never write the base image and keep the serial log.

The ``selftest`` fixture checks the last three after every run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, List

import pytest

from tests.e2e.conftest import QEMU, HarnessRun, qemu_pids, scenario, sha256

TCG = ["--accel", "tcg"]


def wait_for(predicate: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached in {timeout} s")


# Points in a run at which the harness gets its signal: QEMU just launched (no guest output
# yet), the guest's START seen, the guest in the middle of its tests.
POINTS = {
    "qemu-launched": lambda run: (run.artifacts / "qemu.log").exists(),
    "after-start": lambda run: b"|START|" in _serial(run),
    "mid-tests": lambda run: b"TEST|virtio-blk|" in _serial(run),
}


def _serial(run: HarnessRun) -> bytes:
    return _read(run.artifacts / "serial.log")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize("point", sorted(POINTS))
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_at_every_point(tmp_path, guest_image, point, signum):
    before = sha256(guest_image)
    run = HarnessRun([*TCG, *scenario("hang")], tmp_path / "a")
    wait_for(lambda: POINTS[point](run), what=point)
    run.signal(signum)
    done = run.finish(60)
    assert done.code == 130, done.stdout + done.stderr
    assert qemu_pids(str(run.artifacts)) == []
    assert (run.artifacts / "serial.log").exists() and (run.artifacts / "result.json").exists()
    assert sha256(guest_image) == before


def test_qemu_killed_mid_run(tmp_path, guest_image, selftest):
    artifacts = tmp_path / "a"
    result: List = []
    thread = threading.Thread(target=lambda: result.append(selftest(*TCG, *scenario("hang"), artifacts=artifacts)))
    thread.start()
    wait_for(lambda: b"|START|" in _read(artifacts / "serial.log"), what="START")
    for pid in qemu_pids(str(artifacts)):
        os.kill(pid, signal.SIGKILL)
    thread.join(60)
    run = result[0]
    assert run.code == 3 and "FAIL: QEMU_EXITED: QEMU exited with code -9" in run.stdout
    assert run.seconds < 30


def test_disk_locked_by_another_qemu(tmp_path, guest_image, selftest):
    disk = tmp_path / "locked.qcow2"
    disk.write_bytes(guest_image.read_bytes())
    holder = subprocess.Popen(
        [QEMU, "-accel", "tcg,thread=single", "-m", "128", "-nodefaults", "-display", "none", "-S",
         "-drive", f"file={disk},if=none,id=d0,format=qcow2", "-device", "virtio-blk-pci,drive=d0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.5)
        before = sha256(disk)
        run = selftest(*TCG, "--disk", str(disk))
    finally:
        holder.kill()
        holder.wait()
    assert run.code == 5, run.stdout + run.stderr
    assert "lock" in run.stdout.lower() and "another process" in run.stderr
    assert sha256(disk) == before


def test_artifacts_folder_unwritable(tmp_path, selftest):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    run = selftest(*TCG, artifacts=blocker / "artifacts")
    assert run.code in (4, 5)
    assert "artifacts" in run.stdout and "Traceback" not in run.stderr


def test_udp_port_busy(selftest):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        port = squatter.getsockname()[1]
        run = selftest(*TCG, "--udp-port", str(port))
    assert run.code == 5 and f"UDP port {port} on 127.0.0.1 is already in use" in run.stdout


class HostileClient:
    """Hammers the HTTP port from this machine during a run; bounded in count and time."""

    def __init__(self, port: int, seconds: float) -> None:
        self.port = port
        self.stop_at = time.monotonic() + seconds
        self.sent = 0
        self.threads = [threading.Thread(target=self._loop, args=(kind,), daemon=True)
                        for kind in ("slow", "half-open", "huge-headers", "paths", "methods", "flood")]

    def start(self) -> HostileClient:
        for t in self.threads:
            t.start()
        return self

    def join(self) -> None:
        for t in self.threads:
            t.join(30)

    def _connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def _loop(self, kind: str) -> None:
        held: List[socket.socket] = []
        try:
            while time.monotonic() < self.stop_at and self.sent < 5000:
                try:
                    self._one(kind, held)
                except OSError:
                    time.sleep(0.05)
                self.sent += 1
        finally:
            for s in held:
                s.close()

    def _one(self, kind: str, held: List[socket.socket]) -> None:
        if kind == "slow":  # slowloris: headers one byte at a time, never finished
            if len(held) < 20:
                s = self._connect()
                s.sendall(b"GET /aero-virtio-selftest HTTP/1.1\r\nHost: x\r\n")
                held.append(s)
            for s in held:
                s.sendall(b"X")
            time.sleep(0.5)
        elif kind == "half-open":  # connect, send half a request, shut the write side
            s = self._connect()
            s.sendall(b"POST /aero-virtio-selftest-large HTTP/1.1\r\nContent-Length: 1048576\r\n\r\npartial")
            s.shutdown(socket.SHUT_WR)
            s.close()
        elif kind == "huge-headers":
            s = self._connect()
            s.sendall(b"GET /aero-virtio-selftest HTTP/1.1\r\nX-Big: " + b"A" * 200_000 + b"\r\n\r\n")
            s.recv(4096)
            s.close()
        elif kind == "paths":
            for path in (b"/../../etc/passwd", b"/aero-virtio-selftest/../x", b"/%00", b"*", b"/" + b"a" * 9000):
                s = self._connect()
                s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                s.recv(4096)
                s.close()
        elif kind == "methods":
            for line in (b"DELETE / HTTP/1.1", b"BREW /pot HTCPCP/1.0", b"\x00\xff\xfe garbage", b"GET"):
                s = self._connect()
                s.sendall(line + b"\r\n\r\n")
                s.recv(4096)
                s.close()
        elif kind == "flood":
            s = self._connect()
            s.sendall(b"GET /aero-virtio-selftest-large HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            s.close()  # leave without reading the 1 MiB answer


def test_hostile_http_client_does_not_change_the_verdict(tmp_path, selftest):
    port = 27180
    client = HostileClient(port, seconds=25)
    result: List = []
    thread = threading.Thread(target=lambda: result.append(
        selftest(*TCG, "--http-port", str(port), "--udp-port", "27181", artifacts=tmp_path / "a")))
    thread.start()
    wait_for(lambda: (tmp_path / "a" / "qemu.log").exists(), what="QEMU started")
    client.start()
    thread.join(300)
    client.join()
    run = result[0]
    assert client.sent > 20
    assert run.code == 0, run.stdout + run.stderr
    assert run.result["verdict"] == "PASS"


def test_serial_log_of_a_failed_launch_is_kept(tmp_path, selftest):
    run = selftest(*TCG, "--qemu-arg=-no-such-qemu-option")
    assert run.code == 5 and "QEMU exited at start" in run.stdout
    assert (run.artifacts / "serial.log").exists() and (run.artifacts / "qemu.log").exists()
    assert "no-such-qemu-option" in (run.artifacts / "qemu.log").read_text()


def test_a_disk_with_nothing_to_boot_is_noticed_in_seconds(tmp_path, selftest):
    disk = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    run = selftest(*TCG, "--disk", str(disk), "--timeout", "300")
    assert run.code == 3 and "FAIL: NO_BOOTABLE_DEVICE: " in run.stdout, run.stdout + run.stderr
    assert run.seconds < 60 and "No bootable device" in (run.artifacts / "firmware.log").read_text()
    assert (run.artifacts / "screen.png").exists() and "screen.png" in run.stderr


def test_a_passing_run_says_where_its_artifacts_are(selftest):
    run = selftest(*TCG)
    assert run.code == 0 and f"artifacts: {run.artifacts}" in run.stderr
