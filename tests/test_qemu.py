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


def test_a_cont_that_fails_is_an_error_not_a_paused_vm(tmp_path, monkeypatch):
    """A VM left at -S would pass for a silent guest until the run's timeout."""
    for name, value in script_env(tmp_path, blocked_commands=["cont"]).items():
        monkeypatch.setenv(name, value)
    sock = tmp_path / "qmp.sock"
    with QemuProcess([str(FAKE_QEMU), "-S", "-display", "none", "-chardev",
                      f"socket,id=qmp,path={sock},server=on,wait=off", "-mon", "chardev=qmp,mode=control"],
                     tmp_path / "qemu.log", sock) as vm:
        with pytest.raises(QemuLaunchError, match="did not start the VM: QMP cont failed") as caught:
            vm.resume()
        assert "qemu.log" in (caught.value.hint or "")
        assert vm.status() == "prelaunch"
