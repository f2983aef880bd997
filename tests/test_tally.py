"""Summing runs up: the table, the totals line, one junit.xml with a testsuite per run."""

import xml.etree.ElementTree as ET
from pathlib import Path

from harness.artifacts import junit_xml
from harness.exitcodes import ExitCode
from harness.markers import parse
from harness.tally import RunRecord, aggregate_junit, summary_table, totals
from harness.verdict import Verdict

PASS = Verdict(ExitCode.PASS, "PASS", "")


def record(index, code=0, token="PASS", seconds=10.0, host=""):
    return RunRecord(index, code, token, seconds, Path(f"/a/run-{index:03d}"), host)


def test_table_rows_in_run_order():
    rows = summary_table([record(2, 1, "VIRTIO_BLK_FAILED", 11.25), record(1)]).splitlines()
    assert rows[0].split() == ["run", "exit", "token", "time"]
    assert rows[1].split() == ["run-001", "0", "PASS", "10.0s"]
    assert rows[2].split() == ["run-002", "1", "VIRTIO_BLK_FAILED", "11.2s"]


def test_table_has_a_host_column_for_remote_runs():
    rows = summary_table([record(1, host="kvm01"), record(2, host="kvm02")]).splitlines()
    assert rows[0].split() == ["run", "host", "exit", "token", "time"]
    assert rows[2].split()[:2] == ["run-002", "kvm02"]


def test_totals_pass_rate_median_and_worst_code():
    runs = [record(1, seconds=9), record(2, seconds=10), record(3, 1, "VIRTIO_BLK_FAILED", 12), record(4, seconds=11),
            record(5, seconds=10), record(6, 1, "VIRTIO_BLK_FAILED", 13)]
    t = totals(runs, 6)
    assert (t.ran, t.passed, t.failed, t.not_run) == (6, 4, 2, 0)
    assert t.pass_rate == 4 / 6 and t.median_seconds == 10.5 and t.worst == ExitCode.FAIL
    assert t.line() == "FAIL: 4/6 runs passed (pass rate 66.7%, median 10.5 s); worst exit code 1 (FAIL)"
    assert totals(runs[:2], 2).line() == "PASS: 2/2 runs passed (pass rate 100.0%, median 9.5 s)"


def test_totals_count_runs_not_run_and_codes_beyond_the_runs():
    t = totals([record(1), record(2, 1, "X")], 6)
    assert t.not_run == 4 and "4 not run" in t.line()
    # Every run passed, but a host became unreachable or the repeat was interrupted: not a PASS.
    assert totals([record(1)], 1, also=[ExitCode.SSH_UNREACHABLE]).worst == ExitCode.SSH_UNREACHABLE
    assert totals([record(1, 2, "TIMEOUT")], 3, also=[130]).worst == ExitCode.INTERRUPTED
    nothing = totals([], 3)
    assert nothing.worst == ExitCode.HOST_ERROR and nothing.line().startswith("FAIL: 0/0 runs passed (no run finished")


def run_junit(*lines, verdict=PASS):
    markers = [parse(line) for line in lines]
    return junit_xml(verdict, markers, [], 9.5)


def test_aggregated_junit_holds_a_testsuite_per_run_named_after_it():
    fail = Verdict(ExitCode.FAIL, "VIRTIO_BLK_FAILED", "readback_mismatch")
    reports = {
        1: run_junit("AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS", "AERO_VIRTIO_SELFTEST|TEST|virtio-snd|SKIP"),
        2: run_junit("AERO_VIRTIO_SELFTEST|TEST|virtio-blk|FAIL|reason=readback_mismatch", verdict=fail),
        3: None,  # never got as far as its junit.xml
        4: b"<not xml",
    }
    records = [record(1), record(2, 1, "VIRTIO_BLK_FAILED"), record(3, 5, "HOST_ERROR"), record(4, 130, "INTERRUPTED")]
    root = ET.fromstring(aggregate_junit(records, reports))
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [f"aero-virtio-selftest.run-00{i}" for i in (1, 2, 3, 4)]
    assert {c.get("classname") for c in suites[1].iter("testcase")} == {"aero-virtio-selftest.run-002"}
    assert suites[0].get("failures") == "0" and suites[0].get("skipped") == "1"
    assert suites[1].get("failures") == "2"  # the test line and the verdict
    assert suites[2].find("testcase/error").get("message") == "HOST_ERROR"
    assert suites[3].find("testcase/error").get("message") == "INTERRUPTED"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("7", "2", "2", "1")


def test_aggregated_junit_names_the_host_of_a_remote_run():
    root = ET.fromstring(aggregate_junit([record(1, host="kvm01")], {1: run_junit()}))
    assert root.find("testsuite").get("name") == "aero-virtio-selftest.kvm01/run-001"
