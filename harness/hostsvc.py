"""The services the guest reaches as 10.0.2.2: an HTTP endpoint and a UDP echo.

Both bind 127.0.0.1 only (libslirp forwards the guest's 10.0.2.2 there) and
run on daemon threads; ``HostServices`` is the context manager that starts and
stops them together. Their loops sleep until a request comes or they are told
to stop: an idle server costs no CPU, and stopping takes no poll interval.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import selectors
import socketserver
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Any, List, Optional, Tuple, Type, Union

from harness.errors import HostError

log = logging.getLogger(__name__)

BIND_HOST = "127.0.0.1"
LARGE_SIZE = 1024 * 1024
LARGE_BODY = bytes(range(256)) * (LARGE_SIZE // 256)
LARGE_SHA256 = "fbbab289f7f94b25736c58be46a994c441fd02552cc6022352e3d86d2fab7c83"
# Bounds that keep a hostile or broken client from tying the server up.
MAX_UPLOAD = 4 * LARGE_SIZE
REQUEST_TIMEOUT = 30.0


# FNV-1a 64 of LARGE_BODY (tests/test_hostsvc.py computes it).
LARGE_ETAG = '"8505ae4435522325"'


@dataclass(frozen=True)
class Request:
    """One request the HTTP server answered, for the run's record."""

    method: str
    path: str
    status: int
    client: str
    request_line: str = ""
    bytes_sent: int = 0


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT
    server_version = "AeroVirtioHarness/1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s: " + format, self.client_address[0], *args)

    def _reply(self, status: int, body: bytes, headers: Tuple[Tuple[str, str], ...] = (), head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if len(body) < 64 else "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)
        self.server.record(Request(self.command, self.path, status, self.client_address[0], self.requestline,
                                   0 if head else len(body)))

    def _route(self) -> str:
        path = self.path.split("?", 1)[0]
        if path == self.server.path:
            return "small"
        if path == self.server.path + "-large":
            return "large"
        return "other"

    def _get(self, head: bool) -> None:
        route = self._route()
        if route == "small":
            self._reply(HTTPStatus.OK, b"OK\n", head=head)
        elif route == "large":
            headers = (("ETag", LARGE_ETAG), ("Cache-Control", "no-store"))
            self._reply(HTTPStatus.OK, LARGE_BODY, headers, head=head)
        else:
            self._reply(HTTPStatus.NOT_FOUND, b"NOT_FOUND\n", head=head)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
        self._get(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._get(head=True)

    def do_POST(self) -> None:  # noqa: N802
        length_text = self.headers.get("Content-Length")
        try:
            length = int(length_text) if length_text is not None else -1
        except ValueError:
            length = -1
        if length < 0 or length > MAX_UPLOAD:
            self.close_connection = True
            self._reply(HTTPStatus.BAD_REQUEST, b"BAD_LENGTH\n")
            return
        # handle_expect_100 (stdlib) has already sent "100 Continue" when asked.
        digest = hashlib.sha256()
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                self.close_connection = True
                return
            digest.update(chunk)
            remaining -= len(chunk)
        if self._route() != "large":
            self._reply(HTTPStatus.NOT_FOUND, b"NOT_FOUND\n")
        elif length == LARGE_SIZE and digest.hexdigest() == LARGE_SHA256:
            self._reply(HTTPStatus.OK, b"OK\n")
        else:
            self._reply(HTTPStatus.BAD_REQUEST, b"BAD_UPLOAD\n")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, port: int, path: str, log_file: Optional[IO[str]] = None) -> None:
        self.path = path
        self.requests: List[Request] = []
        self.log_file = log_file
        self._lock = threading.Lock()
        super().__init__((BIND_HOST, port), _Handler)

    def record(self, request: Request) -> None:
        with self._lock:
            if len(self.requests) < 1000:
                self.requests.append(request)
            if self.log_file is not None:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
                line = request.request_line.encode("ascii", "backslashreplace").decode()[:2000]
                self.log_file.write(f'{stamp} {request.client} "{line}" {request.status} {request.bytes_sent}\n')
                self.log_file.flush()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that resets its connection is the client's business, not a traceback on the terminal.
        log.debug("HTTP client %s: %s", client_address, sys.exc_info()[1])


class _UDPEchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(data, self.client_address)


class _UDPServer(socketserver.UDPServer):
    # Echoing is instant: answered in the server's own thread, in order, none dropped for lack of threads.
    max_packet_size = 65535

    def __init__(self, port: int) -> None:
        super().__init__((BIND_HOST, port), _UDPEchoHandler)


def _bind_error(kind: str, port: int, exc: OSError) -> HostError:
    if exc.errno == errno.EADDRINUSE:
        owner = port_owner("tcp" if kind == "HTTP" else "udp", port)
        who = f" by {owner}" if owner else ""
        if owner and "harness" in owner and "selftest" in owner:
            return HostError(
                f"{kind} port {port} on {BIND_HOST} is already in use{who}: another selftest run is going on",
                hint="wait for it to finish, or give this run other ports with --http-port/--udp-port (a Windows "
                "guest must then be provisioned with the same ports)",
            )
        return HostError(
            f"{kind} port {port} on {BIND_HOST} is already in use{who}",
            hint=f"stop what listens there (ss -ltnup | grep {port}) or pick another port with "
            f"--{kind.lower()}-port (the guest must be provisioned with the same port)",
        )
    return HostError(f"cannot listen on {BIND_HOST}:{port} ({kind}): {exc}")


def port_owner(proto: str, port: int) -> Optional[str]:
    """'pid 123 (python -m harness selftest ...)' for the local process bound to this port, if it can be seen."""
    inodes = set()
    for table in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    words = (proc / "cmdline").read_bytes().decode(errors="replace").replace("\0", " ").split()
                    cmdline = " ".join(words)
                    return f"pid {proc.name} ({cmdline[:160]})"
        except OSError:
            continue
    return None


class _ServerLoop:
    """One server on its own thread, sleeping until a request comes or ``stop`` is called.

    socketserver's own ``serve_forever`` wakes every poll interval to look for
    a shutdown request; this loop waits on a pipe for it instead.
    """

    def __init__(self, server: Union[socketserver.TCPServer, socketserver.UDPServer]) -> None:
        self.server = server
        server.timeout = 0  # handle_request() below never blocks: the loop's own select has seen the socket ready
        self._stop_r, self._stop_w = os.pipe()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"aero-{type(server).__name__}")
        self.thread.start()

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.server, selectors.EVENT_READ)
            selector.register(self._stop_r, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fd == self._stop_r:
                        return
                    self.server.handle_request()
                self.server.service_actions()

    def stop(self) -> None:
        """Tell the loop to end (it ends between two requests); ``join`` waits for it."""
        os.write(self._stop_w, b"x")

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        if not self.thread.is_alive():
            os.close(self._stop_r)
            os.close(self._stop_w)


class HostServices:
    """HTTP and UDP echo on 127.0.0.1, started on enter and stopped on exit."""

    def __init__(
        self, http_port: int, udp_port: int, http_path: str, udp: bool = True, http_log: Optional[Path] = None
    ) -> None:
        self.http_port = http_port
        self.udp_port = udp_port
        self.http_path = http_path
        self.udp = udp
        self.http_log = http_log
        self._log_file: Optional[IO[str]] = None
        self._http: Optional[_HTTPServer] = None
        self._udp: Optional[_UDPServer] = None
        self._loops: List[_ServerLoop] = []

    def __enter__(self) -> HostServices:
        try:
            if self.http_log is not None:
                try:
                    self.http_log.parent.mkdir(parents=True, exist_ok=True)
                    self._log_file = open(self.http_log, "w", encoding="utf-8")
                except OSError as exc:
                    raise HostError(f"cannot write --http-log {self.http_log}: {exc.strerror}") from exc
            try:
                self._http = _HTTPServer(self.http_port, self.http_path, self._log_file)
            except OSError as exc:
                raise _bind_error("HTTP", self.http_port, exc) from exc
            if self.udp:
                try:
                    self._udp = _UDPServer(self.udp_port)
                except OSError as exc:
                    raise _bind_error("UDP", self.udp_port, exc) from exc
            for server in [s for s in (self._http, self._udp) if s is not None]:
                self._loops.append(_ServerLoop(server))
        except BaseException:
            self.close()
            raise
        return self

    @property
    def requests(self) -> List[Request]:
        return list(self._http.requests) if self._http else []

    @property
    def http_address(self) -> Tuple[str, int]:
        assert self._http is not None
        return BIND_HOST, self._http.server_address[1]

    @property
    def udp_address(self) -> Tuple[str, int]:
        assert self._udp is not None
        return BIND_HOST, self._udp.server_address[1]

    def close(self) -> None:
        for loop in self._loops:  # both told first: they stop together
            loop.stop()
        for loop in self._loops:
            loop.join(timeout=5)
        for server in [s for s in (self._http, self._udp) if s is not None]:
            server.server_close()
        self._http = self._udp = None
        self._loops = []
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.close()
