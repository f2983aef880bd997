"""Follow the serial log as QEMU writes it and hand out whole lines.

Reads only what is new since the last read, in bounded chunks, so memory
stays flat for any log size; the bytes stay on disk as the run's artifact.
``fileno()`` becomes readable when the log is written to (inotify), so the
follow loop sleeps until the guest says something; where inotify is missing
it is None and the loop reads the log every ``follow.POLL`` seconds.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Deque, Iterator, List, Optional

from harness import inotify
from harness.lines import Line, LineSplitter
from harness.markers import Marker, parse

# One read per call: even a chunk of nothing but line ends stays a few MiB of objects.
CHUNK = 64 * 1024


class SerialWatcher:
    def __init__(self, path: Path, tail_lines: int = 40) -> None:
        self.path = path
        self.splitter = LineSplitter()
        self.tail: Deque[str] = collections.deque(maxlen=tail_lines)
        self.bytes_read = 0
        self.more = False  # the last read filled its chunk: more is waiting
        self._fd: Optional[int] = None
        self._watch: Optional[inotify.Watch] = None

    def _open(self) -> bool:
        if self._fd is None:
            # Watched before the first read: a write between the two still wakes the loop.
            watch = inotify.watch(self.path)
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                if watch is not None:
                    watch.close()
                return False
            self._watch = watch
        return True

    def fileno(self) -> Optional[int]:
        """A file descriptor that becomes readable when the log grows; None: none (poll ``read_lines``)."""
        return self._watch.fileno() if self._watch is not None else None

    def read_lines(self) -> List[Line]:
        """Non-blank lines completed by the next chunk of the log (``more`` says if one is waiting)."""
        self.more = False
        if not self._open():
            return []
        assert self._fd is not None
        if self._watch is not None:
            self._watch.drain()  # before the read: what is written after it wakes the loop again
        data = os.read(self._fd, CHUNK)
        self.more = len(data) == CHUNK
        self.bytes_read += len(data)
        lines = [line for line in self.splitter.feed(data) if line.text.strip()]
        for line in lines:
            self.tail.append(line.text)
        return lines

    def markers(self) -> Iterator[Marker]:
        """Markers from everything written so far."""
        while True:
            for line in self.read_lines():
                marker = parse(line.text)
                if marker is not None:
                    yield marker
            if not self.more:
                return

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None
