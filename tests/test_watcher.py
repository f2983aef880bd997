import sys

import pytest

from harness.interrupt import readable
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


def test_the_watcher_wakes_when_the_log_grows(tmp_path):
    """inotify: the follow loop sleeps on fileno() until the guest writes (None where there is no inotify)."""
    log = tmp_path / "serial.log"
    log.write_bytes(b"")
    watcher = SerialWatcher(log)
    assert watcher.read_lines() == []
    fd = watcher.fileno()
    if fd is None:
        pytest.skip("no inotify on this system: the loop polls")
    assert readable([fd], 0) == set()
    with open(log, "ab") as f:
        f.write(b"AERO_VIRTIO_SELFTEST|START|version=1\r\n")
    assert readable([fd], 1.0) == {fd}
    assert [line.text for line in watcher.read_lines()] == ["AERO_VIRTIO_SELFTEST|START|version=1"]
    assert readable([fd], 0) == set()  # read: quiet again until the next write
    watcher.close()


def test_a_log_that_appears_later_is_watched_from_its_first_read(tmp_path):
    log = tmp_path / "firmware.log"
    watcher = SerialWatcher(log)
    assert watcher.read_lines() == [] and watcher.fileno() is None
    log.write_bytes(b"Booting from Hard Disk...\n")
    assert [line.text for line in watcher.read_lines()] == ["Booting from Hard Disk..."]
    assert watcher.fileno() is not None or not sys.platform.startswith("linux")
    watcher.close()


def test_a_closed_watch_leaves_no_thread_once_settled(tmp_path):
    import threading

    from harness import inotify

    log = tmp_path / "serial.log"
    log.write_bytes(b"")
    watcher = SerialWatcher(log)
    watcher.read_lines()
    assert watcher.fileno() is not None
    watcher.close()
    inotify.settle()
    assert [t for t in threading.enumerate() if t.name == "aero-inotify-close"] == []
