"""--accel auto: what is learnt about this host's KVM, where it is kept, and the probe firmware."""

import shutil

import pytest

from harness import accel
from harness.accel import KvmBootError

QEMU = shutil.which("qemu-system-x86_64")
BOOT = "11111111-2222-3333-4444-555555555555"


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A host whose /dev/kvm opens, with a cache of its own; its key is what host_key would give on one boot."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(accel, "kvm_usable", lambda: True)
    key = {"value": f"{BOOT}|6.1.0|kvm:1:1|/usr/bin/qemu-system-x86_64|1:2|3|4|5|7.2.22"}
    monkeypatch.setattr(accel, "host_key", lambda qemu, version: key["value"])
    probes = []

    def probe(qemu, timeout=accel.PROBE_TIMEOUT, accel="kvm"):
        probes.append(qemu)
        return probe.answer

    probe.answer = True
    monkeypatch.setattr(accel, "probe", probe)
    return key, probes, probe


def test_explicit_accelerators_are_kept_as_given(host):
    assert accel.choose("qemu", "7.2.22", "tcg") == ("tcg", False)
    assert accel.choose("qemu", "7.2.22", "kvm") == ("kvm", False)  # never falls back
    assert host[1] == []


def test_no_usable_dev_kvm_is_tcg_without_a_probe(host, monkeypatch):
    monkeypatch.setattr(accel, "kvm_usable", lambda: False)
    assert accel.choose("qemu", "7.2.22", "auto") == ("tcg", False)
    assert host[1] == []


def test_a_probe_answer_is_remembered_for_this_key_only(host):
    key, probes, probe = host
    probe.answer = False
    assert accel.choose("qemu", "7.2.22", "auto") == ("tcg", False)
    assert accel.choose("qemu", "7.2.22", "auto") == ("tcg", False)
    assert len(probes) == 1  # the second run asked nobody
    assert accel.settled("qemu", "7.2.22", "auto") == "tcg"
    key["value"] = key["value"].replace("7.2.22", "7.2.23")  # another QEMU: asked again
    probe.answer = True
    assert accel.settled("qemu", "7.2.23", "auto") is None
    assert accel.choose("qemu", "7.2.23", "auto") == ("kvm", True)  # the run's own fallback stays armed
    assert len(probes) == 2


def test_an_inconclusive_probe_tries_kvm_and_is_not_remembered(host):
    _, probes, probe = host
    probe.answer = None
    assert accel.choose("qemu", "7.2.22", "auto") == ("kvm", True)
    assert accel.choose("qemu", "7.2.22", "auto") == ("kvm", True)
    assert len(probes) == 2


def test_a_guest_that_kvm_cannot_boot_falls_back_and_is_remembered(host):
    _, probes, _ = host
    tried = []

    def attempt(accel_name, may_fall_back):
        tried.append((accel_name, may_fall_back))
        if accel_name == "kvm":
            raise KvmBootError()
        return "verdict"

    fell_back = []
    assert accel.with_accel_fallback("qemu", "7.2.22", "auto", attempt, lambda: fell_back.append(1)) == "verdict"
    assert tried == [("kvm", True), ("tcg", False)] and fell_back == [1]
    tried.clear()
    assert accel.with_accel_fallback("qemu", "7.2.22", "auto", attempt, lambda: fell_back.append(1)) == "verdict"
    assert tried == [("tcg", False)] and len(probes) == 1  # learnt: no probe, no KVM boot


def test_a_new_boot_forgets_the_old_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    accel.remember(f"{BOOT}|a", False, "test")
    accel.remember(f"{BOOT}|b", True, "test")
    assert accel.known(f"{BOOT}|a") is False and accel.known(f"{BOOT}|b") is True
    accel.remember("another-boot|a", True, "test")
    assert accel.known(f"{BOOT}|a") is None and accel.known("another-boot|a") is True
    assert accel.known(None) is None


def test_the_key_names_boot_kernel_kvm_and_qemu(tmp_path):
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_bytes(b"\x7fELF")
    key = accel.host_key(str(fake), "7.2.22")
    if key is None:
        pytest.skip("no boot id or /dev/kvm here")
    boot_id = open("/proc/sys/kernel/random/boot_id").read().strip()
    assert key.startswith(boot_id + "|") and key.endswith("|7.2.22") and str(fake) in key
    fake.write_bytes(b"\x7fELF, upgraded")
    assert accel.host_key(str(fake), "7.2.22") != key


@pytest.mark.skipif(QEMU is None, reason="QEMU is not installed")
def test_the_probe_firmware_runs_where_the_accelerator_works():
    """Under TCG, which runs any code, the firmware reaches its exit: KVM that can run it answers the same."""
    assert accel.probe(QEMU, timeout=30, accel="tcg") is True


def test_the_probe_firmware_fits_its_rom():
    image = accel.probe_firmware()
    assert len(image) == 0x10000
    assert image[0xFFF0:0xFFF5] == bytes.fromhex("ea000000f0")  # the reset vector jumps to f000:0000


def _qemu_saying(tmp_path, text, stay_up):
    script = tmp_path / "qemu-system-x86_64"
    script.write_text(f"#!/bin/sh\necho '{text}' >&2\n" + ("sleep 30\n" if stay_up else "exit 1\n"))
    script.chmod(0o755)
    return str(script)


def test_a_kvm_that_stops_guest_code_is_broken(tmp_path):
    qemu = _qemu_saying(tmp_path, "KVM internal error. Suberror: 1", stay_up=True)
    assert accel.probe(qemu, timeout=10) is False


@pytest.mark.parametrize("text", [
    "ioctl(KVM_CREATE_VM) failed: 16 Device or resource busy",  # another hypervisor holds VT-x for now
    "qemu-system-x86_64: failed to initialize kvm: Cannot allocate memory",
])
def test_a_kvm_that_cannot_start_a_vm_now_is_not_judged(tmp_path, text):
    """Not remembered as broken: the same KVM may start a VM a minute later."""
    assert accel.probe(_qemu_saying(tmp_path, text, stay_up=False), timeout=10) is None
