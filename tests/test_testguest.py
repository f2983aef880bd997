"""The pure parts of the test guest builder."""

import socket
import subprocess
import threading
from pathlib import Path

import pytest

from images.testguest import Cpio, GuestBuildError, build_guest_tool, module_depends, resolve_modules


def test_module_depends_reads_modinfo():
    data = b"\x7fELF...\x00license=GPL\x00depends=virtio,virtio_ring\x00vermagic=6.1\x00"
    assert module_depends(data) == ["virtio", "virtio_ring"]
    assert module_depends(b"\x00depends=\x00") == []
    assert module_depends(b"nothing here") == []


def write_module(tmp_path: Path, name: str, deps: str) -> Path:
    path = tmp_path / f"{name}.ko"
    path.write_bytes(b"\x00depends=" + deps.encode() + b"\x00")
    return path


def test_resolve_orders_dependencies_first(tmp_path):
    index = {
        "virtio_net": write_module(tmp_path, "virtio_net", "net_failover,virtio,virtio_ring"),
        "net_failover": write_module(tmp_path, "net_failover", "failover"),
        "failover": write_module(tmp_path, "failover", ""),
        "virtio": write_module(tmp_path, "virtio", ""),
        "virtio_ring": write_module(tmp_path, "virtio_ring", ""),
    }
    order = resolve_modules(index, ["virtio_net", "virtio"])
    assert order[-1] == "virtio_net"
    assert order.index("failover") < order.index("net_failover")
    assert len(order) == len(set(order)) == 5


def test_resolve_names_a_missing_module(tmp_path):
    index = {"a": write_module(tmp_path, "a", "b")}
    with pytest.raises(GuestBuildError, match="kernel module b"):
        resolve_modules(index, ["a"])


def parse_newc(data: bytes):
    """A small newc reader, independent of the writer, to check its output."""
    entries = {}
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, namesize = fields[1], fields[6], fields[11]
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode()
        body_start = name_start + namesize + (-(110 + namesize) % 4)
        body = data[body_start : body_start + filesize]
        pos = body_start + filesize + (-filesize % 4)
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, body)


def test_cpio_newc_round_trip():
    archive = Cpio()
    archive.dir("bin")
    archive.file("bin/busybox", b"\x7fELF" + bytes(range(7)), 0o755)
    archive.file("init", b"#!/bin/sh\n", 0o755)
    entries = parse_newc(archive.finish())
    assert entries["bin"][0] == 0o040755
    assert entries["bin/busybox"] == (0o100755, b"\x7fELF" + bytes(range(7)))
    assert entries["init"][1] == b"#!/bin/sh\n"


def test_init_script_speaks_the_protocol():
    init = (Path(__file__).parent.parent / "images" / "guest" / "init").read_text()
    for needle in ("AERO_VIRTIO_SELFTEST|START|version=1", "AERO_VIRTIO_SELFTEST|CONFIG|http_url=",
                   "TEST|virtio-blk|", "TEST|virtio-net|", "AERO_VIRTIO_SELFTEST|RESULT|",
                   "TEST|virtio-input-bind|", "TEST|virtio-input|", "TEST|virtio-net-udp|",
                   "TEST|virtio-snd|SKIP", "reason=pci_device_missing"):
        assert needle in init


@pytest.fixture(scope="module")
def guest_tool(tmp_path_factory):
    work = tmp_path_factory.mktemp("tool")
    path = work / "aero-guest-tool"
    path.write_bytes(build_guest_tool(work))
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def udp_port():
    """A UDP socket on 127.0.0.1 that echoes every datagram but the ones of 999 bytes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))

    def echo():
        while True:
            data, peer = sock.recvfrom(65536)
            if data == b"stop":
                return
            if len(data) != 999:
                sock.sendto(data, peer)

    thread = threading.Thread(target=echo)
    thread.start()
    yield sock.getsockname()[1]
    sock.sendto(b"stop", sock.getsockname())
    thread.join()
    sock.close()


def udp_echo(tool, *args):
    return subprocess.run([tool, "udp-echo", *args], capture_output=True, text=True, timeout=30)


def test_guest_tool_udp_echo(guest_tool, udp_port):
    proc = udp_echo(guest_tool, "127.0.0.1", str(udp_port), "32", "1400")
    assert (proc.returncode, proc.stdout) == (0, "1400 -\n")


def test_guest_tool_udp_echo_names_the_failing_size(guest_tool, udp_port):
    proc = udp_echo(guest_tool, "127.0.0.1", str(udp_port), "32", "999", "1400")
    assert (proc.returncode, proc.stdout) == (1, "999 timeout\n")


@pytest.mark.parametrize("args", [(), ("10.0.2.2",), ("not-an-address", "1", "32"), ("10.0.2.2", "1", "0")])
def test_guest_tool_usage(guest_tool, args):
    proc = udp_echo(guest_tool, *args)
    assert proc.returncode == 2
    assert "usage: aero-guest-tool udp-echo HOST PORT SIZE..." in proc.stderr
