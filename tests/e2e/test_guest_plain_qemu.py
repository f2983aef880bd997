"""The test guest booted by plain qemu-system-x86_64 (no harness) beside the host services.

This proves the guest on its own: it boots from the virtio-blk disk through
SeaBIOS and syslinux, runs its selftest at boot and writes the protocol's lines
to COM1. ``poweroff=1`` makes it power the VM off after RESULT so QEMU exits.
"""

import subprocess

import pytest

from harness.hostsvc import HostServices
from tests.e2e.conftest import QEMU

# Fixed test ports sit below Linux's ephemeral range (32768-60999), where an outgoing
# connection could be holding them.

EXPECTED_PASS = [
    b"AERO_VIRTIO_SELFTEST|START|version=1\r\n",
    b"AERO_VIRTIO_SELFTEST|CONFIG|http_url=http://10.0.2.2:27080/aero-virtio-selftest|"
    b"http_url_large=http://10.0.2.2:27080/aero-virtio-selftest-large|udp_port=27081|",
    b"AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS|write_ok=1|write_bytes=4194304|flush_ok=1|read_ok=1|read_bytes=4194304\r\n",
    b"AERO_VIRTIO_SELFTEST|TEST|virtio-net|PASS|large_ok=1|large_bytes=1048576|"
    b"large_fnv1a64=0x8505ae4435522325|upload_ok=1|upload_bytes=1048576\r\n",
    b"AERO_VIRTIO_SELFTEST|RESULT|PASS\r\n",
]


def boot(guest_image, tmp_path, scenario):
    serial = tmp_path / "serial.log"
    argv = [
        QEMU, "-accel", "tcg", "-m", "512", "-nodefaults", "-display", "none", "-no-reboot",
        "-drive", f"file={guest_image},if=none,id=d0,format=qcow2,snapshot=on",
        "-device", "virtio-blk-pci,drive=d0",
        "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0",
        "-chardev", f"file,id=c0,path={serial}", "-serial", "chardev:c0",
        "-fw_cfg", "name=opt/aero/scenario,string=" + scenario,
        "-fw_cfg", "name=opt/aero/poweroff,string=1",
        "-fw_cfg", "name=opt/aero/http_url,string=http://10.0.2.2:27080/aero-virtio-selftest",
        "-fw_cfg", "name=opt/aero/udp_port,string=27081",
    ]
    with HostServices(27080, 27081, "/aero-virtio-selftest") as services:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
        requests = services.requests
    assert proc.returncode == 0, proc.stderr
    return serial.read_bytes(), requests


def test_pass_scenario_lines(guest_image, tmp_path):
    serial, requests = boot(guest_image, tmp_path, "pass")
    position = 0
    for expected in EXPECTED_PASS:
        found = serial.find(expected, position)
        assert found >= 0, f"{expected!r} missing or out of order in:\n{serial.decode(errors='replace')}"
        position = found + len(expected)
    assert [(r.method, r.path, r.status) for r in requests] == [
        ("GET", "/aero-virtio-selftest", 200),
        ("GET", "/aero-virtio-selftest-large", 200),
        ("POST", "/aero-virtio-selftest-large", 200),
    ]


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
