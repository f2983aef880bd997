"""``remote-selftest`` against real OpenSSH servers with throw-away keys.

The "remote hosts" are this machine reached over SSH: one sshd on 127.0.0.1,
and for the parallel run two test hosts in network namespaces (each with its
own loopback, so each remote harness serves 18080 to its own guest).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import QEMU, ROOT, TEST_GUEST, qemu_pids, scenario, sha256
from tests.e2e.sshd import SSHServer, SSHWorld, can_make_netns, free_port, keygen, ssh_hosts_in_namespaces

# Host-side plumbing, the same on every QEMU: the nox matrix runs it in its first QEMU session only.
pytestmark = pytest.mark.host_side

TCG = ["--accel", "tcg"]
PORTS = ["--http-port", "27280", "--udp-port", "27281"]  # not the defaults, which other test runs here may hold


def remote(world: SSHWorld, *args: str, artifacts: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    if "--disk" not in args and "--remote-disk" not in args:
        args = ("--disk", str(TEST_GUEST), *args)  # python -m harness has no default disk; invoke's front does
    argv = [sys.executable, "-m", "harness", "remote-selftest", "--ssh-config", str(world.ssh_config),
            "--qemu-system", QEMU, "--artifacts", str(artifacts), *args]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return SSHWorld(tmp_path_factory.mktemp("ssh"))


@pytest.fixture(scope="module")
def server(world, tmp_path_factory):
    srv = SSHServer(tmp_path_factory.mktemp("sshd"), world.user_key.with_suffix(".pub")).start()
    world.alias("kvm01", srv)
    yield srv
    srv.stop()


def remote_runs() -> set:
    runs = Path.home() / ".cache/aero-virtio-harness/runs"
    return set(runs.iterdir()) if runs.exists() else set()


def test_remote_pass_brings_artifacts_home(world, server, guest_image, tmp_path):
    before = sha256(guest_image)
    runs_before = remote_runs()
    proc = remote(world, "--host", "kvm01", *TCG, artifacts=tmp_path / "a")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS: AERO_VIRTIO_SELFTEST|RESULT|PASS" in proc.stdout
    host_dir = tmp_path / "a" / "kvm01"
    for name in ("serial.log", "qemu.log", "result.json", "junit.xml"):
        assert (host_dir / name).exists(), name
    assert json.loads((host_dir / "result.json").read_text())["verdict"] == "PASS"
    assert sha256(guest_image) == before
    # The remote scratch is gone; the uploaded disk stays, named by its hash.
    assert remote_runs() <= runs_before
    disks = list((Path.home() / ".cache/aero-virtio-harness/disks").iterdir())
    assert any(d.name.startswith(sha256(guest_image)) for d in disks)


def test_second_run_skips_the_upload_and_fail_comes_back(world, server, tmp_path):
    proc = remote(world, "--host", "kvm01", *TCG, *scenario("fail"), artifacts=tmp_path / "a")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL: VIRTIO_NET_FAILED: " in proc.stdout
    assert "already on the host" in proc.stderr
    assert json.loads((tmp_path / "a/kvm01/result.json").read_text())["token"] == "VIRTIO_NET_FAILED"


def test_remote_disk_already_on_the_host(world, server, guest_image, tmp_path):
    proc = remote(world, "--host", "kvm01", *TCG, "--remote-disk", str(guest_image), artifacts=tmp_path / "a")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "uploading" not in proc.stderr


def test_a_host_without_sftp_gets_the_harness_the_disk_and_gives_the_artifacts(world, tmp_path):
    """sshd's compiled-in default has no sftp subsystem: every transfer goes over plain exec channels."""
    home = tmp_path / "home"  # a host that has nothing yet: the harness and the disk are both sent
    home.mkdir()
    srv = SSHServer(tmp_path / "sshd", world.user_key.with_suffix(".pub"), sftp=False,
                    env={"HOME": str(home)}).start()
    try:
        world.alias("nosftp", srv)
        sftp = subprocess.run(["sftp", "-F", str(world.ssh_config), "-b", "-", "nosftp"], input="pwd\n",
                              capture_output=True, text=True, timeout=60)
        assert sftp.returncode != 0, "this host was meant to have no sftp subsystem"
        proc = remote(world, "--host", "nosftp", *TCG, *PORTS, artifacts=tmp_path / "a")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "PASS: AERO_VIRTIO_SELFTEST|RESULT|PASS" in proc.stdout
        assert f"uploading {TEST_GUEST.name}" in proc.stderr
        host_dir = tmp_path / "a" / "nosftp"
        for name in ("serial.log", "qemu.log", "result.json", "junit.xml", "firmware.log"):
            assert (host_dir / name).exists(), name
        assert json.loads((host_dir / "result.json").read_text())["verdict"] == "PASS"
        assert b"AERO_VIRTIO_SELFTEST|RESULT|PASS" in (host_dir / "serial.log").read_bytes()
        cache = home / ".cache/aero-virtio-harness"
        assert [d.name for d in (cache / "disks").iterdir()] == [f"{sha256(TEST_GUEST)}.qcow2"]
        assert sha256(cache / "disks" / f"{sha256(TEST_GUEST)}.qcow2") == sha256(TEST_GUEST)
        assert list(cache.glob("harness-*/.complete")) and list(cache.glob("harness-*/harness/cli.py"))
        assert list((cache / "runs").iterdir()) == []
        # The second run finds the disk by its hash and sends nothing.
        proc = remote(world, "--host", "nosftp", *TCG, *PORTS, *scenario("fail"), artifacts=tmp_path / "b")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "already on the host" in proc.stderr and f"uploading {TEST_GUEST.name}" not in proc.stderr
        assert json.loads((tmp_path / "b/nosftp/result.json").read_text())["token"] == "VIRTIO_NET_FAILED"
    finally:
        srv.stop()


@pytest.mark.parametrize("tool, says, failed", [
    ("cat", "cat: write error: No space left on device", "cannot upload aero_virtio_harness-"),
    ("tar", "tar: .: Cannot open: Permission denied", "cannot fetch the artifacts from "),
])
def test_a_transfer_that_fails_on_the_host_is_a_remote_error(world, tmp_path, tool, says, failed):
    """The host's own cat (uploads) or tar (artifacts) fails: exit 15 with the host's words, no traceback."""
    home, fakebin = tmp_path / "home", tmp_path / "bin"
    home.mkdir()
    fakebin.mkdir()
    (fakebin / tool).write_text(f"#!/bin/sh\nhead -c 100 >/dev/null\necho '{says}' >&2\nexit 2\n")
    (fakebin / tool).chmod(0o755)
    path = f"{fakebin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    srv = SSHServer(tmp_path / "sshd", world.user_key.with_suffix(".pub"), sftp=False,
                    env={"HOME": str(home), "PATH": path}).start()
    try:
        world.alias(f"broken-{tool}", srv)
        proc = remote(world, "--host", f"broken-{tool}", *TCG, *PORTS, artifacts=tmp_path / "a")
    finally:
        srv.stop()
    assert proc.returncode == 15, proc.stdout + proc.stderr
    verdict = proc.stdout.strip().splitlines()[-1]
    assert verdict.startswith(f"FAIL: REMOTE_ERROR: broken-{tool}: {failed}") and verdict.endswith(says), verdict
    assert "Traceback" not in proc.stderr
    runs = home / ".cache/aero-virtio-harness/runs"
    assert not runs.exists() or list(runs.iterdir()) == []  # the run's scratch is removed all the same
    assert qemu_pids(str(home)) == []


def test_unknown_host_key_is_refused_then_accepted_on_request(world, tmp_path):
    srv = SSHServer(tmp_path / "sshd", world.user_key.with_suffix(".pub")).start()
    try:
        world.alias("newhost", srv, known=False)
        proc = remote(world, "--host", "newhost", *TCG, artifacts=tmp_path / "a")
        assert proc.returncode == 12, proc.stdout + proc.stderr
        assert "is not in" in proc.stdout and "--accept-new-host-key" in proc.stderr
        assert f"[127.0.0.1]:{srv.port}" not in world.known_hosts.read_text()
        proc = remote(world, "--host", "newhost", "--accept-new-host-key", "--dry-run", artifacts=tmp_path / "b")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"[127.0.0.1]:{srv.port}" in world.known_hosts.read_text()
    finally:
        srv.stop()


def test_changed_host_key_is_refused(world, tmp_path):
    srv = SSHServer(tmp_path / "sshd", world.user_key.with_suffix(".pub")).start()
    try:
        world.alias("changed", srv, known=False)
        other = tmp_path / "other_key"
        keygen(other)
        kind, b64 = other.with_suffix(".pub").read_text().split()[:2]
        with open(world.known_hosts, "a") as f:
            f.write(f"[127.0.0.1]:{srv.port} {kind} {b64}\n")
        proc = remote(world, "--host", "changed", "--accept-new-host-key", artifacts=tmp_path / "a")
        assert proc.returncode == 12 and "CHANGED" in proc.stdout
    finally:
        srv.stop()


def test_wrong_user_key_is_a_clear_auth_error(world, server, tmp_path):
    wrong = tmp_path / "wrong_key"
    keygen(wrong)
    world.alias("wrongkey", server, key=wrong, known=False)
    proc = remote(world, "--host", "wrongkey", artifacts=tmp_path / "a")
    assert proc.returncode == 11, proc.stdout + proc.stderr
    assert "refused our keys" in proc.stdout and "Traceback" not in proc.stderr


def test_closed_port_is_a_clear_connection_error(world, tmp_path):
    with open(world.ssh_config, "a") as f:
        f.write(f"Host closed\n  HostName 127.0.0.1\n  Port {free_port()}\n  IdentityFile {world.user_key}\n")
    proc = remote(world, "--host", "closed", artifacts=tmp_path / "a")
    assert proc.returncode == 10, proc.stdout + proc.stderr
    assert "cannot connect to" in proc.stdout and "Traceback" not in proc.stderr


def test_missing_qemu_on_the_host(world, server, tmp_path):
    argv = [sys.executable, "-m", "harness", "remote-selftest", "--ssh-config", str(world.ssh_config),
            "--host", "kvm01", "--qemu-system", "qemu-system-nonexistent", "--artifacts", str(tmp_path / "a"),
            "--disk", str(TEST_GUEST)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 14 and "FAIL: REMOTE_NO_QEMU: " in proc.stdout
    assert "is not installed on the host" in proc.stdout


def test_missing_python_on_the_host(world, server, tmp_path):
    proc = remote(world, "--host", "kvm01", "--remote-python", "python3.0-nonexistent", artifacts=tmp_path / "a")
    assert proc.returncode == 13 and "FAIL: REMOTE_NO_PYTHON: " in proc.stdout
    assert "no Python 3.9 or newer" in proc.stdout


REMOTE_RUNS = ".cache/aero-virtio-harness/runs"


def start_hanging_remote(world: SSHWorld, artifacts: Path) -> subprocess.Popen:
    """remote-selftest on a guest that never says RESULT, returned once the remote QEMU runs."""
    argv = [sys.executable, "-m", "harness", "remote-selftest", "--ssh-config", str(world.ssh_config),
            "--host", "kvm01", "--qemu-system", QEMU, "--artifacts", str(artifacts), "--disk", str(TEST_GUEST), *TCG,
            *scenario("hang")]
    # A QEMU of an earlier test may still be on its way out: only one started after this run counts.
    earlier = set(qemu_pids(REMOTE_RUNS))
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not set(qemu_pids(REMOTE_RUNS)) - earlier:
        time.sleep(0.2)
    if not set(qemu_pids(REMOTE_RUNS)) - earlier:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"the remote QEMU never started: {proc.communicate()}")
    return proc


def assert_remote_qemu_gone(within: float = 30) -> None:
    deadline = time.monotonic() + within
    while qemu_pids(REMOTE_RUNS) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert qemu_pids(REMOTE_RUNS) == []


def test_interrupt_leaves_no_qemu_on_the_host(world, server, tmp_path):
    proc = start_hanging_remote(world, tmp_path / "a")
    try:
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert_remote_qemu_gone()
    assert proc.returncode == 130, out + err
    # The remote run stopped itself cleanly, so its artifacts still came home.
    assert json.loads((tmp_path / "a/kvm01/result.json").read_text())["token"] == "INTERRUPTED"


def test_dropped_connection_leaves_no_qemu_on_the_host(world, server, tmp_path):
    proc = start_hanging_remote(world, tmp_path / "a")
    os.killpg(proc.pid, signal.SIGKILL)  # the connection drops without a word
    proc.communicate()
    assert_remote_qemu_gone()


@pytest.mark.skipif(not can_make_netns(), reason="network namespaces need root and iproute2")
def test_two_hosts_in_parallel_with_a_summary(world, tmp_path):
    with ssh_hosts_in_namespaces(world, tmp_path, "aero-t", 61):
        proc = remote(world, "--host", "kvm-a", "--host", "kvm-b", *TCG, artifacts=tmp_path / "a")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[kvm-a] PASS: AERO_VIRTIO_SELFTEST|RESULT|PASS" in proc.stdout
    assert "[kvm-b] PASS: AERO_VIRTIO_SELFTEST|RESULT|PASS" in proc.stdout
    table = proc.stderr[proc.stderr.index("host "):]
    assert "kvm-a" in table and "kvm-b" in table and "PASS" in table
    for name in ("kvm-a", "kvm-b"):
        assert (tmp_path / "a" / name / "result.json").exists()
