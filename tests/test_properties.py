"""Properties of the pure core, over inputs hypothesis makes up (odd serial streams, any verdict)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import List, Optional, Tuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.artifacts import junit_xml
from harness.exitcodes import ExitCode
from harness.lines import LineSplitter
from harness.markers import Marker, parse
from harness.verdict import LINE_LIMIT, Tracker, Verdict

P = "AERO_VIRTIO_SELFTEST|"
MARKERS = [
    f"{P}START|version=1", f"{P}CONFIG|http_url=http://10.0.2.2:18080/x|udp_port=18081",
    f"{P}TEST|virtio-blk|PASS|write_ok=1", f"{P}TEST|virtio-net|PASS|large_ok=1",
    f"{P}TEST|virtio-net|FAIL|reason=http_get_failed", f"{P}TEST|virtio-input-events|READY",
    f"{P}TEST|virtio-snd|SKIP|flag_not_set", "virtio-blk-irq|INFO|mode=msi|messages=2",
    f"{P}RESULT|PASS", f"{P}RESULT|FAIL", f"{P}RESULT|BOGUS",
]
NOISE = st.binary(max_size=300).filter(lambda b: P.encode() not in b)
ENDINGS = st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r"])


@st.composite
def serial_streams(draw: st.DrawFn) -> bytes:
    """Markers and boot noise with every line ending guests and firmware use."""
    parts: List[bytes] = []
    for _ in range(draw(st.integers(0, 25))):
        if draw(st.booleans()):
            parts.append(draw(st.sampled_from(MARKERS)).encode())
        else:
            parts.append(draw(NOISE))
        parts.append(draw(ENDINGS))
    return b"".join(parts)


def split_points(data: bytes) -> st.SearchStrategy[List[int]]:
    return st.lists(st.integers(0, len(data)), max_size=20).map(sorted)


def lines_of(data: bytes, cuts: List[int]) -> Tuple[List[str], List[Optional[Marker]], Optional[Verdict]]:
    splitter = LineSplitter()
    lines = []
    start = 0
    for cut in [*cuts, len(data)]:
        lines += splitter.feed(data[start:cut])
        start = cut
    lines += splitter.flush()
    texts = [line.text for line in lines]
    markers = [parse(t) for t in texts]
    tracker = Tracker(("virtio-blk", "virtio-net"))
    verdict = None
    for marker in markers:
        if marker is not None:
            verdict = verdict or tracker.add(marker)
    return texts, markers, verdict


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_any_split_into_reads_gives_the_same_lines_markers_and_verdict(data: st.DataObject) -> None:
    stream = data.draw(serial_streams())
    whole = lines_of(stream, [])
    cuts = data.draw(split_points(stream))
    assert lines_of(stream, cuts) == whole
    one_byte_reads = lines_of(stream, list(range(1, len(stream))))
    assert one_byte_reads == whole


@given(st.lists(st.sampled_from(MARKERS), max_size=15), st.sampled_from([b"\r\n", b"\r", b"\n"]))
def test_every_marker_written_is_read_back(markers: List[str], ending: bytes) -> None:
    stream = b"".join(m.encode() + ending for m in markers)
    texts, parsed, _ = lines_of(stream, [])
    assert texts == markers and all(p is not None for p in parsed)


VERDICTS = st.builds(
    Verdict,
    st.sampled_from(list(ExitCode)),
    st.text(alphabet=st.characters(categories=("Lu", "Nd", "Pc")), min_size=1, max_size=30),
    st.text(max_size=5000),
)
TESTS = st.lists(
    st.builds(lambda name, status, text: parse(f"{P}TEST|{name}|{status}|reason={text}"),
              st.sampled_from(["virtio-blk", "virtio-net", "virtio-snd", "x\x00y"]),
              st.sampled_from(["PASS", "FAIL", "SKIP", "READY", "INFO"]), st.text(max_size=40)),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(VERDICTS, TESTS, st.lists(st.sampled_from(["virtio-blk", "virtio-net", "virtio-input"]), max_size=3))
def test_junit_always_parses_and_is_never_green_for_a_failed_run(
    verdict: Verdict, tests: List[Optional[Marker]], required: List[str]
) -> None:
    markers = [m for m in tests if m is not None]
    suite = ET.fromstring(junit_xml(verdict, markers, required, 1.0)).find("testsuite")
    assert suite is not None
    bad = int(suite.get("failures", "0")) + int(suite.get("errors", "0"))
    if verdict.code != ExitCode.PASS:
        assert bad >= 1


@given(VERDICTS)
def test_the_verdict_line_is_printable_and_bounded(verdict: Verdict) -> None:
    line = verdict.line()
    assert line.isprintable() and "\n" not in line and len(line) <= LINE_LIMIT
