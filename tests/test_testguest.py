"""The pure parts of the test guest builder."""

import os
import socket
import struct
import subprocess
import threading
from pathlib import Path

import pytest

from images import testguest
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


# --- aero-guest-tool evdev, fed through FIFOs that stand in for evdev nodes.

EV_SYN, EV_KEY, EV_REL, EV_ABS = 0, 1, 2, 3
SYN_REPORT, SYN_DROPPED = 0, 3
KEY_A, KEY_VOLUMEUP, BTN_LEFT = 30, 115, 0x110
REL_X, REL_Y, REL_HWHEEL, REL_WHEEL = 0, 1, 6, 8
ABS_X, ABS_Y = 0, 1


def packet(*events):
    """One evdev packet: struct input_event records (64-bit), then SYN_REPORT."""
    return b"".join(struct.pack("llHHi", 0, 0, *e) for e in (*events, (EV_SYN, SYN_REPORT, 0)))


def evdev(tool, tmp_path, test, feeds, *extra):
    """Run ``evdev TEST`` on one FIFO per feed; write each feed once the tool says READY."""
    paths = []
    for i in range(len(feeds)):
        path = tmp_path / f"event{i}"
        os.mkfifo(path)
        paths.append(str(path))
    proc = subprocess.Popen([tool, "evdev", test, *paths, *extra], stdout=subprocess.PIPE, text=True)
    lines = [proc.stdout.readline()]
    writers = [os.open(path, os.O_WRONLY) for path in paths]
    try:
        for fd, feed in zip(writers, feeds):
            os.write(fd, feed)
        out, _ = proc.communicate(timeout=30)
    finally:
        for fd in writers:
            os.close(fd)
    return proc.returncode, [line.rstrip("\r\n") for line in lines + out.splitlines(True)]


T = "AERO_VIRTIO_SELFTEST|TEST|"
KEY_A_TAP = packet((EV_KEY, KEY_A, 1)) + packet((EV_KEY, KEY_A, 0))
MOUSE_BASE = packet((EV_REL, REL_X, 10), (EV_REL, REL_Y, 5)) + packet((EV_KEY, BTN_LEFT, 1)) + packet(
    (EV_KEY, BTN_LEFT, 0))


def test_guest_tool_evdev_input_events(guest_tool, tmp_path):
    code, lines = evdev(guest_tool, tmp_path, "input-events", [KEY_A_TAP, MOUSE_BASE])
    assert (code, lines) == (0, [
        f"{T}virtio-input-events|READY",
        f"{T}virtio-input-events|PASS|kbd_reports=2|mouse_reports=3|kbd_bad_reports=0|mouse_bad_reports=0|"
        "kbd_a_down=1|kbd_a_up=1|mouse_move=1|mouse_left_down=1|mouse_left_up=1",
        f"{T}virtio-input-wheel|SKIP|not_observed|wheel_total=0|hwheel_total=0",
        f"{T}virtio-input-events-modifiers|SKIP|flag_not_set",
        f"{T}virtio-input-events-buttons|SKIP|flag_not_set",
        f"{T}virtio-input-events-wheel|SKIP|flag_not_set",
    ])


def test_guest_tool_evdev_wheel_and_dropped_events(guest_tool, tmp_path):
    # SYN_DROPPED voids the rest of its packet and counts as a bad report.
    mouse = (packet((EV_REL, REL_WHEEL, 1), (EV_REL, REL_HWHEEL, -2)) + MOUSE_BASE
             + struct.pack("llHHi", 0, 0, EV_SYN, SYN_DROPPED, 0) + packet((EV_KEY, BTN_LEFT, 1)))
    code, lines = evdev(guest_tool, tmp_path, "input-events", [KEY_A_TAP, mouse], "wheel")
    assert code == 0
    assert lines[1].endswith("|PASS|kbd_reports=2|mouse_reports=4|kbd_bad_reports=0|mouse_bad_reports=1|"
                             "kbd_a_down=1|kbd_a_up=1|mouse_move=1|mouse_left_down=1|mouse_left_up=1")
    assert lines[2] == (f"{T}virtio-input-wheel|PASS|wheel_total=1|hwheel_total=-2|expected_wheel=1|"
                        "expected_hwheel=-2|wheel_events=1|hwheel_events=1")
    assert lines[5] == (f"{T}virtio-input-events-wheel|PASS|mouse_reports=4|mouse_bad_reports=1|wheel_total=1|"
                        "hwheel_total=-2|expected_wheel=1|expected_hwheel=-2|saw_wheel=1|saw_hwheel=1")


def test_guest_tool_evdev_unexpected_wheel_delta(guest_tool, tmp_path):
    mouse = packet((EV_REL, REL_WHEEL, 3), (EV_REL, REL_HWHEEL, -2)) + MOUSE_BASE
    code, lines = evdev(guest_tool, tmp_path, "input-events", [KEY_A_TAP, mouse])
    # Not asked for: the wheel's own line fails, the test passes (as in the real guest).
    assert code == 0
    assert lines[2] == (f"{T}virtio-input-wheel|FAIL|reason=unexpected_delta|wheel_total=3|hwheel_total=-2|"
                        "expected_wheel=1|expected_hwheel=-2|wheel_events=1|hwheel_events=1|"
                        "wheel_unexpected_last=3|hwheel_unexpected_last=0")


def test_guest_tool_evdev_media_keys(guest_tool, tmp_path):
    keys = packet((EV_KEY, KEY_A, 1)) + packet((EV_KEY, KEY_VOLUMEUP, 1)) + packet((EV_KEY, KEY_VOLUMEUP, 0))
    code, lines = evdev(guest_tool, tmp_path, "input-media-keys", [keys])
    assert (code, lines) == (0, [
        f"{T}virtio-input-media-keys|READY",
        f"{T}virtio-input-media-keys|PASS|reports=3|volume_up_down=1|volume_up_up=1",
    ])


def test_guest_tool_evdev_tablet(guest_tool, tmp_path):
    tablet = (packet((EV_ABS, ABS_X, 0), (EV_ABS, ABS_Y, 0)) + packet((EV_ABS, ABS_X, 10000), (EV_ABS, ABS_Y, 20001))
              + packet((EV_KEY, BTN_LEFT, 1)) + packet((EV_KEY, BTN_LEFT, 0)))
    code, lines = evdev(guest_tool, tmp_path, "input-tablet-events", [tablet])
    # A FIFO has no ABS range: the position is compared as sent, within 2.
    assert (code, lines) == (0, [
        f"{T}virtio-input-tablet-events|READY",
        f"{T}virtio-input-tablet-events|PASS|tablet_reports=4|move_target=1|left_down=1|left_up=1|last_x=10000|"
        "last_y=20001|last_left=0",
    ])


@pytest.mark.parametrize("args, code, line", [
    (["input-events", "-", "-"], 1, f"{T}virtio-input-events|FAIL|reason=missing_keyboard_device|err=1168|"),
    (["input-events", "/dev/null", "-"], 1, f"{T}virtio-input-events|FAIL|reason=missing_mouse_device|err=1168|"),
    (["input-media-keys", "/nonexistent"], 1, f"{T}virtio-input-media-keys|FAIL|reason=open_consumer_failed|err=2|"),
    (["input-tablet-events", "-"], 0, f"{T}virtio-input-tablet-events|SKIP|no_tablet_device"),
])
def test_guest_tool_evdev_without_devices(guest_tool, args, code, line):
    proc = subprocess.run([guest_tool, "evdev", *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == code
    assert proc.stdout.startswith(line)
    assert "READY" not in proc.stdout


@pytest.mark.parametrize("args", [(), ("input-events", "-"), ("input-events", "-", "-", "sideways"),
                                  ("input-media-keys",), ("bogus",)])
def test_guest_tool_evdev_usage(guest_tool, args):
    proc = subprocess.run([guest_tool, "evdev", *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "aero-guest-tool evdev input-events KEYBOARD MOUSE" in proc.stderr


# --- aero-guest-tool snd: the PCM ioctls need a real ALSA device (the sound guest's e2e test,
# tests/e2e/test_sound.py); here its arguments and its failures on what is not a PCM.

@pytest.mark.parametrize("args", [(), ("play", "/dev/null", "1"), ("play", "/dev/null", "0", "tone"),
                                  ("play", "/dev/null", "1", "noise"), ("capture", "/dev/null"),
                                  ("duplex", "/dev/null", "/dev/null", "1"), ("record", "/dev/null", "1")])
def test_guest_tool_snd_usage(guest_tool, args):
    proc = subprocess.run([guest_tool, "snd", *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "aero-guest-tool snd play PCM SECONDS tone|silence" in proc.stderr


@pytest.mark.parametrize("args, reason", [
    (["play", "/nonexistent/pcmC0D0p", "1", "tone"], "reason=playback_open_failed|err=2"),
    (["play", "/dev/null", "1", "silence"], "reason=playback_hw_params_failed|err=25"),
    (["capture", "/dev/null", "1"], "reason=capture_hw_params_failed|err=25"),
    (["duplex", "/dev/null", "/nonexistent", "1", "tone"], "reason=playback_hw_params_failed|err=25"),
])
def test_guest_tool_snd_names_what_failed(guest_tool, args, reason):
    proc = subprocess.run([guest_tool, "snd", *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stdout.startswith("frames=0|" if args[0] == "play" else ("method=alsa|frames=0|" if args[0] == "capture"
                                                                         else "frames=0|captured_frames=0|"))
    assert proc.stdout.rstrip("\n").endswith(reason) and "|rate=48000|channels=2|format=s16le|" in proc.stdout


def test_the_sound_guest_is_a_variant_of_its_own():
    assert testguest.SOUND.default_out.name == "test-guest-snd.qcow2"
    assert testguest.DEFAULT.default_out == testguest.DEFAULT_OUT
    assert "virtio_snd" in testguest.SOUND.modules and not testguest.DEFAULT.modules
    assert testguest.guest_inputs_digest(testguest.SOUND) != testguest.guest_inputs_digest(testguest.DEFAULT)
    init = (Path(__file__).parent.parent / "images" / "guest" / "init").read_text()
    for needle in ("TEST|virtio-snd|$status|", "TEST|virtio-snd-capture|$status|", "TEST|virtio-snd-duplex|$status|",
                   "silent-snd", "aero-guest-tool snd play"):
        assert needle in init
