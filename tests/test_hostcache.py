"""What the harness remembers between runs: a cache problem never fails a run, it only costs the probes."""

import json
import os
import pwd
import tempfile

import pytest

from harness import hostcache
from harness.qemu import qemu_caps
from tests.fakeqemu import FAKE_QEMU


@pytest.fixture
def homeless(tmp_path, monkeypatch):
    """A uid with no passwd entry and no HOME (an arbitrary uid in a container); tmp_path is the temp folder."""
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("HOME", raising=False)

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path / f"aero-virtio-harness-{os.getuid()}"


def test_a_user_without_a_home_caches_in_a_private_temp_folder(homeless):
    assert qemu_caps(str(FAKE_QEMU), ["virtio-net-pci"]).version
    assert hostcache.load("qemu-caps.json")
    assert (homeless / "qemu-caps.json").is_file()
    assert homeless.stat().st_mode & 0o077 == 0


def test_a_temp_folder_another_user_could_write_is_not_trusted(homeless):
    homeless.mkdir(mode=0o777)
    os.chmod(homeless, 0o777)
    (homeless / "x.json").write_text(json.dumps({"planted": 1}))
    assert hostcache.load("x.json") == {}
    hostcache.save("x.json", {"ours": 1})
    assert json.loads((homeless / "x.json").read_text()) == {"planted": 1}


def test_a_damaged_or_unwritable_cache_reads_as_empty_and_is_never_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = tmp_path / "aero-virtio-harness"
    folder.mkdir()
    for damaged in ("{", "[" * 100_000, "\xff", "[1, 2]"):
        (folder / "x.json").write_text(damaged, encoding="latin-1")
        assert hostcache.load("x.json") == {}
    (folder / "x.json").unlink()
    (folder / "x.json").mkdir()  # cannot be read or replaced
    assert hostcache.load("x.json") == {}
    hostcache.save("x.json", {"a": 1})
    assert os.listdir(folder) == ["x.json"]  # no temporary file left behind
