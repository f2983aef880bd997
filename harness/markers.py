"""Parse the selftest's marker lines (docs/guest-contract.md). Pure.

A marker is a whole line that starts with ``AERO_VIRTIO_SELFTEST|``; the same
text in the middle of a line is noise. Diagnostic lines such as
``virtio-blk-irq|INFO|...`` (or ``|WARN|``) are parsed as DIAG markers from their source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Tuple

PREFIX = "AERO_VIRTIO_SELFTEST|"
KINDS = ("START", "CONFIG", "TEST", "RESULT")
_DIAG = re.compile(r"^(virtio-[A-Za-z0-9_.-]+)\|(INFO|WARN)\|?(.*)$")


@dataclass(frozen=True)
class Marker:
    """One parsed line.

    ``kind`` is START, CONFIG, TEST, RESULT or DIAG. For TEST, ``name`` is the
    test and ``status`` its status; for RESULT, ``status`` is the verdict; for
    DIAG, ``name`` is the line's source (``virtio-blk-irq``) and ``status`` INFO.
    ``fields`` holds ``key=value`` fields in order, ``tokens`` the bare ones.
    """

    kind: str
    raw: str
    name: str = ""
    status: str = ""
    fields: Tuple[Tuple[str, str], ...] = ()
    tokens: Tuple[str, ...] = ()

    def get(self, key: str, default: Optional[str] = None) -> Optional[str]:
        for k, v in self.fields:
            if k == key:
                return v
        return default

    @property
    def reason(self) -> str:
        """What a failing line says about why: ``reason=...`` or its bare tokens."""
        reason = self.get("reason")
        if reason:
            return reason
        return ",".join(self.tokens)

    @property
    def label(self) -> str:
        """A few words for status lines: ``virtio-blk PASS``, ``CONFIG``, ``RESULT PASS``."""
        if self.kind == "TEST":
            return f"{self.name} {self.status}"
        if self.kind == "RESULT":
            return f"RESULT {self.status}"
        if self.kind == "DIAG":
            return f"{self.name} {self.status}"
        return self.kind

    @property
    def short(self) -> str:
        """The line without the common prefix, for status lines and summaries."""
        return self.raw[len(PREFIX):] if self.raw.startswith(PREFIX) else self.raw


def split_fields(parts: Tuple[str, ...]) -> Tuple[Tuple[Tuple[str, str], ...], Tuple[str, ...]]:
    fields = []
    tokens = []
    for part in parts:
        if not part:
            continue
        key, sep, value = part.partition("=")
        if sep and key:
            fields.append((key, value))
        else:
            tokens.append(part)
    return tuple(fields), tuple(tokens)


def parse(line: str) -> Optional[Marker]:
    """The marker on this line, or None for anything else (whitespace before the prefix is allowed)."""
    line = line.lstrip(" \t\x00")
    if line.startswith(PREFIX):
        parts = line[len(PREFIX):].split("|")
        kind = parts[0]
        if kind not in KINDS:
            return None
        if kind == "TEST":
            if len(parts) < 3 or not parts[1]:
                return None
            fields, tokens = split_fields(tuple(parts[3:]))
            return Marker("TEST", line, name=parts[1], status=parts[2].strip().upper(), fields=fields, tokens=tokens)
        if kind == "RESULT":
            if len(parts) < 2:
                return None
            fields, tokens = split_fields(tuple(parts[2:]))
            return Marker("RESULT", line, status=parts[1].strip().upper(), fields=fields, tokens=tokens)
        fields, tokens = split_fields(tuple(parts[1:]))
        return Marker(kind, line, fields=fields, tokens=tokens)
    match = _DIAG.match(line)
    if match:
        fields, tokens = split_fields(tuple(match.group(3).split("|")))
        return Marker("DIAG", line, name=match.group(1), status=match.group(2), fields=fields, tokens=tokens)
    return None
