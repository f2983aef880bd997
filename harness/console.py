"""What a run shows on the terminal: progress on stderr, the verdict on stdout."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Optional, TextIO


def printable(text: str) -> str:
    """A serial line made safe for a terminal: control characters become '?'."""
    return "".join(c if c.isprintable() or c == "\t" else "?" for c in text)


class Console:
    STATUS_EVERY = 0.25  # seconds between updates of the live status line

    def __init__(
        self, out: Optional[TextIO] = None, err: Optional[TextIO] = None, live: Optional[bool] = None, prefix: str = ""
    ) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.live = self.err.isatty() if live is None else live
        self.prefix = prefix
        self._status_shown = False
        self._last_status = 0.0

    def _clear(self) -> None:
        if self._status_shown:
            self.err.write("\r\x1b[K")
            self._status_shown = False

    def info(self, message: str) -> None:
        self._clear()
        self.err.write(f"{self.prefix}{message}\n")
        self.err.flush()

    def serial(self, text: str) -> None:
        self._clear()
        self.out.write(f"{self.prefix}| {printable(text)}\n")
        self.out.flush()

    def status(self, elapsed: float, timeout: float, last: str) -> None:
        """The live status line of a run."""
        self.live_line(f"[{elapsed:6.1f}s / {timeout:g}s] {printable(last)}")

    def live_line(self, line: str) -> None:
        """A line the next message replaces; only on a terminal, at most a few times a second."""
        if not self.live:
            return
        now = time.monotonic()
        if now - self._last_status < self.STATUS_EVERY:
            return
        self._last_status = now
        self.err.write("\r\x1b[K" + line[:120])
        self.err.flush()
        self._status_shown = True

    def next_status(self) -> Optional[float]:
        """When (``time.monotonic()``) the status line wants its next update; None: there is none."""
        return self._last_status + self.STATUS_EVERY if self.live else None

    def verdict(self, line: str) -> None:
        self._clear()
        self.out.write(f"{self.prefix}{line}\n")
        self.out.flush()

    def block(self, title: str, lines: Iterable[str]) -> None:
        self._clear()
        self.err.write(f"{self.prefix}{title}\n")
        for line in lines:
            self.err.write(f"{self.prefix}  {printable(line)[:300]}\n")
        self.err.flush()
