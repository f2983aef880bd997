"""Let the kernel say when a file changes: inotify on Linux, through ctypes.

``watch(path)`` gives a ``Watch`` whose file descriptor becomes readable when
the file is written to (or, for a folder, when an entry is created in it), so
a loop can sleep in ``select`` until then instead of looking every few
milliseconds. Where there is no inotify (not Linux, a libc without it, a path
that does not exist yet), ``watch`` returns None and the caller polls.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading
import time
from typing import Any, List, Optional, Union

IN_MODIFY = 0x00000002  # a file was written to
IN_CREATE = 0x00000100  # an entry was created in a watched folder
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = 0o2000000


@functools.cache
def _libc() -> Optional[Any]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the C library Python itself runs on
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        return None
    return libc


class Watch:
    """One inotify instance watching one path; readable while an event is waiting."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def drain(self) -> None:
        """Forget the events so far: call it before looking at the file, so no later write is missed."""
        try:
            while os.read(self._fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Stop watching. Closing an inotify descriptor waits for the kernel to let go of its watches
        (an RCU grace period: 8 to 16 ms here), so a thread closes it, off the caller's way."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            closer = threading.Thread(target=os.close, args=(fd,), name="aero-inotify-close", daemon=True)
            closer.start()
            with _closing_lock:
                _closing[:] = [t for t in _closing if t.is_alive()] + [closer]


_closing: List[threading.Thread] = []
_closing_lock = threading.Lock()


def settle(timeout: float = 1.0) -> None:
    """Wait (up to ``timeout`` seconds in all) for the closes started so far: a run leaves no thread behind.

    A run closes its watches while QEMU stops, so by the time it calls this they are usually done.
    """
    deadline = time.monotonic() + timeout
    with _closing_lock:
        pending, _closing[:] = list(_closing), []
    for closer in pending:
        closer.join(max(0.0, deadline - time.monotonic()))


def watch(path: Union[str, os.PathLike[str]], mask: int = IN_MODIFY) -> Optional[Watch]:
    """A watch on ``path`` for the events in ``mask``, or None where inotify cannot watch it."""
    libc = _libc()
    if libc is None:
        return None
    fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
    if fd < 0:
        return None
    if libc.inotify_add_watch(fd, os.fsencode(path), mask) < 0:
        os.close(fd)
        return None
    return Watch(fd)
