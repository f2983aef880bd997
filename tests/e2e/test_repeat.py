"""Many runs of the test guest on one machine: ``selftest --repeat N --jobs J`` under real QEMU.

Each run is in a network namespace of its own where this machine allows it, so
several guests at once all get the default 127.0.0.1:18080/18081 (and runs of
other tests on this machine do not collide with them). One test takes the
namespaces away (no ``unshare`` on PATH) to see the runs take turns instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from harness import netns
from tests.e2e.conftest import QEMU, ROOT, TEST_GUEST, Finished, qemu_pids, scenario, sha256

# Host-side plumbing, the same on every QEMU: the nox matrix runs it in its first QEMU session only.
pytestmark = pytest.mark.host_side

needs_namespaces = pytest.mark.skipif(netns.probe_local()[0] is None,
                                      reason="no network namespaces on this machine (unshare -rn)")


def argv(*args: str, artifacts: Path) -> List[str]:
    return [sys.executable, "-m", "harness", "selftest", "--disk", str(TEST_GUEST), "--qemu-system", QEMU,
            "--accel", "tcg", "--smp", "1", "--artifacts", str(artifacts), *args]


def repeat(*args: str, artifacts: Path, timeout: float = 400, env: Optional[Dict[str, str]] = None) -> Finished:
    started = time.monotonic()
    proc = subprocess.run(argv(*args, artifacts=artifacts), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    assert qemu_pids(str(artifacts)) == [], "a QEMU process was left behind"
    return Finished(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started, artifacts)


def result(artifacts: Path, index: int) -> dict:
    return json.loads((artifacts / f"run-{index:03d}" / "result.json").read_text())


def summary(artifacts: Path) -> dict:
    return json.loads((artifacts / "summary.json").read_text())


@needs_namespaces
def test_four_runs_at_once_all_pass_on_the_default_ports(guest_image, tmp_path):
    before = sha256(guest_image)
    run = repeat("--repeat", "4", "--jobs", "4", artifacts=tmp_path / "a")
    assert run.code == 0, run.stdout + run.stderr
    assert run.stdout.strip().splitlines()[-1].startswith("PASS: 4/4 runs passed (pass rate 100.0%, median ")
    assert "4 runs, 4 at once, each in a user+network namespace of its own" in run.stderr
    seconds = []
    for index in range(1, 5):
        got = result(run.artifacts, index)
        assert got["verdict"] == "PASS"
        # Every guest was served on the default ports: its CONFIG names them, and its tests passed through them.
        assert got["guest_config"]["http_url"] == "http://10.0.2.2:18080/aero-virtio-selftest"
        assert got["guest_config"]["udp_port"] == "18081"
        assert got["qemu"]["http_requests"] >= 3
        assert f"name=opt/aero/run_index,string={index}" in got["qemu"]["argv"]
        seconds.append(summary(run.artifacts)["runs"][index - 1]["seconds"])
    # At once, not one after the other.
    assert run.seconds < 0.75 * sum(seconds), (run.seconds, seconds)
    root = ET.parse(run.artifacts / "junit.xml").getroot()
    assert [s.get("name") for s in root.findall("testsuite")] == [
        f"aero-virtio-selftest.run-00{i}" for i in range(1, 5)]
    assert root.get("failures") == "0" and root.get("errors") == "0"
    table = run.stderr[run.stderr.index("run      exit"):]
    assert len([line for line in table.splitlines() if line.startswith("run-00")]) == 4
    assert sha256(guest_image) == before


@needs_namespaces
def test_a_flaky_guest_gets_its_pass_rate(tmp_path, guest_image):
    run = repeat("--repeat", "6", "--jobs", "3", *scenario("flaky"), artifacts=tmp_path / "a")
    assert run.code == 1, run.stdout + run.stderr
    assert run.stdout.strip().splitlines()[-1].startswith(
        "FAIL: 4/6 runs passed (pass rate 66.7%, median ")
    assert run.stdout.strip().endswith("; worst exit code 1 (FAIL)")
    tokens = {r["run"]: r["token"] for r in summary(run.artifacts)["runs"]}
    assert tokens == {1: "PASS", 2: "PASS", 3: "VIRTIO_BLK_FAILED", 4: "PASS", 5: "PASS", 6: "VIRTIO_BLK_FAILED"}
    assert summary(run.artifacts)["totals"]["pass_rate"] == pytest.approx(4 / 6)
    # One line per finished run as it ends, the failed ones with their folder.
    assert "run-003: FAIL exit 1 VIRTIO_BLK_FAILED in " in run.stderr
    assert str(run.artifacts / "run-003") in run.stderr
    root = ET.parse(run.artifacts / "junit.xml").getroot()
    failed = {s.get("name") for s in root.findall("testsuite") if s.get("failures") != "0"}
    assert failed == {"aero-virtio-selftest.run-003", "aero-virtio-selftest.run-006"}


@needs_namespaces
def test_until_fail_starts_no_new_run_after_the_first_failure(tmp_path, guest_image):
    run = repeat("--repeat", "6", "--jobs", "2", "--until-fail", *scenario("flaky", flaky_every="2"),
                 artifacts=tmp_path / "a")
    assert run.code == 1, run.stdout + run.stderr
    assert "run-002 failed (VIRTIO_BLK_FAILED): --until-fail starts no new run; " in run.stderr
    got = summary(run.artifacts)
    assert [r["run"] for r in got["runs"]] == [1, 2] and got["not_run"] == [3, 4, 5, 6]
    assert got["first_failure"] == 2
    assert "not run: run-003..run-006" in run.stderr
    assert run.stdout.strip().splitlines()[-1].startswith("FAIL: 1/2 runs passed (pass rate 50.0%, ")
    assert not (run.artifacts / "run-003").exists()


def start_hanging_repeat(artifacts: Path) -> subprocess.Popen:
    """A repeat of guests that never say RESULT, returned once two of its QEMUs run."""
    proc = subprocess.Popen(argv("--repeat", "4", "--jobs", "2", "--timeout", "120", *scenario("hang"),
                                 artifacts=artifacts),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(qemu_pids(str(artifacts))) < 2:
        time.sleep(0.1)
    if len(qemu_pids(str(artifacts))) < 2:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"the runs' QEMUs never started: {proc.communicate()}")
    return proc


def assert_no_qemu_within(artifacts: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while qemu_pids(str(artifacts)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert qemu_pids(str(artifacts)) == []


@needs_namespaces
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_every_run_and_leaves_no_qemu(tmp_path, guest_image, signum):
    artifacts = tmp_path / "a"
    proc = start_hanging_repeat(artifacts)
    try:
        os.killpg(proc.pid, signum)  # as a terminal's Ctrl-C: to the repeat's process group, not its runs'
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert qemu_pids(str(artifacts)) == []
    assert proc.returncode == 130, out + err
    assert "no new run; stopping the 2 runs under way" in err and "Traceback" not in err
    for index in (1, 2):
        assert result(artifacts, index)["token"] == "INTERRUPTED"  # each stopped its QEMU and kept its artifacts
    assert out.strip().splitlines()[-1].endswith("worst exit code 130 (INTERRUPTED)")
    assert "not run: run-003..run-004" in err


@needs_namespaces
def test_a_killed_repeat_leaves_no_qemu(tmp_path, guest_image):
    artifacts = tmp_path / "a"
    proc = start_hanging_repeat(artifacts)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    # Each run sees its stdin close and stops itself, artifacts and all.
    assert_no_qemu_within(artifacts, 30)
    deadline = time.monotonic() + 15
    while not (artifacts / "run-002" / "result.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert result(artifacts, 1)["token"] == result(artifacts, 2)["token"] == "INTERRUPTED"


def test_without_namespaces_the_runs_take_turns_on_the_port_lock(tmp_path, guest_image):
    # A PATH with QEMU but no unshare: no run can have a namespace of its own.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in (QEMU, "qemu-img"):
        found = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        (bin_dir / Path(found).name).symlink_to(found)
    env = {**os.environ, "PATH": str(bin_dir)}
    artifacts = tmp_path / "a"
    ports = ["--http-port", "27980", "--udp-port", "27981"]
    # Another run holds the ports for a while (this test, as a run started by hand would).
    with netns.port_lock([("tcp", 27980), ("udp", 27981)], lambda _: None):
        proc = subprocess.Popen(argv("--repeat", "2", "--jobs", "2", *ports, artifacts=artifacts), cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        time.sleep(4)
    out, err = proc.communicate(timeout=300)
    assert qemu_pids(str(artifacts)) == []
    assert proc.returncode == 0, out + err
    assert "no network namespace for the runs here (unshare --user --map-root-user --net: " in err
    assert "they share 127.0.0.1 and go one at a time, not 2 at once" in err
    assert f"run-001 waits for another selftest run (pid {os.getpid()}), which holds the ports 27980/27981" in err
    assert "waiting for another selftest run" in (artifacts / "run-001" / "harness.log").read_text()
    assert summary(artifacts)["isolation"].startswith("none (")
    first, second = (result(artifacts, i) for i in (1, 2))
    assert first["verdict"] == second["verdict"] == "PASS"
