"""Follow the serial log as QEMU writes it and hand out whole lines.

Reads only what is new since the last poll, in bounded chunks, so memory
stays flat for any log size; the bytes stay on disk as the run's artifact.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Deque, Iterator, List, Optional

from harness.lines import Line, LineSplitter
from harness.markers import Marker, parse

CHUNK = 256 * 1024


class SerialWatcher:
    def __init__(self, path: Path, tail_lines: int = 40) -> None:
        self.path = path
        self.splitter = LineSplitter()
        self.tail: Deque[str] = collections.deque(maxlen=tail_lines)
        self.bytes_read = 0
        self._fd: Optional[int] = None

    def _open(self) -> bool:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return False
        return True

    def read_lines(self, budget: int = 64 * CHUNK) -> List[Line]:
        """Lines completed since the last call (at most ``budget`` bytes read per call)."""
        if not self._open():
            return []
        assert self._fd is not None
        lines: List[Line] = []
        read = 0
        while read < budget:
            data = os.read(self._fd, CHUNK)
            if not data:
                break
            read += len(data)
            self.bytes_read += len(data)
            lines.extend(self.splitter.feed(data))
        for line in lines:
            if line.text.strip():
                self.tail.append(line.text)
        return lines

    def markers(self) -> Iterator[Marker]:
        for line in self.read_lines():
            marker = parse(line.text)
            if marker is not None:
                yield marker

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
