"""The HTTP and UDP services over real sockets on 127.0.0.1."""

import hashlib
import http.client
import os
import socket
import time

import pytest

from harness.errors import HostError
from harness.hostsvc import LARGE_BODY, LARGE_ETAG, LARGE_SHA256, HostServices

PATH = "/aero-virtio-selftest"


def fnv1a64(data: bytes) -> int:
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


@pytest.fixture
def services():
    with HostServices(0, 0, PATH) as svc:
        yield svc


def request(svc, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(*svc.http_address, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_large_body_constants_agree():
    assert hashlib.sha256(LARGE_BODY).hexdigest() == LARGE_SHA256
    assert f'"{fnv1a64(LARGE_BODY):016x}"' == LARGE_ETAG
    assert len(LARGE_BODY) == 1048576 and LARGE_BODY[:3] == b"\x00\x01\x02"


def test_get_and_head_small(services):
    assert request(services, "GET", PATH)[::2] == (200, b"OK\n")
    status, headers, body = request(services, "HEAD", PATH)
    assert status == 200 and body == b"" and headers["Content-Length"] == "3"


def test_get_large(services):
    status, headers, body = request(services, "GET", PATH + "-large")
    assert status == 200 and body == LARGE_BODY
    assert headers["ETag"] == LARGE_ETAG
    assert headers["Cache-Control"] == "no-store"
    assert headers["Content-Length"] == "1048576"


def test_post_large_checks_the_body(services):
    assert request(services, "POST", PATH + "-large", LARGE_BODY)[::2] == (200, b"OK\n")
    bad = bytearray(LARGE_BODY)
    bad[1000] ^= 1
    assert request(services, "POST", PATH + "-large", bytes(bad))[::2] == (400, b"BAD_UPLOAD\n")
    assert request(services, "POST", PATH + "-large", b"short")[::2] == (400, b"BAD_UPLOAD\n")


def test_post_with_expect_100_continue(services):
    """WinHTTP sends the headers, waits for 100 Continue, then the body."""
    sock = socket.create_connection(services.http_address, timeout=10)
    with sock:
        sock.sendall(
            f"POST {PATH}-large HTTP/1.1\r\nHost: x\r\nContent-Length: {len(LARGE_BODY)}\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100")
        sock.sendall(LARGE_BODY)
        reply = b""
        while b"OK\n" not in reply:
            chunk = sock.recv(4096)
            assert chunk
            reply += chunk
        assert b" 200 " in reply.split(b"\r\n")[0] or b"200 OK" in reply


def test_other_paths_are_404(services):
    for path in ("/", PATH + "x", "/../etc/passwd", PATH + "-large/.."):
        assert request(services, "GET", path)[0] == 404


def test_udp_echo(services):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        for size in (32, 1400):
            payload = bytes(range(256)) * 6
            sock.sendto(payload[:size], services.udp_address)
            data, _ = sock.recvfrom(4096)
            assert data == payload[:size]


def test_binds_loopback_only(services):
    assert services.http_address[0] == "127.0.0.1" and services.udp_address[0] == "127.0.0.1"


def test_busy_port_is_a_clear_host_error():
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(HostError, match=f"HTTP port {port} on 127.0.0.1 is already in use"):
            with HostServices(port, 0, PATH):
                pass


def test_busy_udp_port_closes_the_http_server():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        port = squatter.getsockname()[1]
        with pytest.raises(HostError, match="UDP port"):
            with HostServices(0, port, PATH):
                pass


def test_a_busy_port_names_who_holds_it():
    import socket

    from harness.errors import HostError
    from harness.hostsvc import HostServices

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        try:
            with HostServices(port, 0, "/x"):
                raise AssertionError("the port was free")
        except HostError as exc:
            assert f"HTTP port {port} on 127.0.0.1 is already in use by pid {os.getpid()} (" in exc.message


def test_services_stop_at_once():
    """The server loops sleep until a request or the stop: closing waits for no poll interval."""
    svc = HostServices(0, 0, PATH).__enter__()
    assert request(svc, "GET", PATH)[0] == 200
    started = time.monotonic()
    svc.close()
    assert time.monotonic() - started < 1.0  # ample under load; was one 50 ms poll per server
    assert svc.requests == []
