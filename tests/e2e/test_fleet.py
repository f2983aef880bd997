"""``remote-selftest --repeat`` over two test hosts by slots, against real OpenSSH servers.

The hosts are this machine reached over SSH in two network namespaces (as in
test_remote.py); on each, the runs of a slot are in namespaces of their own,
so each serves 18080 to its own guest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator, List

import pytest

from tests.e2e.conftest import QEMU, ROOT, TEST_GUEST, qemu_pids, scenario
from tests.e2e.sshd import SSHWorld, can_make_netns, ssh_hosts_in_namespaces

# Host-side plumbing, the same on every QEMU: the nox matrix runs it in its first QEMU session only.
pytestmark = [pytest.mark.skipif(not can_make_netns(), reason="network namespaces need root and iproute2"),
              pytest.mark.host_side]

# In the argv of this module's QEMUs only (a fw_cfg entry the guest ignores): other tests on this
# machine run remote QEMUs from the same folders.
MARK = f"aero-fleet-{uuid.uuid4().hex[:12]}"


def fleet_argv(world: SSHWorld, *args: str, artifacts: Path) -> List[str]:
    return [sys.executable, "-m", "harness", "remote-selftest", "--ssh-config", str(world.ssh_config),
            "--qemu-system", QEMU, "--disk", str(TEST_GUEST), "--accel", "tcg", "--smp", "1",
            "--artifacts", str(artifacts), "--qemu-arg=-fw_cfg", f"--qemu-arg=name=opt/aero/mark,string={MARK}",
            *args]


@pytest.fixture
def two_hosts(tmp_path, guest_image) -> Iterator[SSHWorld]:
    """kvm-a and kvm-b: an sshd each, in a network namespace each."""
    world = SSHWorld(tmp_path / "ssh")
    with ssh_hosts_in_namespaces(world, tmp_path, "aero-f", 71):
        yield world


def summary(artifacts: Path) -> dict:
    return json.loads((artifacts / "summary.json").read_text())


def test_two_hosts_with_slots_share_a_repeat(two_hosts, tmp_path):
    artifacts = tmp_path / "a"
    proc = subprocess.run(fleet_argv(two_hosts, "--host", "kvm-a:2", "--host", "kvm-b:2", "--repeat", "4",
                                     *scenario("flaky"), artifacts=artifacts),
                          cwd=ROOT, capture_output=True, text=True, timeout=400, stdin=subprocess.DEVNULL)
    assert qemu_pids(MARK) == []
    # The flaky guest fails its third run, wherever it ran: the run's number reached the remote guest.
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("FAIL: 3/4 runs passed (pass rate 75.0%, ")
    got = summary(artifacts)
    runs = {r["run"]: r for r in got["runs"]}
    assert {i: r["token"] for i, r in runs.items()} == {1: "PASS", 2: "PASS", 3: "VIRTIO_BLK_FAILED", 4: "PASS"}
    assert {r["host"] for r in runs.values()} == {"kvm-a", "kvm-b"}
    for index, r in runs.items():
        folder = artifacts / r["host"] / f"run-{index:03d}"
        assert json.loads((folder / "result.json").read_text())["token"] == r["token"]
        assert (folder / "serial.log").exists() and (folder / "harness.log").exists()
    hosts = {h["host"]: h for h in got["hosts"]}
    assert {h["slots_used"] for h in hosts.values()} == {2} and not any(h["failed"] for h in hosts.values())
    assert all(h["isolation"].startswith("each run in a user+network namespace") for h in hosts.values())
    # The disk went to each host once (or was there already), not once per run.
    for name in ("kvm-a", "kvm-b"):
        told = [line for line in proc.stderr.splitlines()
                if line.startswith(f"[{name}] ") and ("already on the host" in line or "uploading" in line)]
        assert len({line.split(":")[1] for line in told}) <= 1, told
    table = proc.stderr[proc.stderr.index("run      host"):]
    assert "kvm-a" in table and "kvm-b" in table
    root = ET.parse(artifacts / "junit.xml").getroot()
    assert len(root.findall("testsuite")) == 4
    assert {s.get("name").split(".")[1].split("/")[0] for s in root.findall("testsuite")} == {"kvm-a", "kvm-b"}


def netns_pids(name: str) -> List[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_host_that_becomes_unreachable_gives_its_runs_to_the_others(two_hosts, tmp_path):
    artifacts = tmp_path / "a"
    proc = subprocess.Popen(fleet_argv(two_hosts, "--host", "kvm-a:2", "--host", "kvm-b:1", "--repeat", "3",
                                       artifacts=artifacts),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list((artifacts / "kvm-b").glob("run-*")):
            time.sleep(0.2)
        assert list((artifacts / "kvm-b").glob("run-*")), "kvm-b never took a run"
        time.sleep(3)  # its run is under way
        for pid in netns_pids("aero-fb"):  # kvm-b's sshd and its sessions: the host is gone
            os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    deadline = time.monotonic() + 30
    while qemu_pids(MARK) and time.monotonic() < deadline:  # kvm-b's run stops itself: its stdin closed
        time.sleep(0.2)
    assert qemu_pids(MARK) == []
    assert proc.returncode == 10, out + err
    got = summary(artifacts)
    assert [(r["run"], r["host"], r["token"]) for r in got["runs"]] == [(i, "kvm-a", "PASS") for i in (1, 2, 3)]
    hosts = {h["host"]: h for h in got["hosts"]}
    assert hosts["kvm-b"]["failed"] and hosts["kvm-b"]["token"] == "SSH_UNREACHABLE"
    assert "broke off" in hosts["kvm-b"]["message"] and "it goes to the other hosts" in hosts["kvm-b"]["message"]
    assert "kvm-b: FAILED (SSH_UNREACHABLE) after 0 runs" in err
    assert out.strip().splitlines()[-1] == (
        out.strip().splitlines()[-1].split(";")[0] + "; worst exit code 10 (SSH_UNREACHABLE)")
    assert out.strip().splitlines()[-1].startswith("FAIL: 3/3 runs passed")


def test_ctrl_c_stops_the_runs_on_every_host_and_their_artifacts_come_home(two_hosts, tmp_path):
    artifacts = tmp_path / "a"
    proc = subprocess.Popen(fleet_argv(two_hosts, "--host", "kvm-a:2", "--host", "kvm-b", "--repeat", "5",
                                       "--timeout", "120", *scenario("hang"), artifacts=artifacts),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(qemu_pids(MARK)) < 3:
            time.sleep(0.2)
        assert len(qemu_pids(MARK)) == 3, "the three slots' QEMUs never ran"
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert qemu_pids(MARK) == []
    assert proc.returncode == 130, out + err
    assert "no new run; stopping the 3 remote runs under way" in err
    got = summary(artifacts)
    assert sorted(r["run"] for r in got["runs"]) == [1, 2, 3] and got["not_run"] == [4, 5]
    for r in got["runs"]:
        assert r["token"] == "INTERRUPTED"
        assert json.loads((Path(r["artifacts"]) / "result.json").read_text())["token"] == "INTERRUPTED"
