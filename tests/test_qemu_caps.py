"""What a QEMU binary offers, probed once and cached per user and per build: asked once, never stale."""

import json
import os
import shutil

import pytest

from harness import qemu
from harness.hostcache import file_identity
from harness.qemu import qemu_caps
from tests.fakeqemu import FAKE_QEMU

QEMU = shutil.which("qemu-system-x86_64")
DRIVERS = ["virtio-net-pci", "virtio-blk-pci"]


def test_a_cache_entry_written_by_another_harness_version_is_probed_again(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    caps = qemu_caps(str(FAKE_QEMU), ["virtio-net-pci"])
    cache_file = tmp_path / "aero-virtio-harness" / "qemu-caps.json"
    cache = json.loads(cache_file.read_text())
    (key,) = cache
    # The same key, in another shape (the cache is shared by every harness the user runs).
    for other in ({"has_action": True, "devices": ["virtio-net-pci"], "properties": []}, ["not", "a", "dict"]):
        cache[key] = other
        cache_file.write_text(json.dumps(cache))
        again = qemu_caps(str(FAKE_QEMU), ["virtio-net-pci"])
        assert again == caps
        assert set(json.loads(cache_file.read_text())[key]) == {"version", "has_action", "absent", "properties"}


@pytest.mark.parametrize("damage", [
    {"properties": {"virtio-net-pci": 5}},
    {"properties": {"virtio-net-pci": "vectors"}},
    {"properties": {"virtio-net-pci": [1, 2]}},
    {"absent": [["no-such-device"]]},
    {"absent": "no-such-device"},
    {"has_action": 1},
])
def test_a_cache_entry_with_a_value_of_another_shape_is_probed_again(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    drivers = [*DRIVERS, "no-such-device"]
    caps = qemu_caps(str(FAKE_QEMU), drivers)
    assert "no-such-device" not in caps.devices
    cache_file = tmp_path / "aero-virtio-harness" / "qemu-caps.json"
    cache = json.loads(cache_file.read_text())
    (key,) = cache
    cache[key].update(damage)
    cache_file.write_text(json.dumps(cache))
    assert qemu_caps(str(FAKE_QEMU), drivers) == caps
    assert json.loads(cache_file.read_text())[key]["absent"] == ["no-such-device"]


def test_another_module_folder_is_another_build(tmp_path, monkeypatch):
    """An unpacked QEMU loads its device modules from $QEMU_MODULE_DIR: another folder, other devices."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("QEMU_MODULE_DIR", raising=False)
    probed = []
    real = qemu._probe
    monkeypatch.setattr(qemu, "_probe", lambda argv, *a: probed.append(argv[1]) or real(argv, *a))
    modules = tmp_path / "modules"
    modules.mkdir()
    qemu_caps(str(FAKE_QEMU), ["virtio-net-pci"])
    monkeypatch.setenv("QEMU_MODULE_DIR", str(modules))
    for _ in range(2):
        qemu_caps(str(FAKE_QEMU), ["virtio-net-pci"])
    (modules / "hw-display-virtio-gpu.so").write_bytes(b"")  # the folder changed: asked again
    qemu_caps(str(FAKE_QEMU), ["virtio-net-pci"])
    assert probed.count("-device") == 3


@pytest.mark.skipif(QEMU is None, reason="QEMU is not installed")
def test_a_known_build_answers_without_starting_qemu(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    caps = qemu_caps(QEMU, DRIVERS)
    assert "vectors" in caps.properties["virtio-net-pci"]

    def started(*args, **kwargs):
        raise AssertionError("QEMU was started")

    monkeypatch.setattr(qemu, "_probe", started)
    monkeypatch.setattr(qemu, "qemu_version", started)
    assert qemu_caps(QEMU, DRIVERS) == caps


def test_a_wrapper_script_is_asked_its_version_every_time(tmp_path, monkeypatch):
    """A script can start another QEMU without changing itself: its version is part of the key."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("FAKE_QEMU_SCRIPT", raising=False)
    asked = []
    real = qemu.qemu_version
    monkeypatch.setattr(qemu, "qemu_version", lambda binary: asked.append(binary) or real(binary))
    first = qemu_caps(str(FAKE_QEMU), DRIVERS)
    assert qemu_caps(str(FAKE_QEMU), DRIVERS) == first
    assert len(asked) == 2


def test_a_rewritten_binary_is_another_build(tmp_path):
    binary = tmp_path / "qemu-system-x86_64"
    binary.write_bytes(b"\x7fELF 7.2")
    before = os.stat(binary)
    identity = file_identity(str(binary))
    binary.write_bytes(b"\x7fELF 8.2")  # same size; the old mtime put back: the change time still tells
    os.utime(binary, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert file_identity(str(binary)) != identity
