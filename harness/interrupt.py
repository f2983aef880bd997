"""Ctrl-C and SIGTERM, taken where the harness can act on them.

A signal that Python turns into an exception at an arbitrary instant lands
wherever the main thread happens to be: inside qemu.qmp's event loop, between
``fork`` and the line that records QEMU's pid, in the middle of stopping QEMU,
or in a ``__del__`` that swallows it. Each of those loses the signal or leaves
a QEMU behind. So the handler only records the signal and wakes the main
thread (through a pipe that ``sleep``, ``wait_readable`` and the follow loop
wait on); a run raises ``Interrupted`` at its own checkpoints, where every
resource it holds is owned by a context manager, and again at every later
checkpoint until the code that ends the run ``consume``s it.

Commands that do not follow a run (remote-selftest, builds) keep Python's
usual behaviour: outside ``held()``, the handler raises at once.

Kept cheap to import (no typing at run time): ``python -m harness`` installs
it before anything else.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import FrameType
    from typing import Iterator, Optional, Sequence, Set

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The user (Ctrl-C) or a supervisor (SIGTERM) asked the harness to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class _State:
    pending: Optional[int] = None  # the first signal received
    consumed = False  # the code that ends the run has taken it: raise no more
    depth = 0  # nesting of held()
    wake_r = -1
    wake_w = -1


_state = _State()


def _handler(signum: int, frame: Optional[FrameType]) -> None:
    if _state.pending is None:
        _state.pending = signum
    if _state.depth == 0:
        checkpoint()


def install(early: Sequence[int] = ()) -> None:
    """Take SIGINT and SIGTERM (again is harmless); only the main thread can.

    ``early``: signals a stand-in handler recorded before this module was loaded.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if _state.wake_r < 0:
        _state.wake_r, _state.wake_w = os.pipe()
        os.set_blocking(_state.wake_r, False)
        os.set_blocking(_state.wake_w, False)
    # The C-level handler writes the signal number here before Python runs _handler,
    # so a select() on the read end returns even when the signal lands just before it.
    signal.set_wakeup_fd(_state.wake_w, warn_on_full_buffer=False)
    for signum in SIGNALS:
        signal.signal(signum, _handler)
    if early and _state.pending is None:
        _state.pending = early[0]


def reset() -> None:
    """Forget a recorded signal, so that the next one raises again."""
    _state.pending = None
    _state.consumed = False
    _drain()


def requested() -> Optional[int]:
    """The signal received so far, if any."""
    return _state.pending


def consume() -> Optional[int]:
    """The code that ends the run has answered the signal: later checkpoints let cleanup finish."""
    _state.consumed = True
    return _state.pending


def checkpoint() -> None:
    """Raise Interrupted if a signal has arrived and nobody has answered it yet."""
    if _state.pending is not None and not _state.consumed:
        raise Interrupted(_state.pending)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """A region where a signal is only recorded; it is raised at ``checkpoint``/``sleep``.

    Leaving the outermost region normally raises a signal still unanswered.
    """
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
    if _state.depth == 0:
        checkpoint()


def sleep(seconds: float) -> None:
    """Sleep, but wake at once for a signal (and raise it)."""
    wait_readable([], seconds)


def wait_readable(fds: Sequence[int], timeout: Optional[float]) -> Set[int]:
    """Sleep until one of ``fds`` is readable (those are returned) or ``timeout`` passes (None: no limit);
    wake at once for a signal, and raise it."""
    checkpoint()
    ready: Set[int] = set()
    if timeout is None or timeout > 0:
        ready = readable([*fds, _state.wake_r] if _state.wake_r >= 0 else fds, timeout)
        if _state.wake_r in ready:
            ready.discard(_state.wake_r)
            _drain()
    checkpoint()
    return ready


def readable(fds: Sequence[int], timeout: Optional[float]) -> Set[int]:
    """Which of ``fds`` are readable, waiting up to ``timeout`` seconds for one (None: no limit)."""
    if not fds:
        time.sleep(timeout if timeout is not None else threading.TIMEOUT_MAX)
        return set()
    poller = select.poll()  # any descriptor number (select.select stops at 1024)
    for fd in set(fds):
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(None if timeout is None else timeout * 1000)}


def wake_fd() -> int:
    """A file descriptor that becomes readable when a signal arrives (-1 before ``install``)."""
    return _state.wake_r


def woke() -> None:
    """After a wait that watched ``wake_fd()``: empty it, and raise a signal that arrived."""
    _drain()
    checkpoint()


def _drain() -> None:
    if _state.wake_r < 0:
        return
    try:
        while os.read(_state.wake_r, 512):
            pass
    except BlockingIOError:
        pass
