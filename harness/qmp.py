"""A small synchronous QMP client on top of qemu.qmp, with every wait bounded.

qemu.qmp's own synchronous shim connects without a timeout, so a QEMU that
opens its socket but never greets would hang the caller for ever. Here each
call runs the library's coroutine on a private event loop under a deadline.

QEMU's events (STOP, SHUTDOWN, GUEST_PANICKED, ...) are read by that loop
too, so the caller sleeps in ``wait``: it runs the loop until an event comes
or one of the caller's own file descriptors becomes readable.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Set, Tuple

if TYPE_CHECKING:
    import asyncio

    from qemu.qmp import ExecuteError, QMPClient

log = logging.getLogger(__name__)


def _load_library() -> None:
    """asyncio and qemu.qmp, imported when the first client is made: a run makes it once QEMU has been
    started, so the imports (about 20 ms) overlap QEMU's own start instead of coming before it."""
    global asyncio, ExecuteError, QMPClient
    import asyncio

    from qemu.qmp import ExecuteError, QMPClient


class QmpError(Exception):
    """QMP is unusable: not connected in time, the connection dropped, a reply did not come."""


class QmpRefusedError(QmpError):
    """Nothing listens on the socket (yet): QEMU binds its socket a moment before it listens."""


class QmpCommandError(QmpError):
    """QEMU answered a command with an error (``CommandNotFound``, ``GenericError``, ...)."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"{command}: {error_class}: {desc}")
        self.command = command
        self.error_class = error_class
        self.desc = desc


class Qmp:
    def __init__(self, socket_path: str) -> None:
        _load_library()
        self.socket_path = socket_path
        self._loop = asyncio.new_event_loop()
        # Made inside the loop: on Python 3.9 the client's event queue binds to the loop current at its creation.
        self._client: QMPClient = self._loop.run_until_complete(self._new_client())
        self._connected = False

    @staticmethod
    async def _new_client() -> QMPClient:
        return QMPClient("aero")

    def _run(self, coro: Any, timeout: float) -> Any:
        return self._loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def connect(self, timeout: float) -> None:
        """Connect and negotiate capabilities within ``timeout`` seconds."""
        try:
            self._run(self._client.connect(self.socket_path), timeout)
        except asyncio.TimeoutError as exc:
            raise QmpError(f"QEMU's QMP socket did not greet within {timeout:g} s") from exc
        except Exception as exc:  # ConnectError, OSError and the like
            refused = isinstance(exc, ConnectionRefusedError) or isinstance(exc.__cause__, ConnectionRefusedError) \
                or isinstance(getattr(exc, "exc", None), ConnectionRefusedError)
            self._reset()
            raise (QmpRefusedError if refused else QmpError)(f"cannot connect to QMP: {exc}") from exc
        self._connected = True

    def _reset(self) -> None:
        """A fresh client after a failed connect (the library's client is not reused after an error)."""
        try:
            self._run(self._client.disconnect(), 1.0)
        except (Exception, asyncio.CancelledError) as exc:
            log.debug("resetting the QMP client: %r", exc)
        self._client = self._loop.run_until_complete(self._new_client())

    def execute(self, command: str, arguments: Optional[Dict[str, Any]] = None, timeout: float = 10.0) -> Any:
        """Run one command; its return value. Raises QmpCommandError or QmpError."""
        if not self._connected:
            raise QmpError("QMP is not connected")
        try:
            return self._run(self._client.execute(command, arguments), timeout)
        except ExecuteError as exc:
            raise QmpCommandError(command, exc.error_class, str(exc)) from exc
        except asyncio.TimeoutError as exc:
            raise QmpError(f"{command}: no reply within {timeout:g} s") from exc
        except Exception as exc:  # a closed connection, a protocol error
            raise QmpError(f"{command}: {exc}") from exc

    def wait(self, fds: Sequence[int], timeout: Optional[float]) -> Tuple[List[str], Set[int]]:
        """Sleep until QEMU sends an event or one of ``fds`` is readable (None: no time limit).

        Returns the names of the events received since the last call, and which
        of ``fds`` are readable. Events that came while no call ran are kept by
        the library and returned at once.
        """
        if not self._connected:
            raise QmpError("QMP is not connected")
        try:
            first, ready = self._loop.run_until_complete(self._wait(fds, timeout))
        except Exception as exc:  # a closed connection, a protocol error
            raise QmpError(f"waiting for QMP events: {exc}") from exc
        return [str(event["event"]) for event in [*first, *self._client.events.clear()]], ready

    async def _wait(self, fds: Sequence[int], timeout: Optional[float]) -> Tuple[List[Any], Set[int]]:
        loop = asyncio.get_running_loop()
        ready: Set[int] = set()
        woken = loop.create_future()
        taken: List[Any] = []

        def on_readable(fd: int) -> None:
            ready.add(fd)
            if not woken.done():
                woken.set_result(None)

        added: List[int] = []  # if one fd is refused (closed), the ones before it must not stay registered
        event: Optional[asyncio.Future[Any]] = None
        try:
            for fd in fds:
                loop.add_reader(fd, on_readable, fd)
                added.append(fd)
            event = asyncio.ensure_future(self._client.events.get())
            await asyncio.wait([woken, event], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fd in added:
                loop.remove_reader(fd)
            if event is not None:
                if event.done() and not event.cancelled():
                    taken.append(event.result())
                else:
                    event.cancel()  # a queue's get() gives up without taking anything
        return taken, ready

    def close(self, timeout: float = 2.0) -> None:
        try:
            if self._connected:
                self._run(self._client.disconnect(), timeout)
        except (Exception, asyncio.CancelledError) as exc:  # a cleanup error never hides the first one
            log.debug("closing QMP: %r", exc)
        finally:
            self._connected = False
            try:
                self._loop.close()
            except RuntimeError as exc:
                log.debug("closing the QMP loop: %s", exc)
