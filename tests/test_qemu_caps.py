"""What a QEMU binary offers, probed once and cached per user."""

import json

from harness.qemu import qemu_caps
from tests.fakeqemu import FAKE_QEMU


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
        assert set(json.loads(cache_file.read_text())[key]) == {"has_action", "absent", "properties"}
