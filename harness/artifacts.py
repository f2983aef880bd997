"""What a run leaves behind: result.json and junit.xml (builders are pure)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional

from harness.errors import HostError
from harness.exitcodes import is_guest_failure
from harness.markers import Marker
from harness.verdict import Verdict

SUITE = "aero-virtio-selftest"


def test_record(marker: Marker) -> Dict[str, Any]:
    return {
        "name": marker.name,
        "status": marker.status,
        "fields": dict(marker.fields),
        "tokens": list(marker.tokens),
        "line": marker.raw,
    }


def result_document(
    verdict: Verdict,
    tests: Iterable[Marker],
    required: Iterable[str],
    timings: Mapping[str, Optional[float]],
    qemu: Mapping[str, Any],
    config: Optional[Marker],
    extra: Mapping[str, Any],
) -> Dict[str, Any]:
    return {
        "verdict": "PASS" if verdict.passed else "FAIL",
        "exit_code": int(verdict.code),
        "token": verdict.token,
        "detail": verdict.detail,
        "line": verdict.line(),
        "required": list(required),
        "tests": [test_record(m) for m in tests],
        "guest_config": dict(config.fields) if config else None,
        "timings": {k: (round(v, 3) if v is not None else None) for k, v in timings.items()},
        "qemu": dict(qemu),
        **extra,
    }


def xml_text(text: str) -> str:
    """Text that XML 1.0 can carry: guest bytes such as NUL or ESC are written as \\xNN."""
    return "".join(
        c if c in "\t\n\r" or ("\x20" <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd") or c >= "\U00010000"
        else f"\\x{ord(c):02x}" for c in text
    )


def junit_xml(verdict: Verdict, tests: List[Marker], required: Iterable[str], seconds: float) -> bytes:
    """One test case per guest TEST line, one per required test that never came, and one for the verdict.

    FAIL is a failure, SKIP is skipped; READY and INFO pass. The ``verdict``
    case carries the run's outcome, so a run that did not pass is never green:
    a guest failure is a failure, anything else (timeout, QEMU gone, host
    error, interrupted) an error.
    """
    suite = ET.Element("testsuite", name=SUITE, time=f"{seconds:.3f}")
    failures = skipped = errors = 0
    seen = set()
    for marker in tests:
        seen.add(marker.name)
        case = ET.SubElement(suite, "testcase", classname=SUITE, name=xml_text(marker.name))
        if marker.status == "FAIL":
            failures += 1
            ET.SubElement(case, "failure", message=xml_text(marker.reason or "FAIL")).text = xml_text(marker.raw)
        elif marker.status == "SKIP":
            skipped += 1
            ET.SubElement(case, "skipped", message=xml_text(marker.reason or "SKIP"))
        ET.SubElement(case, "system-out").text = xml_text(marker.raw)
    for name in required:
        if name not in seen:
            failures += 1
            case = ET.SubElement(suite, "testcase", classname=SUITE, name=xml_text(name))
            ET.SubElement(case, "failure", message="missing").text = xml_text(f"the guest never reported {name}")
    case = ET.SubElement(suite, "testcase", classname=SUITE, name="verdict")
    if not verdict.passed:
        kind = "failure" if is_guest_failure(verdict.code) else "error"
        if kind == "failure":
            failures += 1
        else:
            errors += 1
        ET.SubElement(case, kind, message=xml_text(verdict.token)).text = xml_text(verdict.line())
    total = len(suite.findall("testcase"))
    suite.set("tests", str(total))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    root = ET.Element("testsuites")
    root.append(suite)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


def prepare_artifacts(path: Path) -> Path:
    """The run's artifacts folder, created and proven writable before anything starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise HostError(
            f"cannot write the artifacts folder {path}: {exc.strerror}", hint="pick a writable folder with --artifacts"
        ) from exc
    return path.resolve()


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n")
