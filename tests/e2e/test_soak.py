"""The soak: 200 selftest runs in a row against the fake QEMU, and nothing leaks.

The runs go through the harness's own API in this process (``run_selftest``
under ``cli.guarded``, as ``python -m harness selftest`` runs it), so the test
can count its own file descriptors and threads; every run starts, talks QMP to
and stops a real process (tests/fakeqemu). The scripts mix every way a run
ends: pass, fail, hang, crash, silent QMP, QEMU exiting at start, a guest
panic, READY handshakes and a noisy guest. After each run: no process of the
run alive, no child left (not even a zombie), no file descriptor or thread more
than before the first run, no ``aero-run-*`` scratch folder, and result.json's
exit code is the run's. It needs no guest image. It takes about 50 s of CPU,
most of it starting processes (the fake, qemu-img), and 1.5 to 3 minutes of
wall time depending on the machine's load.
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from harness.cli import guarded
from harness.config import SelftestConfig
from harness.console import Console
from harness.qemu import QemuProcess
from harness.runner import run_selftest
from tests.fakeqemu import FAKE_QEMU

# The same on every QEMU and Python: run once, in the first QEMU session (see noxfile.py).
pytestmark = pytest.mark.fake

RUNS = 200
CYCLE = 40  # the kinds' weights add up to this
HTTP_PORT, UDP_PORT = 27280, 27281
P = "AERO_VIRTIO_SELFTEST|"
TESTS = [
    f"{P}TEST|virtio-blk|PASS|write_ok=1", f"{P}TEST|virtio-input|PASS|devices=2",
    f"{P}TEST|virtio-input-bind|PASS|devices=2", f"{P}TEST|virtio-snd|SKIP|device_missing",
    f"{P}TEST|virtio-snd-capture|SKIP|device_missing", f"{P}TEST|virtio-snd-duplex|SKIP|device_missing",
    f"{P}TEST|virtio-net-udp|PASS|bytes=1400", f"{P}TEST|virtio-net|PASS|large_ok=1",
]
HEAD = [f"{P}START|version=1",
        f"{P}CONFIG|http_url=http://10.0.2.2:{HTTP_PORT}/aero-virtio-selftest|udp_port={UDP_PORT}"]


def steps(*lines: str, end: str = "\r\n") -> List[Dict[str, Any]]:
    return [{"after": 0.005, "write": line + end} for line in lines]


@dataclass(frozen=True)
class Kind:
    name: str
    code: int
    token: str
    script: Dict[str, Any]
    settings: Dict[str, Any] = field(default_factory=dict)
    weight: int = 1  # runs of this kind in every CYCLE


READY_RESIZE = f"{P}TEST|virtio-blk-resize|READY|disk=0|old_bytes=16777216"
READY_KEYS = f"{P}TEST|virtio-input-media-keys|READY"
KINDS = [
    Kind("pass", 0, "PASS", {"serial": steps(*HEAD, *TESTS, f"{P}RESULT|PASS")}, weight=8),
    Kind("fail", 1, "VIRTIO_NET_FAILED", {"serial": steps(*HEAD, *TESTS[:-1], f"{P}TEST|virtio-net|FAIL|reason=x",
                                                          f"{P}RESULT|FAIL")}, weight=4),
    Kind("hang", 2, "TIMEOUT", {"serial": steps(*HEAD, *TESTS[:3])}, {"timeout": 0.5}, weight=4),
    Kind("crash", 3, "QEMU_EXITED", {"serial": steps(*HEAD, *TESTS[:2]), "then": "exit", "exit_code": 1}, weight=4),
    Kind("silent QMP", 5, "QEMU_LAUNCH_FAILED", {"qmp": "silent"}),
    Kind("exit at start", 5, "QEMU_LAUNCH_FAILED",
         {"exit_at_start": {"code": 1, "message": "-drive file=x: Failed to get \"write\" lock"}}, weight=3),
    Kind("guest panic", 3, "GUEST_PANICKED", {"serial": steps(*HEAD, *TESTS[:2]), "then": "panic"},
         {"qemu_args": ("-device", "pvpanic")}, weight=4),
    Kind("READY resize", 0, "PASS",
         {"serial": steps(*HEAD, *TESTS, READY_RESIZE),
          "reactions": [{"command": "block_resize",
                         "write": f"{P}TEST|virtio-blk-resize|PASS|new_bytes=83886080\r\n{P}RESULT|PASS\r\n"}]},
         {"with_blk_resize": True}, weight=4),
    Kind("READY media keys", 0, "PASS",
         {"serial": steps(*HEAD, *TESTS, READY_KEYS),
          "reactions": [{"command": "input-send-event", "once": True,
                         "write": f"{P}TEST|virtio-input-media-keys|PASS\r\n{P}RESULT|PASS\r\n"}]}, weight=4),
    Kind("noisy", 0, "PASS",
         {"serial": [{"after": 0.005, "write": "Booting...\r" + HEAD[0] + "\r"},
                     *steps(*HEAD[1:], *TESTS, end="\n\r"),
                     {"after": 0.005, "write": "\u0000\u00ff\x1b[2J junk |RESULT|FAIL inside a line\r\n"},
                     {"after": 0.005, "write": f"{P}RESU"}, {"after": 0.2, "write": "LT|PASS\r\n"}]}, weight=4),
]
assert sum(k.weight for k in KINDS) == CYCLE


def fds() -> Dict[int, str]:
    """This process's open file descriptors and what each is."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # the descriptor listdir itself used
    return out


def children() -> List[Tuple[int, str]]:
    """This process's child processes, zombies too: (pid, state)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if int(fields[1]) == os.getpid():
            found.append((int(entry.name), fields[0]))
    return found


def mentioning(needle: str) -> List[int]:
    """Processes whose command line mentions ``needle`` (orphans of a run too, reparented to init)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.fixture
def soak_env(tmp_path, monkeypatch):
    """The fake on a fast Python, a temp dir of the test's own, a connect timeout that fits a soak."""
    # The fake's #! line finds python3 on PATH; a pyenv shim there costs 0.4 s a start.
    fast = tmp_path / "python"
    fast.mkdir()
    (fast / "python3").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", f"{fast}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the probe cache of the fake's answers
    scratch = tmp_path / "tmp"  # the harness's aero-run-* folders go here, and no one else's
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    # The run waits 15 s for a QEMU that never greets on QMP; 3 s is as honest a test and lets it be soaked.
    monkeypatch.setattr(QemuProcess.start, "__defaults__", (3.0,))
    return scratch


def test_200_runs_leak_nothing(tmp_path, soak_env, monkeypatch):
    disk = tmp_path / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    order = [k for k in KINDS for _ in range(k.weight)] * (RUNS // CYCLE)
    random.Random(13).shuffle(order)
    fds_before, threads_before, children_before = fds(), threading.enumerate(), children()
    problems: List[str] = []
    for index, kind in enumerate(order):
        artifacts = tmp_path / "runs" / f"{index:03d}"
        script = tmp_path / "scripts" / f"{index:03d}.json"
        script.parent.mkdir(exist_ok=True)
        script.write_text(json.dumps(kind.script))
        monkeypatch.setenv("FAKE_QEMU_SCRIPT", str(script))
        settings: Dict[str, Any] = {"timeout": 30.0, **kind.settings}
        cfg = SelftestConfig(disk=disk, qemu_system=str(FAKE_QEMU), accel="tcg", http_port=HTTP_PORT,
                             udp_port=UDP_PORT, artifacts=artifacts, **settings)
        out, err = io.StringIO(), io.StringIO()
        console = Console(out, err, live=False)
        code = guarded(lambda: int(run_selftest(cfg, console).exit_code), console)  # noqa: B023 (called at once)
        said = f"run {index} ({kind.name}): exit {code}\n{out.getvalue()}{err.getvalue()}"
        if "in use" in out.getvalue():  # by another test run on this machine, or by a leak of the last run
            pytest.fail("\n\n".join([*problems, f"{said}a port is busy; if no leak is listed above, run again"]))
        result = json.loads((artifacts / "result.json").read_text())
        if (code, result["token"]) != (kind.code, kind.token):
            problems.append(f"{said}expected exit {kind.code} {kind.token}, result.json says {result['token']}")
        if result["exit_code"] != code:
            problems.append(f"{said}result.json says exit code {result['exit_code']}")
        left = {
            "processes of the run": mentioning(str(artifacts)),
            "children": sorted(set(children()) - set(children_before)),
            "file descriptors": sorted(set(fds().items()) - set(fds_before.items())),
            "threads": [t.name for t in threading.enumerate() if t not in threads_before],
            "scratch folders": sorted(p.name for p in soak_env.glob("aero-run-*")),
        }
        for what, items in left.items():
            if items:
                problems.append(f"{said}left behind, {what}: {items}")
        if len(problems) >= 5:
            break
    assert problems == [], "\n\n".join(problems)
    assert len(order) == RUNS and len(fds()) == len(fds_before) and threading.active_count() == len(threads_before)
