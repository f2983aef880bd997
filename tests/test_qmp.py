"""The bounded QMP client against real sockets."""

import socket
import threading
import time

import pytest

from harness.qmp import Qmp, QmpError, QmpRefusedError


def test_a_socket_bound_but_not_listening_is_refused_not_an_error(tmp_path):
    path = tmp_path / "qmp.sock"
    with socket.socket(socket.AF_UNIX) as bound:
        bound.bind(str(path))  # QEMU binds first and listens a moment later
        with pytest.raises(QmpRefusedError):
            Qmp(str(path)).connect(2.0)


def test_a_socket_that_never_greets_times_out(tmp_path):
    path = tmp_path / "qmp.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        accepted = []
        threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
        started = time.monotonic()
        qmp = Qmp(str(path))
        with pytest.raises(QmpError, match="did not greet within 0.5 s"):
            qmp.connect(0.5)
        qmp.close()
        assert time.monotonic() - started < 2
