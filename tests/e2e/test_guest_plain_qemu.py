"""The test guest booted by plain qemu-system-x86_64 (no harness) beside the host services.

This proves the guest on its own: it boots from the virtio-blk disk through
SeaBIOS and syslinux, runs its selftest at boot and writes the protocol's lines
to COM1. ``poweroff=1`` makes it power the VM off after RESULT so QEMU exits.
It is booted with the devices of Aero contract v1 (modern-only virtio-pci, as
a current Aero guest needs them) or with QEMU's transitional ones (early images).
"""

import subprocess

import pytest

from harness.hostsvc import HostServices
from tests.e2e.conftest import QEMU

# Fixed test ports sit below Linux's ephemeral range (32768-60999), where an outgoing
# connection could be holding them.
HTTP_PORT = 27680
UDP_PORT = 27681
URL = f"http://10.0.2.2:{HTTP_PORT}/aero-virtio-selftest"

CONTRACT_V1 = [
    "-device", "virtio-blk-pci,drive=drive0,disable-legacy=on,id=aero_virtio_blk0",
    "-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0,disable-legacy=on,id=aero_virtio_net0",
    "-device", "virtio-keyboard-pci,disable-legacy=on,id=aero_virtio_kbd0",
    "-device", "virtio-mouse-pci,disable-legacy=on,id=aero_virtio_mouse0",
]
TRANSITIONAL = [
    "-device", "virtio-blk-pci,drive=drive0",
    "-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0",
]

START_CONFIG = [
    b"AERO_VIRTIO_SELFTEST|START|version=1\r\n",
    f"AERO_VIRTIO_SELFTEST|CONFIG|http_url={URL}|http_url_large={URL}-large|udp_port={UDP_PORT}|".encode(),
]
BLK_PASS = (b"AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS|write_ok=1|write_bytes=4194304|flush_ok=1|read_ok=1|"
            b"read_bytes=4194304\r\n")
NET_PASS = (b"AERO_VIRTIO_SELFTEST|TEST|virtio-net|PASS|large_ok=1|large_bytes=1048576|"
            b"large_fnv1a64=0x8505ae4435522325|upload_ok=1|upload_bytes=1048576\r\n")

EXPECTED_PASS = [
    *START_CONFIG,
    BLK_PASS,
    b"virtio-blk-irq|INFO|mode=msix|messages=",
    b"AERO_VIRTIO_SELFTEST|TEST|virtio-blk-resize|SKIP|flag_not_set\r\n",
    b"AERO_VIRTIO_SELFTEST|TEST|virtio-blk-reset|SKIP|reason=flag_not_set\r\n",
    b"AERO_VIRTIO_SELFTEST|TEST|virtio-input-bind|PASS|service=virtio_input|"
    b"pnp_id=PCI\\VEN_1AF4&DEV_1052&SUBSYS_11001AF4&REV_01\\0000:00:",
    b"|devices=2|wrong_service=0|missing_service=0|problem=0\r\n",
    b"AERO_VIRTIO_SELFTEST|TEST|virtio-input|PASS|devices=2|keyboard_devices=1|consumer_devices=0|mouse_devices=1|"
    b"ambiguous_devices=0|unknown_devices=0|keyboard_collections=1|consumer_collections=0|mouse_collections=1|"
    b"tablet_devices=0|tablet_collections=0|reason=-|irq_mode=msix|irq_message_count=",
    b"AERO_VIRTIO_SELFTEST|TEST|virtio-input-tablet|SKIP|not_present|tablet_devices=0|tablet_collections=0\r\n",
    b"virtio-input-irq|INFO|mode=msix|messages=",
    b"AERO_VIRTIO_SELFTEST|TEST|virtio-input-events|SKIP|flag_not_set\r\n",
    b"AERO_VIRTIO_SELFTEST|TEST|virtio-input-media-keys|SKIP|flag_not_set\r\n",
    b"AERO_VIRTIO_SELFTEST|TEST|virtio-input-tablet-events|SKIP|flag_not_set\r\n",
    b"AERO_VIRTIO_SELFTEST|TEST|virtio-snd|SKIP|irq_mode=none|irq_message_count=0|irq_reason=device_missing\r\n",
    b"AERO_VIRTIO_SELFTEST|TEST|virtio-snd-capture|SKIP|flag_not_set\r\n",
    b"AERO_VIRTIO_SELFTEST|TEST|virtio-snd-duplex|SKIP|flag_not_set\r\n",
    b"AERO_VIRTIO_SELFTEST|TEST|virtio-net-udp|PASS|bytes=1400|small_bytes=32|mtu_bytes=1400|reason=-|wsa=0\r\n",
    NET_PASS,
    b"AERO_VIRTIO_SELFTEST|TEST|virtio-net-link-flap|SKIP|flag_not_set\r\n",
    b"virtio-net-irq|INFO|mode=msix|messages=",
    b"AERO_VIRTIO_SELFTEST|RESULT|PASS\r\n",
]

HTTP_REQUESTS = [
    ("GET", "/aero-virtio-selftest", 200),
    ("GET", "/aero-virtio-selftest-large", 200),
    ("POST", "/aero-virtio-selftest-large", 200),
]


def boot(guest_image, tmp_path, scenario, devices=CONTRACT_V1):
    serial = tmp_path / "serial.log"
    argv = [
        QEMU, "-accel", "tcg,thread=single", "-m", "512", "-nodefaults", "-display", "none", "-no-reboot",
        "-drive", f"file={guest_image},if=none,id=drive0,format=qcow2,snapshot=on",
        *devices,
        "-chardev", f"file,id=c0,path={serial}", "-serial", "chardev:c0",
        "-fw_cfg", "name=opt/aero/scenario,string=" + scenario,
        "-fw_cfg", "name=opt/aero/poweroff,string=1",
        "-fw_cfg", f"name=opt/aero/http_url,string={URL}",
        "-fw_cfg", f"name=opt/aero/udp_port,string={UDP_PORT}",
    ]
    with HostServices(HTTP_PORT, UDP_PORT, "/aero-virtio-selftest") as services:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
        requests = services.requests
    assert proc.returncode == 0, proc.stderr
    return serial.read_bytes(), requests


def assert_in_order(serial, expected):
    position = 0
    for needle in expected:
        found = serial.find(needle, position)
        assert found >= 0, f"{needle!r} missing or out of order in:\n{serial.decode(errors='replace')}"
        position = found + len(needle)


def markers(serial):
    """The marker lines, without their line ends."""
    return [line.rstrip(b"\r") for line in serial.split(b"\n") if line.startswith(b"AERO_VIRTIO_SELFTEST|")]


def test_pass_scenario_lines(guest_image, tmp_path):
    serial, requests = boot(guest_image, tmp_path, "pass")
    assert_in_order(serial, EXPECTED_PASS)
    assert [(r.method, r.path, r.status) for r in requests] == HTTP_REQUESTS
    assert b"|FAIL" not in b"\n".join(markers(serial))


def test_pass_scenario_under_transitional_devices_misses_the_pci_functions(guest_image, tmp_path):
    serial, requests = boot(guest_image, tmp_path, "pass", TRANSITIONAL)
    assert_in_order(serial, [
        *START_CONFIG,
        b"AERO_VIRTIO_SELFTEST|TEST|virtio-blk|FAIL|reason=pci_device_missing\r\n",
        b"virtio-blk-irq|WARN|reason=device_missing\r\n",
        b"AERO_VIRTIO_SELFTEST|TEST|virtio-input-bind|FAIL|reason=device_missing|expected=virtio_input|"
        b"actual=<missing>|pnp_id=-|devices=0|",
        b"AERO_VIRTIO_SELFTEST|TEST|virtio-input|FAIL|devices=0|",
        b"|reason=pci_device_missing|irq_mode=none|irq_message_count=0|irq_reason=device_missing\r\n",
        b"AERO_VIRTIO_SELFTEST|TEST|virtio-net-udp|FAIL|bytes=0|small_bytes=0|mtu_bytes=0|"
        b"reason=pci_device_missing|wsa=0\r\n",
        b"AERO_VIRTIO_SELFTEST|TEST|virtio-net|FAIL|reason=pci_device_missing\r\n",
        b"AERO_VIRTIO_SELFTEST|RESULT|FAIL\r\n",
    ])
    assert requests == []


def test_early_scenario_under_transitional_devices(guest_image, tmp_path):
    serial, requests = boot(guest_image, tmp_path, "early", TRANSITIONAL)
    assert markers(serial) == [
        b"AERO_VIRTIO_SELFTEST|START|version=1",
        f"AERO_VIRTIO_SELFTEST|CONFIG|http_url={URL}|http_url_large={URL}-large|udp_port={UDP_PORT}|"
        "dns_host=host.lan|blk_root=|expect_blk_msi=0|require_net_msix=0|require_input_msix=0|require_snd_msix=0|"
        "test_net_link_flap=0|scenario=early".encode(),
        BLK_PASS.rstrip(b"\r\n"),
        NET_PASS.rstrip(b"\r\n"),
        b"AERO_VIRTIO_SELFTEST|RESULT|PASS",
    ]
    assert [(r.method, r.path, r.status) for r in requests] == HTTP_REQUESTS


def test_tablet_and_intx(guest_image, tmp_path):
    # vectors=0 takes MSI-X away from the disk: INTx.
    devices = [arg + ",vectors=0" if arg.startswith("virtio-blk-pci,") else arg for arg in CONTRACT_V1]
    devices += ["-device", "virtio-tablet-pci,disable-legacy=on,id=aero_virtio_tablet0"]
    serial, _ = boot(guest_image, tmp_path, "pass", devices)
    assert_in_order(serial, [
        BLK_PASS,
        b"virtio-blk-irq|INFO|mode=intx\r\n",
        b"AERO_VIRTIO_SELFTEST|TEST|virtio-input|PASS|devices=3|",
        b"|tablet_devices=1|tablet_collections=1|reason=-|",
        b"AERO_VIRTIO_SELFTEST|TEST|virtio-input-tablet|PASS|tablet_devices=1|tablet_collections=1\r\n",
        b"AERO_VIRTIO_SELFTEST|RESULT|PASS\r\n",
    ])


@pytest.mark.parametrize(
    "scenario, line",
    [
        ("fail", b"AERO_VIRTIO_SELFTEST|TEST|virtio-net|FAIL|reason=http_get_failed\r\n"),
        ("fail-blk", b"AERO_VIRTIO_SELFTEST|TEST|virtio-blk|FAIL|write_ok=1|write_bytes=4194304|flush_ok=1|"),
    ],
)
def test_failing_scenario_lines(guest_image, tmp_path, scenario, line):
    serial, _ = boot(guest_image, tmp_path, scenario)
    assert line in serial
    assert b"AERO_VIRTIO_SELFTEST|RESULT|FAIL\r\n" in serial
    assert b"|RESULT|PASS" not in serial
