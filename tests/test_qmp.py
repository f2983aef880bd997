"""The bounded QMP client against real sockets."""

import json
import os
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


@pytest.fixture
def qmp(tmp_path):
    """A client connected to a QMP server that greets, accepts the capabilities and then listens."""
    path = tmp_path / "qmp.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.sendall(json.dumps({"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""},
                                             "capabilities": []}}).encode() + b"\r\n")
            conn.recv(4096)  # qmp_capabilities (the client ends a command with no newline)
            conn.sendall(b'{"return": {}}\r\n')
            while conn.recv(4096):  # until the client hangs up
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = Qmp(str(path))
    client.connect(5.0)
    yield client
    client.close()
    server.close()
    thread.join(5)


def test_a_refused_descriptor_leaves_none_of_the_others_registered(qmp):
    r, w = os.pipe()
    try:
        os.write(w, b"x")  # readable: a reader left behind would fire on every turn of the loop
        bad = w + 1
        while _is_open(bad):
            bad += 1
        with pytest.raises(QmpError):
            qmp.wait([r, bad], 0.1)
        assert qmp._loop.remove_reader(r) is False
        assert qmp.wait([r], 1.0) == ([], {r})
    finally:
        os.close(r)
        os.close(w)


def _is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
