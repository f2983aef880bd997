"""Device profiles under real QEMU with the test guest, which checks the PCI functions the Aero
INFs match (vendor, device, revision, from sysfs) and reports interrupt modes as Linux set them up.
"""

from __future__ import annotations

import json
import re

from tests.e2e.conftest import scenario

TCG = ["--accel", "tcg"]


def test_contract_v1_devices_pass_and_preflight_saw_them(selftest):
    run = selftest(*TCG)
    assert run.code == 0, run.stdout + run.stderr
    result = run.result
    assert result["qemu"]["profile"] == "contract-v1"
    pci = " ".join(result["qemu"]["pci"])
    for qdev, dev in (("aero_virtio_blk0", "1042"), ("aero_virtio_net0", "1041"), ("aero_virtio_kbd0", "1052"),
                      ("aero_virtio_mouse0", "1052")):
        assert re.search(rf"{qdev} at \S+: 1af4:{dev} subsystem 1af4:1100", pci), pci
    tests = {t["name"]: t["status"] for t in result["tests"]}
    assert tests["virtio-input"] == tests["virtio-input-bind"] == tests["virtio-net-udp"] == "PASS"
    assert result["required"][:5] == ["virtio-blk", "virtio-input", "virtio-input-bind", "virtio-net",
                                      "virtio-net-udp"]


def test_a_current_guest_on_transitional_devices_finds_no_pci_function(selftest):
    run = selftest(*TCG, "--virtio-transitional")
    assert run.code == 1 and "FAIL: VIRTIO_BLK_FAILED: " in run.stdout and "pci_device_missing" in run.stdout
    # It failed fast: at the first required test that failed, not at RESULT.
    assert "RESULT" not in run.result["detail"]


def test_an_early_guest_passes_on_transitional_devices_only(selftest):
    early = selftest(*TCG, "--virtio-transitional", *scenario("early"))
    assert early.code == 0, early.stdout + early.stderr
    assert [t["name"] for t in early.result["tests"]] == ["virtio-blk", "virtio-net"]
    argv = " ".join(early.result["qemu"]["argv"])
    assert "disable-legacy" not in argv and "virtio-keyboard-pci" not in argv
    current = selftest(*TCG, *scenario("early"))
    assert current.code == 1 and "FAIL: MISSING_VIRTIO_INPUT: " in current.stdout


def test_a_device_qemu_gives_otherwise_fails_preflight_before_boot(selftest):
    # -set changes a -device after the harness built it: the NIC becomes transitional (1af4:1000).
    run = selftest(*TCG, "--qemu-arg=-set", "--qemu-arg=device.aero_virtio_net0.disable-legacy=off")
    assert run.code == 5, run.stdout + run.stderr
    assert "FAIL: QEMU_PCI_PREFLIGHT_FAILED: " in run.stdout
    assert "aero_virtio_net0 at 00:04.0: 1af4:1000" in run.stdout and "expected 1af4:1041" in run.stdout
    assert (run.artifacts / "serial.log").read_bytes() == b""  # the guest never ran


def test_intx_when_msix_is_disabled(selftest):
    run = selftest(*TCG, "--virtio-disable-msix", "--require-intx")
    assert run.code == 0, run.stdout + run.stderr
    assert all("vectors=0" in a for a in run.result["qemu"]["argv"] if a.startswith(("virtio-blk", "virtio-net")))
    wrong = selftest(*TCG, "--require-intx")
    assert wrong.code == 1 and "FAIL: IRQ_MODE_MISMATCH: virtio-blk expected=intx got=msix" in wrong.stdout


def test_msix_vectors_and_msix_required(selftest):
    run = selftest(*TCG, "--virtio-net-vectors", "3", "--require-virtio-net-msix", "--require-virtio-blk-msix",
                   "--require-msi")
    assert run.code == 0, run.stdout + run.stderr
    net = next(a for a in run.result["qemu"]["argv"] if a.startswith("virtio-net-pci"))
    assert net.endswith(",vectors=3")


def test_tablet_and_http_log(selftest, tmp_path):
    log = tmp_path / "http.log"
    run = selftest(*TCG, "--with-virtio-tablet", "--http-log", str(log))
    assert run.code == 0, run.stdout + run.stderr
    assert any("aero_virtio_tablet0" in f for f in run.result["qemu"]["pci"])
    tests = {t["name"]: t["status"] for t in run.result["tests"]}
    assert tests["virtio-input-tablet"] == "PASS"
    lines = log.read_text().splitlines()
    assert any('"GET /aero-virtio-selftest HTTP/1.1" 200 3' in line for line in lines), lines
    assert any('"POST /aero-virtio-selftest-large HTTP/1.1" 200 3' in line for line in lines), lines


def test_sound_needs_qemu_8_2(selftest):
    run = selftest(*TCG, "--with-virtio-snd")
    version = run.result["qemu"].get("version", "")
    if tuple(int(x) for x in version.split(".")[:2]) < (8, 2):
        assert run.code == 5 and "has no virtio-sound-pci" in run.stdout and "QEMU 8.2" in run.stderr
    else:  # the test guest's kernel has no virtio-snd driver: the required sound test is not PASS
        assert run.code == 1 and "FAIL: VIRTIO_SND_" in run.stdout
        assert json.loads((run.artifacts / "result.json").read_text())["qemu"]["argv"].count("-audiodev") == 1
