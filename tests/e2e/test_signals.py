"""A signal at any instant around QEMU's launch ends the run cleanly.

Each run gets SIGINT or SIGTERM either after a random delay in its first second
or at the instant its qemu.log appears (QEMU just forked). Every time: exit 130,
no process of the run left once the harness has exited, no traceback, and
result.json (when the run got as far as its artifacts folder) says INTERRUPTED.

The first second counts from the instant the harness catches signals (SIGTERM
in /proc/PID/status SigCgt; ``python -m harness`` takes them on its first
line): before that it is only the Python interpreter starting, where the
signal's default action ends the process before it started anything; that
window is checked on its own (killed by the signal, nothing left, nothing
written).

Most runs use the fake QEMU (tests/fakeqemu), which starts slowly and speaks
QMP, so tens of runs take seconds; a few use real QEMU. ``AERO_SIGNAL_RUNS``
raises the count (the issue's bar: 100 in a row).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pytest

from tests.e2e.conftest import QEMU, ROOT, catches, scenario
from tests.fakeqemu import FAKE_QEMU, script_env

RUNS = int(os.environ.get("AERO_SIGNAL_RUNS", "30"))
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def processes_mentioning(needle: str) -> List[str]:
    """Command lines of live processes that mention ``needle`` (a run's artifacts folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and needle.encode() in cmdline:
            shown = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {shown}")
    return found


def interrupt_run(
    qemu: str, args: List[str], artifacts: Path, signum: int, when: Callable[[float], bool],
    env: Optional[Dict[str, str]] = None,
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "selftest", "--qemu-system", qemu, "--artifacts", str(artifacts),
         "--accel", "tcg", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env,
    )
    try:
        # SIGTERM: Python catches SIGINT from its own start, SIGTERM only once the harness does.
        while proc.poll() is None and not catches(proc.pid, signal.SIGTERM):
            time.sleep(0.0005)
        started = time.monotonic()
        while proc.poll() is None and not when(time.monotonic() - started):
            time.sleep(0.001)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    what = f"{signal.Signals(signum).name}: rc={proc.returncode}\n{out}\n{err}"
    assert proc.returncode == 130, what
    assert "Traceback" not in err and "Traceback" not in out, what
    assert processes_mentioning(str(artifacts)) == [], what
    result = artifacts / "result.json"
    if artifacts.exists():
        assert json.loads(result.read_text())["token"] == "INTERRUPTED", what


def random_instant(rng: random.Random) -> Callable[[float], bool]:
    delay = rng.uniform(0.0, 1.0)
    return lambda elapsed: elapsed >= delay


def at_qemu_launch(artifacts: Path) -> Callable[[float], bool]:
    return lambda elapsed: (artifacts / "qemu.log").exists()


def free_ports() -> Tuple[int, int]:
    """A TCP and a UDP port nobody holds now (others on this machine run tests too)."""
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        udp.bind(("127.0.0.1", 0))
        return tcp.getsockname()[1], udp.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_disk(tmp_path_factory) -> Path:
    disk = tmp_path_factory.mktemp("disk") / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    return disk


@pytest.mark.fake
@pytest.mark.parametrize("index", range(RUNS))
def test_signal_around_launch_fake_qemu(tmp_path, tiny_disk, index):
    rng = random.Random(index)
    env = script_env(
        tmp_path,
        start_delay=rng.uniform(0.0, 0.6),
        serial=[{"after": 0.05, "write": "AERO_VIRTIO_SELFTEST|START|version=1\r\n"}],
    )
    artifacts = tmp_path / "a"
    when = at_qemu_launch(artifacts) if index % 3 == 0 else random_instant(rng)
    http, udp = free_ports()
    interrupt_run(
        str(FAKE_QEMU), ["--disk", str(tiny_disk), "--timeout", "30", "--http-port", str(http), "--udp-port", str(udp)],
        artifacts, SIGNALS[index % 2], when, env,
    )


@pytest.mark.parametrize("index", range(4))
def test_signal_around_launch_real_qemu(tmp_path, guest_image, index):
    rng = random.Random(1000 + index)
    artifacts = tmp_path / "a"
    when = at_qemu_launch(artifacts) if index < 2 else random_instant(rng)
    interrupt_run(QEMU, [*scenario("hang"), "--disk", str(guest_image), "--timeout", "60"], artifacts,
                  SIGNALS[index % 2], when)


@pytest.mark.fake
@pytest.mark.parametrize("signum", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_interpreter_starts_leaves_nothing(tmp_path, tiny_disk, signum):
    artifacts = tmp_path / "a"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "selftest", "--qemu-system", str(FAKE_QEMU), "--disk", str(tiny_disk),
         "--artifacts", str(artifacts)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    proc.send_signal(signum)  # at once: before or just after the harness's first line
    out, err = proc.communicate(timeout=60)
    assert proc.returncode in (-signum, 130), (proc.returncode, out, err)
    assert processes_mentioning(str(artifacts)) == []
    if proc.returncode == -signum:
        assert not artifacts.exists() and out == ""


@pytest.mark.fake
def test_sigusr1_prints_the_threads_and_the_run_goes_on(tmp_path, tiny_disk):
    """`kill -USR1` shows where a run that seems stuck is, without ending it."""
    env = script_env(tmp_path, serial=[
        {"after": 0.05, "write": "AERO_VIRTIO_SELFTEST|START|version=1\r\n"},
        {"after": 2.0, "write": "AERO_VIRTIO_SELFTEST|RESULT|PASS\r\n"},
    ])
    artifacts = tmp_path / "a"
    http, udp = free_ports()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "selftest", "--qemu-system", str(FAKE_QEMU), "--disk", str(tiny_disk),
         "--artifacts", str(artifacts), "--accel", "tcg", "--timeout", "30", "--http-port", str(http),
         "--udp-port", str(udp)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and not (artifacts / "qemu.log").exists():
            assert time.monotonic() < deadline, "the harness did not start QEMU within 60 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGUSR1)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    # The fake's guest reports no device tests: the run ends with the verdict that earns, not INTERRUPTED.
    assert proc.returncode == 1 and "FAIL: MISSING_VIRTIO_BLK" in out, out + err
    assert "Current thread" in err and 'File "' in err, err
