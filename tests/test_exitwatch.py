"""ExitWatch: a file descriptor that is readable once a child has exited, with and without a pidfd."""

import os
import subprocess
import sys
import time

import pytest

from harness.exitwatch import ExitWatch
from harness.interrupt import readable


@pytest.fixture(params=["pidfd", "thread"])
def kind(request, monkeypatch):
    if request.param == "thread":
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    elif not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfd here")
    return request.param


def child(seconds: float) -> "subprocess.Popen[bytes]":
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])


def test_readable_once_the_child_exits(kind):
    proc = child(0.3)
    watch = ExitWatch(proc)
    assert readable([watch.fileno()], 0) == set() and not watch.exited()
    started = time.monotonic()
    assert watch.wait(10)
    assert time.monotonic() - started < 5
    assert proc.returncode == 0  # reaped
    watch.close()


def test_wait_gives_up_at_its_timeout(kind):
    proc = child(30)
    watch = ExitWatch(proc)
    try:
        assert not watch.wait(0.05)
    finally:
        proc.kill()
        assert watch.wait(10) and proc.returncode == -9
        watch.close()
