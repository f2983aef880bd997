"""Know the moment a child process exits, without polling for it.

``ExitWatch(proc)`` has a file descriptor that becomes readable when the
process has exited: a pidfd on Linux 5.3 and later, else a pipe written by a
thread that waits for the process. ``wait(timeout)`` sleeps until then (never
longer), so stopping QEMU ends the moment QEMU is gone rather than at the
next tick of ``Popen.wait``'s back-off loop. Reaping stays with ``Popen``.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import threading
from typing import Any, Optional


class ExitWatch:
    def __init__(self, proc: subprocess.Popen[Any]) -> None:
        self._proc = proc
        self._write_end: Optional[int] = None
        try:
            # Opened while the child cannot have been reaped yet: the pid is still this child's.
            self._fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            self._fd, self._write_end = os.pipe()
            threading.Thread(target=self._wait_and_tell, name="aero-exit-watch", daemon=True).start()

    def _wait_and_tell(self) -> None:
        self._proc.wait()
        write_end, self._write_end = self._write_end, None
        if write_end is not None:
            os.close(write_end)  # end of file: the read end becomes readable

    def fileno(self) -> int:
        return self._fd

    def exited(self) -> bool:
        return self.wait(0)

    def wait(self, timeout: Optional[float]) -> bool:
        """Whether the process exited within ``timeout`` seconds (None: however long it takes); it is reaped."""
        if self._fd >= 0:
            with selectors.DefaultSelector() as selector:
                selector.register(self._fd, selectors.EVENT_READ)
                if not selector.select(timeout):
                    return False
            timeout = 1.0  # it has exited: waiting only reaps it
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
