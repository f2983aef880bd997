from harness.watcher import CHUNK, SerialWatcher


def test_markers_from_a_log_written_in_pieces(tmp_path):
    log = tmp_path / "serial.log"
    watcher = SerialWatcher(log)
    assert list(watcher.markers()) == []  # no file yet
    with open(log, "ab") as f:
        f.write(b"\x00junk\r\nAERO_VIRTIO_SELFTEST|START|version=1\r\nAERO_VIRTIO_SELF")
        f.flush()
        assert [m.kind for m in watcher.markers()] == ["START"]
        f.write(b"TEST|RESULT|PASS\r\n")
        f.flush()
        assert [m.status for m in watcher.markers()] == ["PASS"]
    assert list(watcher.tail)[-1] == "AERO_VIRTIO_SELFTEST|RESULT|PASS"


def test_a_large_log_is_read_a_chunk_at_a_time(tmp_path):
    log = tmp_path / "serial.log"
    log.write_bytes(b"\n" * (3 * CHUNK) + b"y" * (5 * CHUNK) + b"\r\nAERO_VIRTIO_SELFTEST|RESULT|FAIL\r\n")
    watcher = SerialWatcher(log)
    assert watcher.read_lines() == [] and watcher.more  # blank lines are dropped, more is waiting
    markers = list(watcher.markers())
    assert [m.status for m in markers] == ["FAIL"]
    assert watcher.bytes_read == log.stat().st_size
    watcher.close()
