"""End-to-end helpers: the real harness, real QEMU, the real test guest."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The QEMU under test: the nox qemuN sessions set this; else the one on PATH.
QEMU = os.environ.get("AERO_TEST_QEMU", "qemu-system-x86_64")
TEST_GUEST = ROOT / "build" / "test-guest.qcow2"  # images.testguest.DEFAULT_OUT, built by the guest_image fixture


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def guest_image() -> Path:
    if shutil.which(QEMU) is None:
        pytest.fail(f"{QEMU} is not installed: the end-to-end tests need it (bash .ci/setup)")
    sys.path.insert(0, str(ROOT))
    from images import testguest

    return testguest.ensure()


def has_virtio_sound(qemu: str) -> bool:
    # `-device NAME,help`, as the harness probes: `-device help` loads every module, and a QEMU
    # unpacked beside the system's aborts on a module of the other build.
    try:
        out = subprocess.run([qemu, "-device", "virtio-sound-pci,help"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "audiodev=" in out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def qemu_pids(needle: str) -> List[int]:
    """QEMU processes whose command line mentions ``needle`` (a run's artifacts folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\x00")
        except OSError:
            continue
        # The fake QEMU (tests/fakeqemu) runs as `python3 .../qemu-system-x86_64 ...`.
        if any(b"qemu-system" in a for a in cmdline[:2]) and any(needle.encode() in a for a in cmdline):
            pids.append(int(entry.name))
    return pids


def scenario(name: str, **settings: str) -> List[str]:
    args = ["--qemu-arg=-fw_cfg", f"--qemu-arg=name=opt/aero/scenario,string={name}"]
    for key, value in settings.items():
        args += ["--qemu-arg=-fw_cfg", f"--qemu-arg=name=opt/aero/{key},string={value}"]
    return args


@dataclass
class Finished:
    code: int
    stdout: str
    stderr: str
    seconds: float
    artifacts: Path

    @property
    def result(self) -> dict:
        return json.loads((self.artifacts / "result.json").read_text())


class HarnessRun:
    """``python -m harness selftest`` as a user runs it, in its own process group."""

    def __init__(self, args: List[str], artifacts: Path) -> None:
        self.artifacts = artifacts
        self.started = time.monotonic()
        if not any(a == "--disk" or a.startswith("--disk=") for a in args):
            args = ["--disk", str(TEST_GUEST), *args]  # python -m harness has no default disk; invoke's front does
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness", "selftest", "--qemu-system", QEMU, "--artifacts", str(artifacts), *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )

    def wait_for_serial(self, needle: bytes, timeout: float = 60) -> None:
        serial = self.artifacts / "serial.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if serial.exists() and needle in serial.read_bytes():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"harness ended early: {self.proc.communicate()}")
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} never reached {serial}")

    def signal(self, signum: int) -> None:
        os.killpg(self.proc.pid, signum)

    def finish(self, timeout: float = 300) -> Finished:
        out, err = communicate(self.proc, timeout, self.artifacts)
        return Finished(self.proc.returncode, out, err, time.monotonic() - self.started, self.artifacts)


def catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for ``signum``."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except OSError:
        pass
    return False


def communicate(proc: subprocess.Popen, timeout: float, artifacts: Path) -> tuple:
    """The harness's output when it ends within ``timeout``; else an AssertionError that shows
    where it was stuck: its threads' stacks (SIGUSR1), what Ctrl-C made of it, and the ends of
    the logs its run left. ``proc`` leads a process group of its own."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    if catches(proc.pid, signal.SIGUSR1):  # python -m harness does from its first lines; -m images does not
        proc.send_signal(signal.SIGUSR1)
        time.sleep(1)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    logs = []
    for name in ("serial.log", "harness.log", "qemu.log", "firmware.log"):
        path = artifacts / name
        if path.exists():
            tail = path.read_bytes()[-3000:].decode("utf-8", "replace")
            logs.append(f"--- the end of {path}:\n{tail}")
    raise AssertionError(f"harness did not finish in {timeout} s; stdout:\n{out}\nstderr:\n{err}\n" + "\n".join(logs))


@pytest.fixture
def selftest(tmp_path, guest_image):
    """Run the harness to the end and check what every run must leave behind."""
    runs: List[HarnessRun] = []
    before = sha256(guest_image)

    def go(*args: str, artifacts: Optional[Path] = None, timeout: float = 300) -> Finished:
        run = HarnessRun(list(args), artifacts or tmp_path / f"run{len(runs)}")
        runs.append(run)
        return run.finish(timeout)

    yield go
    for run in runs:
        assert qemu_pids(str(run.artifacts)) == [], "a QEMU process was left behind"
        if (run.artifacts / "qemu.log").exists():
            assert (run.artifacts / "serial.log").exists(), "the serial log was not kept"
    assert sha256(guest_image) == before, "the base image was written"
