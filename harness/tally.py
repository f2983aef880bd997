"""What many runs add up to: the summary table, the totals, one junit.xml (pure).

The runs of a repeat each leave their own artifacts; this module sums them up
for people (a table, a totals line) and for CI (a junit.xml holding a
testsuite per run, named after the run).
"""

from __future__ import annotations

import statistics
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from harness.artifacts import SUITE, xml_text
from harness.exitcodes import ExitCode, is_guest_failure, worst


def run_name(index: int) -> str:
    return f"run-{index:03d}"


@dataclass(frozen=True)
class RunRecord:
    """One finished run of a repeat."""

    index: int
    code: int
    token: str
    seconds: float
    artifacts: Optional[Path]
    host: str = ""  # remote runs: the host that ran it

    @property
    def name(self) -> str:
        return run_name(self.index)

    @property
    def label(self) -> str:
        return f"{self.host}/{self.name}" if self.host else self.name

    @property
    def passed(self) -> bool:
        return self.code == ExitCode.PASS

    def as_dict(self) -> Dict[str, Any]:
        return {"run": self.index, "host": self.host or None, "exit_code": self.code, "token": self.token,
                "seconds": round(self.seconds, 3), "artifacts": str(self.artifacts) if self.artifacts else None}


def _table(rows: List[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def summary_table(records: Iterable[RunRecord]) -> str:
    """run, (host,) exit code, token, time: one row per run, in run order."""
    ordered = sorted(records, key=lambda r: r.index)
    hosts = any(r.host for r in ordered)
    rows: List[Sequence[str]] = [("run", *(("host",) if hosts else ()), "exit", "token", "time")]
    for r in ordered:
        rows.append((r.name, *((r.host,) if hosts else ()), str(r.code), r.token, f"{r.seconds:.1f}s"))
    return _table(rows)


@dataclass(frozen=True)
class Totals:
    planned: int
    ran: int
    passed: int
    median_seconds: Optional[float]
    worst: ExitCode

    @property
    def failed(self) -> int:
        return self.ran - self.passed

    @property
    def not_run(self) -> int:
        return self.planned - self.ran

    @property
    def pass_rate(self) -> Optional[float]:
        return self.passed / self.ran if self.ran else None

    def line(self) -> str:
        """``PASS: 10/10 runs passed ...`` or ``FAIL: ...``: the last line a repeat prints."""
        rate = "no run finished" if self.pass_rate is None else f"pass rate {self.pass_rate:.1%}"
        median = "" if self.median_seconds is None else f", median {self.median_seconds:.1f} s"
        skipped = f", {self.not_run} not run" if self.not_run else ""
        verdict = "PASS" if self.worst == ExitCode.PASS else "FAIL"
        tail = "" if verdict == "PASS" else f"; worst exit code {int(self.worst)} ({self.worst.name})"
        return f"{verdict}: {self.passed}/{self.ran} runs passed ({rate}{median}{skipped}){tail}"

    def as_dict(self) -> Dict[str, Any]:
        return {"planned": self.planned, "ran": self.ran, "passed": self.passed, "failed": self.failed,
                "not_run": self.not_run, "pass_rate": self.pass_rate, "median_seconds": self.median_seconds,
                "worst_exit_code": int(self.worst), "worst": self.worst.name}


def totals(records: Sequence[RunRecord], planned: int, also: Iterable[int] = ()) -> Totals:
    """The sum of the runs; ``also`` adds codes that are not a run's (a failed host, an interruption)."""
    codes = [r.code for r in records] + list(also)
    median = statistics.median(r.seconds for r in records) if records else None
    # No run at all is never a success: worst() of nothing is HOST_ERROR.
    return Totals(planned, len(records), sum(r.passed for r in records), median, worst(codes))


def aggregate_junit(records: Sequence[RunRecord], reports: Mapping[int, Optional[bytes]]) -> bytes:
    """One junit.xml: each run's testsuite (from its own junit.xml), renamed after the run.

    A run without a readable junit.xml (it never got that far) gets a suite with
    one case carrying its outcome, so that it is never lost nor green.
    """
    root = ET.Element("testsuites", name=SUITE)
    counts = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for record in sorted(records, key=lambda r: r.index):
        suites = _suites(reports.get(record.index))
        if not suites:
            suites = [_outcome_suite(record)]
        for suite in suites:
            suite.set("name", f"{SUITE}.{record.label}")
            for case in suite.iter("testcase"):
                case.set("classname", f"{SUITE}.{record.label}")
            for key in counts:
                counts[key] += int(suite.get(key, "0"))
            root.append(suite)
    for key, value in counts.items():
        root.set(key, str(value))
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


def _suites(report: Optional[bytes]) -> List[ET.Element]:
    if not report:
        return []
    try:
        parsed = ET.fromstring(report)
    except ET.ParseError:
        return []
    return [parsed] if parsed.tag == "testsuite" else list(parsed.iter("testsuite"))


def _outcome_suite(record: RunRecord) -> ET.Element:
    suite = ET.Element("testsuite", tests="1", failures="0", errors="0", skipped="0", time=f"{record.seconds:.3f}")
    case = ET.SubElement(suite, "testcase", name="verdict")
    if not record.passed:
        kind = "failure" if is_guest_failure(record.code) else "error"
        suite.set(kind + "s", "1")
        ET.SubElement(case, kind, message=xml_text(record.token)).text = xml_text(
            f"{record.label} ended with exit code {record.code} ({record.token}) and left no junit.xml")
    return suite
