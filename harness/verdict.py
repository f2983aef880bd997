"""Decide a run's verdict from the markers seen so far. Pure.

The rules (README, "Exit codes"):
- RESULT|PASS with every required test's last status PASS: PASS.
- RESULT|PASS with a required test missing: FAIL ``MISSING_<TEST>``; failed
  or skipped: FAIL ``<TEST>_FAILED`` / ``<TEST>_SKIPPED``.
- RESULT|FAIL: FAIL, naming the first failing required test when there is
  one (``VIRTIO_NET_FAILED``), else ``SELFTEST_FAILED``.
- No RESULT: TIMEOUT, or QEMU_EXITED (and its kin) when the VM went away.
A second START means the selftest began again (the guest rebooted): what the
earlier run reported no longer counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

from harness.exitcodes import ExitCode
from harness.markers import PREFIX, Marker

DEFAULT_REQUIRED = ("virtio-blk", "virtio-net")


@dataclass(frozen=True)
class Verdict:
    code: ExitCode
    token: str
    detail: str

    @property
    def passed(self) -> bool:
        return self.code == ExitCode.PASS

    def line(self) -> str:
        """The one line scripts around the harness read (PROTOCOL.md)."""
        if self.passed:
            return f"PASS: {PREFIX}RESULT|PASS"
        return f"FAIL: {self.token}: {self.detail}"


def token_of(test: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in test).upper()


def describe(marker: Marker) -> str:
    reason = marker.reason
    return f"{marker.name} {marker.status}" + (f" ({reason})" if reason else "")


class Tracker:
    """What the guest has reported so far in this boot."""

    def __init__(self, required: Sequence[str] = DEFAULT_REQUIRED) -> None:
        self.required = tuple(required)
        self.tests: Dict[str, Marker] = {}
        self.config: Optional[Marker] = None
        self.start: Optional[Marker] = None
        self.result: Optional[Marker] = None
        self.last: Optional[Marker] = None
        self.starts = 0

    def add(self, marker: Marker) -> Optional[Verdict]:
        """Record a marker; the verdict once the guest has given its RESULT."""
        if self.result is not None:
            return None
        if marker.kind != "DIAG":
            self.last = marker
        if marker.kind == "START":
            self.starts += 1
            self.start = marker
            self.tests = {}
            self.config = None
        elif marker.kind == "CONFIG":
            self.config = marker
        elif marker.kind == "TEST":
            self.tests[marker.name] = marker
        elif marker.kind == "RESULT":
            self.result = marker
            return judge(marker, self.tests, self.required)
        return None

    def summary(self) -> str:
        seen = ", ".join(f"{m.name}={m.status}" for m in self.tests.values())
        return seen or "no TEST line"


def judge(result: Marker, tests: Dict[str, Marker], required: Sequence[str]) -> Verdict:
    if result.status == "PASS":
        for name in required:
            marker = tests.get(name)
            if marker is None:
                return Verdict(
                    ExitCode.FAIL,
                    f"MISSING_{token_of(name)}",
                    f"the guest said RESULT|PASS but never reported the required test {name}",
                )
            if marker.status != "PASS":
                suffix = "SKIPPED" if marker.status == "SKIP" else "FAILED"
                return Verdict(ExitCode.FAIL, f"{token_of(name)}_{suffix}", marker.short)
        return Verdict(ExitCode.PASS, "PASS", result.short)
    failing = [m for m in tests.values() if m.status == "FAIL"]
    for name in required:
        marker = tests.get(name)
        if marker is not None and marker.status == "FAIL":
            detail = "; ".join(describe(m) for m in failing)
            return Verdict(ExitCode.FAIL, f"{token_of(name)}_FAILED", detail)
    if result.status == "FAIL":
        detail = "; ".join(describe(m) for m in failing) or "the guest reported RESULT|FAIL"
        return Verdict(ExitCode.FAIL, "SELFTEST_FAILED", detail)
    return Verdict(ExitCode.FAIL, "SELFTEST_FAILED", f"unknown RESULT status: {result.short}")


def _last(tracker: Tracker, width: int = 100) -> str:
    if tracker.last is None:
        return "none (no START from the guest)"
    short = tracker.last.short
    return short if len(short) <= width else short[: width - 3] + "..."


def timeout_verdict(seconds: float, tracker: Tracker) -> Verdict:
    last = _last(tracker)
    return Verdict(
        ExitCode.TIMEOUT, "TIMEOUT", f"no RESULT within {seconds:g} s; last marker: {last}; tests: {tracker.summary()}"
    )


def vm_gone_verdict(token: str, what: str, tracker: Tracker) -> Verdict:
    last = _last(tracker)
    return Verdict(ExitCode.QEMU_EXITED, token, f"{what} before a RESULT; last marker: {last}")
