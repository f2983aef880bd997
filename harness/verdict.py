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
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

from harness.errors import classify
from harness.exitcodes import ExitCode
from harness.markers import PREFIX, Marker

DEFAULT_REQUIRED = ("virtio-blk", "virtio-net")


@dataclass(frozen=True)
class Requirement:
    """A TEST the guest must report, with the statuses that count as good."""

    name: str
    allowed: Tuple[str, ...] = ("PASS",)
    hint: str = ""  # said when it fails: how to fix the image or the run
    switch: str = ""  # the guest switch that runs the test (said when the guest skipped it as flag_not_set)
    flag: str = ""  # the host flag that made it required

    def problem(self, marker: Optional[Marker]) -> Optional[Tuple[str, str]]:
        """(token, detail) when the marker (None: never seen) does not meet this requirement."""
        if marker is None:
            why = f" ({self.flag} requires it: is the image provisioned with {self.switch}?)" if self.switch else ""
            return f"MISSING_{token_of(self.name)}", f"the guest never reported the required test {self.name}{why}"
        if marker.status in self.allowed:
            return None
        suffix = "SKIPPED" if marker.status == "SKIP" else "FAILED"
        hint = self.hint
        if marker.status == "SKIP" and self.switch and marker.reason == "flag_not_set":
            hint = (f"{self.flag} requires it, but the image was not provisioned with {self.switch}: "
                    f"build the media with --test-switch {self.switch[len('--test-'):]} and provision again")
        return f"{token_of(self.name)}_{suffix}", marker.short + (f" ({hint})" if hint else "")


RequirementLike = Union[str, Requirement]


def as_requirements(items: Iterable[RequirementLike]) -> Tuple[Requirement, ...]:
    out: Dict[str, Requirement] = {}
    for item in items:
        req = item if isinstance(item, Requirement) else Requirement(item)
        out.setdefault(req.name, req)
    return tuple(out.values())


# Statuses after which a test is over (READY and INFO are not).
FINAL = ("PASS", "FAIL", "SKIP")


@dataclass(frozen=True)
class Verdict:
    code: ExitCode
    token: str
    detail: str

    @property
    def passed(self) -> bool:
        return self.code == ExitCode.PASS

    def line(self) -> str:
        """The one line scripts around the harness read (docs/guest-contract.md): printable, one line, bounded."""
        if self.passed:
            return f"PASS: {PREFIX}RESULT|PASS"
        return shown(f"FAIL: {self.token}: {self.detail}", LINE_LIMIT)


LINE_LIMIT = 1000  # a verdict line is read by people and by scripts: never 64 KiB of guest noise


def shown(text: str, limit: int) -> str:
    """Text from the guest made safe to show: control characters escaped, cut at ``limit`` characters."""
    out = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else "?" for c in text)
    return out if len(out) <= limit else out[: limit - 3] + "..."


def token_of(test: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in test).upper()


def describe(marker: Marker) -> str:
    reason = marker.reason
    return f"{marker.name} {marker.status}" + (f" ({reason})" if reason else "")


class Tracker:
    """What the guest has reported so far in this boot."""

    def __init__(self, required: Sequence[RequirementLike] = DEFAULT_REQUIRED, fail_fast: bool = True) -> None:
        self.requirements = as_requirements(required)
        self.required = tuple(r.name for r in self.requirements)
        self.fail_fast = fail_fast
        self.tests: Dict[str, Marker] = {}
        self.diags: Dict[str, Marker] = {}
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
            if self.fail_fast and marker.status in FINAL:
                # A required test that failed (or skipped where it must pass) decides the run now.
                for req in self.requirements:
                    if req.name == marker.name:
                        problem = req.problem(marker)
                        if problem is not None:
                            return Verdict(ExitCode.FAIL, *problem)
        elif marker.kind == "DIAG":
            self.diags[marker.name] = marker
        elif marker.kind == "RESULT":
            self.result = marker
            return judge(marker, self.tests, self.requirements)
        return None

    def summary(self) -> str:
        seen = ", ".join(f"{m.name}={m.status}" for m in self.tests.values())
        return seen or "no TEST line"


def judge(result: Marker, tests: Dict[str, Marker], required: Sequence[RequirementLike]) -> Verdict:
    requirements = as_requirements(required)
    if result.status == "PASS":
        for req in requirements:
            problem = req.problem(tests.get(req.name))
            if problem is not None:
                token, detail = problem
                if token.startswith("MISSING_"):
                    detail = "the guest said RESULT|PASS but " + detail[len("the guest "):]
                return Verdict(ExitCode.FAIL, token, detail)
        return Verdict(ExitCode.PASS, "PASS", result.short)
    failing = [m for m in tests.values() if m.status == "FAIL"]
    for req in requirements:
        marker = tests.get(req.name)
        if marker is not None and marker.status == "FAIL":
            detail = "; ".join(describe(m) for m in failing)
            return Verdict(ExitCode.FAIL, f"{token_of(req.name)}_FAILED", detail)
    if result.status == "FAIL":
        detail = "; ".join(describe(m) for m in failing) or "the guest reported RESULT|FAIL"
        return Verdict(ExitCode.FAIL, "SELFTEST_FAILED", detail)
    return Verdict(ExitCode.FAIL, "SELFTEST_FAILED", f"unknown RESULT status: {result.short}")


def _last(tracker: Tracker) -> str:
    if tracker.last is None:
        return "none (no START from the guest)"
    return shown(tracker.last.label, 100)


def timeout_verdict(seconds: float, tracker: Tracker) -> Verdict:
    last = _last(tracker)
    return Verdict(
        ExitCode.TIMEOUT, "TIMEOUT", f"no RESULT within {seconds:g} s; last marker: {last}; tests: {tracker.summary()}"
    )


def vm_gone_verdict(token: str, what: str, tracker: Tracker) -> Verdict:
    last = _last(tracker)
    return Verdict(ExitCode.QEMU_EXITED, token, f"{what} before a RESULT; last marker: {last}")


def failure_verdict(exc: BaseException) -> Verdict:
    """The verdict of a run that ended with an exception (interrupted, host error, bug)."""
    return Verdict(*classify(exc))


def profile_requirements(
    profile: str, sound: bool = False, udp: bool = True, extra: Iterable[RequirementLike] = ()
) -> Tuple[Requirement, ...]:
    """What a RESULT|PASS must be backed by, per device profile (docs/guest-contract.md, "Devices").

    Current guests always print these; one that does not is a stale selftest binary.
    Early guests (the transitional profile) print only virtio-blk and virtio-net.
    """
    if profile == "transitional":
        base: Tuple[RequirementLike, ...] = DEFAULT_REQUIRED
    else:
        snd_ok = ("PASS",) if sound else ("PASS", "SKIP")
        snd_hint = "" if not sound else "--with-virtio-snd needs the guest's sound tests to PASS"
        base = (
            "virtio-blk", "virtio-input", "virtio-input-bind", "virtio-net",
            *(["virtio-net-udp"] if udp else []),
            Requirement("virtio-snd", snd_ok, snd_hint),
            Requirement("virtio-snd-capture", snd_ok, snd_hint),
            Requirement("virtio-snd-duplex", snd_ok, snd_hint),
        )
    return as_requirements([*base, *extra])
