from harness.lines import LineSplitter, clean


def feed_all(chunks, max_line=64 * 1024):
    splitter = LineSplitter(max_line)
    out = []
    for chunk in chunks:
        out.extend(splitter.feed(chunk))
    return out, splitter


def test_crlf_and_double_cr_end_lines_cleanly():
    lines, _ = feed_all([b"a\r\nb\r\r\nc\n"])
    assert [line.text for line in lines] == ["a", "b", "c"]


def test_line_split_over_many_writes_is_whole():
    data = b"AERO_VIRTIO_SELFTEST|RESULT|PASS\r\n"
    lines, _ = feed_all([data[i : i + 1] for i in range(len(data))])
    assert [line.text for line in lines] == ["AERO_VIRTIO_SELFTEST|RESULT|PASS"]


def test_multibyte_character_cut_between_reads_survives():
    data = "ünïcode\r\n".encode()
    lines, _ = feed_all([data[:2], data[2:]])
    assert lines[0].text == "ünïcode"


def test_invalid_utf8_and_nul_are_replaced_not_fatal():
    lines, _ = feed_all([b"\xff\xfe junk \x00\r\n\x00\x00AERO_VIRTIO_SELFTEST|START|version=1\r\n"])
    assert "\ufffd" in lines[0].text
    assert lines[1].text == "AERO_VIRTIO_SELFTEST|START|version=1"


def test_long_line_is_cut_and_memory_bounded():
    splitter = LineSplitter(max_line=100)
    for _ in range(1000):
        assert splitter.feed(b"x" * 1000) == []
    assert len(splitter.pending) == 100
    (line,) = splitter.feed(b"tail\r\nnext\r\n")[:1]
    assert line.cut and len(line.text) == 100


def test_unterminated_rest_comes_out_on_flush():
    lines, splitter = feed_all([b"one\r\npartial"])
    assert [line.text for line in lines] == ["one"]
    assert [line.text for line in splitter.flush()] == ["partial"]
    assert splitter.flush() == []


def test_clean_strips_only_edges():
    assert clean(b"\x00a\rb\r\r") == "a\rb"


def test_a_lone_cr_ends_a_line_and_no_empty_lines_come_out():
    lines, _ = feed_all([b"Booting...\rAERO_VIRTIO_SELFTEST|START|version=1\n\rnext\r\r\nlast\n"])
    assert [line.text for line in lines] == [
        "Booting...", "AERO_VIRTIO_SELFTEST|START|version=1", "next", "last"]


def test_flushed_rest_is_marked_unterminated():
    _, splitter = feed_all([b"done\r\nAERO_VIRTIO_SELFTEST|RESULT|PA"])
    (rest,) = splitter.flush()
    assert rest.text.endswith("RESULT|PA") and not rest.ended
