"""Isolation of runs: choosing a namespace, bringing lo up in one, and the port lock where there is none."""

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import netns
from harness.errors import HostError

ROOT = Path(__file__).resolve().parents[1]


def test_the_first_method_that_runs_is_chosen():
    tried = []

    def problem(argv):
        tried.append(argv)
        return "Operation not permitted" if "--user" in argv else None

    method, why = netns.choose(problem)
    assert method is netns.NET and why == ""
    assert tried[0] == ["unshare", "--user", "--map-root-user", "--net", "--", "true"]


def test_no_method_says_why_for_each():
    method, why = netns.choose(lambda argv: "nope")
    assert method is None
    assert why == "unshare --user --map-root-user --net: nope; unshare --net: nope"


def test_wrap_puts_the_command_after_the_prefix():
    assert netns.USER_NET.wrap(["python3", "-m", "harness"]) == [
        "unshare", "--user", "--map-root-user", "--net", "--", "python3", "-m", "harness"]


def test_lock_paths_are_per_namespace_and_in_one_order(tmp_path):
    paths = netns.lock_paths([("udp", 18081), ("tcp", 18080), ("tcp", 18080)], tmp_path)
    ns = netns.namespace_id()
    assert [p.name for p in paths] == [f"aero-virtio-harness-{ns}-tcp-18080.lock",
                                      f"aero-virtio-harness-{ns}-udp-18081.lock"]


def test_a_held_port_makes_the_run_wait_and_say_so_then_give_up(tmp_path):
    said = []
    path = netns.lock_paths([("tcp", 27990)], tmp_path)[0]
    assert netns.held_by([("tcp", 27990)], tmp_path) is None  # no lock file yet
    with netns.port_lock([("tcp", 27990)], said.append, folder=tmp_path):
        assert path.read_text().strip() == str(os.getpid())
        assert netns.held_by([("udp", 1), ("tcp", 27990)], tmp_path) == f"another selftest run (pid {os.getpid()})"
        assert os.stat(path).st_mode & 0o777 == 0o666
        with pytest.raises(HostError, match=r"another selftest run held TCP 27990 on 127.0.0.1 for 0.3 s"):
            with netns.port_lock([("tcp", 27990)], said.append, wait=0.3, folder=tmp_path):
                pass
    assert len(said) == 1
    assert said[0].startswith(f"waiting for another selftest run (pid {os.getpid()}) to end: runs on this host share "
                              "127.0.0.1 (TCP 27990) and take turns")
    assert netns.held_by([("tcp", 27990)], tmp_path) is None  # released
    # Released: the next run takes it at once, without a word.
    with netns.port_lock([("tcp", 27990)], said.append, wait=0.3, folder=tmp_path):
        pass
    assert len(said) == 1


def test_a_lock_file_of_another_user_is_used_read_only(tmp_path):
    path = netns.lock_paths([("udp", 27991)], tmp_path)[0]
    path.write_text("4242\n")
    path.chmod(0o444)
    if os.access(path, os.W_OK):  # root may write anything: what this test checks cannot happen
        pytest.skip("root can write a read-only file")
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    said = []
    try:
        with pytest.raises(HostError):
            with netns.port_lock([("udp", 27991)], said.append, wait=0.2, folder=tmp_path):
                pass
    finally:
        os.close(fd)
    assert "(pid 4242)" in said[0]


LOOPBACK_CHILD = """
import socket
from harness.netns import loopback_up
loopback_up()
with socket.socket() as s:
    s.bind(("127.0.0.1", 18080))
    s.listen()
    with socket.create_connection(("127.0.0.1", 18080), timeout=5):
        print("served 18080")
"""


@pytest.mark.skipif(netns.probe_local()[0] is None, reason="no network namespaces on this machine")
def test_in_a_namespace_of_its_own_a_run_brings_lo_up_and_has_18080_to_itself():
    method = netns.probe_local()[0]
    assert method is not None
    argvs = [method.wrap([sys.executable, "-c", LOOPBACK_CHILD]) for _ in range(2)]
    procs = [subprocess.Popen(a, cwd=ROOT, stdout=subprocess.PIPE, text=True) for a in argvs]
    assert [p.communicate(timeout=30)[0].strip() for p in procs] == ["served 18080", "served 18080"]


def test_loopback_up_where_lo_is_up_already_does_nothing():
    netns.loopback_up()
