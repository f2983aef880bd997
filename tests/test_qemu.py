"""QemuProcess against the fake QEMU (a real process speaking QMP): starting and stopping, each step bounded."""

from __future__ import annotations

import time

import pytest

from harness.errors import QemuLaunchError
from harness.qemu import QemuProcess
from tests.fakeqemu import FAKE_QEMU, script_env

pytestmark = pytest.mark.fake


def test_a_qemu_that_never_answers_qmp_is_stopped_without_waiting_for_a_quit(tmp_path, monkeypatch):
    """No quit reached it, so none is waited for: SIGTERM at once (it used to wait 5 s for nothing)."""
    for name, value in script_env(tmp_path, qmp="silent").items():
        monkeypatch.setenv(name, value)
    sock = tmp_path / "qmp.sock"
    vm = QemuProcess([str(FAKE_QEMU), "-S", "-display", "none", "-chardev",
                      f"socket,id=qmp,path={sock},server=on,wait=off", "-mon", "chardev=qmp,mode=control"],
                     tmp_path / "qemu.log", sock)
    with pytest.raises(QemuLaunchError, match="did not answer"):
        vm.start(connect_timeout=1.0)
    assert vm.alive()
    started = time.monotonic()
    vm.stop()
    assert not vm.alive() and vm.returncode is not None
    assert time.monotonic() - started < 3.0
