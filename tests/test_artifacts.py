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
    assert set(by_name) == {"virtio-blk", "virtio-net", "virtio-blk-resize"}
    assert by_name["virtio-net"].find("failure").get("message") == "http_get_failed"
    assert by_name["virtio-blk-resize"].find("skipped") is not None
    assert by_name["virtio-blk"].find("failure") is None
    assert suite.get("tests") == "3" and suite.get("failures") == "1" and suite.get("skipped") == "1"


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
