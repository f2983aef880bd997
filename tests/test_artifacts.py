import xml.etree.ElementTree as ET

from harness.artifacts import junit_xml, result_document
from harness.exitcodes import ExitCode
from harness.markers import parse
from harness.verdict import Verdict

TESTS = [
    parse("AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS|write_ok=1"),
    parse("AERO_VIRTIO_SELFTEST|TEST|virtio-net|FAIL|reason=http_get_failed"),
    parse("AERO_VIRTIO_SELFTEST|TEST|virtio-blk-resize|SKIP|flag_not_set"),
]


def cases(xml_bytes):
    root = ET.fromstring(xml_bytes)
    suite = root.find("testsuite")
    return suite, {c.get("name"): c for c in suite.findall("testcase")}


def test_junit_one_case_per_test():
    verdict = Verdict(ExitCode.FAIL, "VIRTIO_NET_FAILED", "x")
    suite, by_name = cases(junit_xml(verdict, TESTS, ["virtio-blk", "virtio-net"], 9.5))
    assert set(by_name) == {"virtio-blk", "virtio-net", "virtio-blk-resize", "verdict"}
    assert by_name["virtio-net"].find("failure").get("message") == "http_get_failed"
    assert by_name["virtio-blk-resize"].find("skipped") is not None
    assert by_name["virtio-blk"].find("failure") is None
    assert suite.get("tests") == "4" and suite.get("failures") == "2" and suite.get("skipped") == "1"
    assert by_name["verdict"].find("failure").get("message") == "VIRTIO_NET_FAILED"


def test_junit_missing_required_and_timeout_are_not_green():
    verdict = Verdict(ExitCode.TIMEOUT, "TIMEOUT", "no RESULT")
    suite, by_name = cases(junit_xml(verdict, TESTS[:1], ["virtio-blk", "virtio-net"], 1.0))
    assert by_name["virtio-net"].find("failure") is not None
    assert by_name["verdict"].find("error").get("message") == "TIMEOUT"
    assert suite.get("errors") == "1"


def test_result_document():
    verdict = Verdict(ExitCode.PASS, "PASS", "RESULT|PASS")
    doc = result_document(verdict, TESTS[:1], ["virtio-blk"], {"verdict": 1.23456, "x": None},
                          {"version": "7.2.22"}, None, {"notes": []})
    assert doc["verdict"] == "PASS" and doc["exit_code"] == 0
    assert doc["tests"][0]["fields"] == {"write_ok": "1"}
    assert doc["timings"] == {"verdict": 1.235, "x": None}
    assert doc["qemu"]["version"] == "7.2.22"


PASSING = [parse("AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS"), parse("AERO_VIRTIO_SELFTEST|TEST|virtio-net|PASS")]


def test_junit_is_never_green_for_a_failed_run_whose_tests_all_passed():
    for verdict in (Verdict(ExitCode.FAIL, "SELFTEST_FAILED", "RESULT|FAIL"),
                    Verdict(ExitCode.FAIL, "VIRTIO_NET_SKIPPED", "x"),
                    Verdict(ExitCode.FAIL, "SELFTEST_FAILED", "unknown RESULT status: RESULT|BOGUS")):
        suite, by_name = cases(junit_xml(verdict, PASSING, ["virtio-blk", "virtio-net"], 1.0))
        assert int(suite.get("failures")) + int(suite.get("errors")) >= 1
        assert by_name["verdict"].find("failure") is not None
    suite, by_name = cases(junit_xml(Verdict(ExitCode.PASS, "PASS", "ok"), PASSING, ["virtio-blk"], 1.0))
    assert suite.get("failures") == "0" and suite.get("errors") == "0" and len(by_name["verdict"]) == 0


def test_junit_stays_well_formed_with_control_bytes():
    noisy = [parse("AERO_VIRTIO_SELFTEST|TEST|virtio-net|FAIL|reason=\x00\x1b[31mred\x07")]
    verdict = Verdict(ExitCode.FAIL, "VIRTIO_NET_FAILED", "\x00\x1b bad")
    suite, by_name = cases(junit_xml(verdict, noisy, ["virtio-net"], 1.0))
    assert "\\x1b[31mred\\x07" in by_name["virtio-net"].find("failure").get("message")


def test_verdict_line_is_printable_and_bounded():
    line = Verdict(ExitCode.FAIL, "SELFTEST_FAILED", "\x00\x1b" + "x" * 70000).line()
    assert line.isprintable() and len(line) <= 1000 and "\\x00\\x1b" in line
