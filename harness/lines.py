"""Turn a byte stream (the serial log as it grows) into whole lines.

Pure: no I/O. A line ends at LF or at CR (firmware redraws progress with a lone
CR, so ``Booting...\rAERO_...|START`` carries a marker; ``\r\n``, ``\r\r\n`` and
``\n\r`` give no empty lines). Bytes are split first and
decoded afterwards, so a
multi-byte character or a marker cut across two reads is never mangled, and
memory stays bounded whatever the guest writes: a line longer than
``max_line`` keeps its first ``max_line`` bytes and is flagged as cut.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List

# Guests cut their own lines at 4096 bytes; anything longer is noise we keep a
# generous prefix of.
DEFAULT_MAX_LINE = 64 * 1024


@dataclass(frozen=True)
class Line:
    text: str
    cut: bool = False  # longer than the limit: only its start was kept
    ended: bool = True  # False for the unterminated rest of a stream that stopped


def clean(raw: bytes) -> str:
    """Decode one line: trailing CRs and NULs go, leading NULs (UART start-up noise) go."""
    raw = raw.rstrip(b"\r\x00").lstrip(b"\x00")
    return raw.decode("utf-8", errors="replace")


_EOL = re.compile(b"[\r\n]")


class LineSplitter:
    """Feed bytes in any chunking; get back the lines they complete."""

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._cut = False

    def feed(self, data: bytes) -> List[Line]:
        lines: List[Line] = []
        start = 0
        while True:
            match = _EOL.search(data, start)
            if match is None:
                self._keep(data[start:])
                return lines
            end = match.start()
            self._keep(data[start:end])
            text = clean(bytes(self._buf))
            if text or self._cut:
                lines.append(Line(text, self._cut))
            self._buf.clear()
            self._cut = False
            start = end + 1

    def _keep(self, piece: bytes) -> None:
        room = self.max_line - len(self._buf)
        if len(piece) > room:
            self._cut = True
            piece = piece[: max(room, 0)]
        self._buf += piece

    def flush(self) -> List[Line]:
        """The unterminated rest, when the stream has ended."""
        if not self._buf and not self._cut:
            return []
        line = Line(clean(bytes(self._buf)), self._cut, ended=False)
        self._buf.clear()
        self._cut = False
        return [line]

    @property
    def pending(self) -> bytes:
        return bytes(self._buf)
