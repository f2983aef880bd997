"""A small synchronous QMP client on top of qemu.qmp, with every wait bounded.

qemu.qmp's own synchronous shim connects without a timeout, so a QEMU that
opens its socket but never greets would hang the caller for ever. Here each
call runs the library's coroutine on a private event loop under a deadline.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, Optional

from qemu.qmp import ExecuteError, QMPClient

log = logging.getLogger(__name__)


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
        self.socket_path = socket_path
        self._loop = asyncio.new_event_loop()
        self._client = QMPClient("aero")
        self._connected = False

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
        self._client = QMPClient("aero")

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
