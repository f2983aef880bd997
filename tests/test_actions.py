"""The host answers the guest's READY lines: the real harness against the fake QEMU.

The fake (tests/fakeqemu) is a real executable speaking QMP; its scripted guest
prints READY and answers a host action with its PASS line (a "reaction"), so
each handshake is proven in about a second. The same handshakes run against
real QEMU and the test guest in tests/e2e/test_device_tests.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from harness.actions import resize_plan
from harness.markers import parse
from tests.fakeqemu import FAKE_QEMU, records, script_env

pytestmark = pytest.mark.fake

ROOT = Path(__file__).resolve().parents[1]
P = "AERO_VIRTIO_SELFTEST|"
CONTRACT_V1 = [
    f"{P}TEST|virtio-blk|PASS|write_ok=1", f"{P}TEST|virtio-input|PASS|devices=2",
    f"{P}TEST|virtio-input-bind|PASS|devices=2", f"{P}TEST|virtio-snd|SKIP|device_missing",
    f"{P}TEST|virtio-snd-capture|SKIP|device_missing", f"{P}TEST|virtio-snd-duplex|SKIP|device_missing",
    f"{P}TEST|virtio-net-udp|PASS|bytes=1400", f"{P}TEST|virtio-net|PASS|large_ok=1",
]
RESULT = f"{P}RESULT|PASS"


def steps(*lines: str, gap: float = 0.02) -> List[Dict[str, object]]:
    return [{"after": gap, "write": line + "\r\n"} for line in lines]


def guest(*middle: str, result: bool = True) -> List[Dict[str, object]]:
    """A current guest: START, CONFIG, the contract-v1 tests, ``middle``, RESULT."""
    head = [f"{P}START|version=1", f"{P}CONFIG|http_url=http://10.0.2.2:27480/aero-virtio-selftest|udp_port=27481"]
    return steps(*head, *CONTRACT_V1, *middle, *([RESULT] if result else []))


@pytest.fixture(scope="module")
def tiny_disk(tmp_path_factory) -> Path:
    disk = tmp_path_factory.mktemp("disk") / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    return disk


class Ran:
    def __init__(self, proc: subprocess.CompletedProcess, artifacts: Path, record: Path) -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr
        self.artifacts = artifacts
        self.record = record

    @property
    def result(self) -> dict:
        return json.loads((self.artifacts / "result.json").read_text())

    def commands(self, name: Optional[str] = None) -> List[dict]:
        return [r for r in records(self.record) if name is None or r["command"] == name]


def free_ports() -> Tuple[int, int]:
    """A TCP and a UDP port nobody holds now (others on this machine run tests too)."""
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        udp.bind(("127.0.0.1", 0))
        return tcp.getsockname()[1], udp.getsockname()[1]


def run(tmp_path: Path, disk: Path, *args: str, timeout: str = "30", **script: object) -> Ran:
    http, udp = free_ports()
    # The scripted guest's CONFIG names the ports this run serves.
    script = json.loads(json.dumps(script).replace(":27480/", f":{http}/").replace("udp_port=27481", f"udp_port={udp}"))
    env = script_env(tmp_path, **script)
    artifacts = tmp_path / "a"
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "selftest", "--qemu-system", str(FAKE_QEMU), "--disk", str(disk),
         "--accel", "tcg", "--timeout", timeout, "--http-port", str(http), "--udp-port", str(udp),
         "--artifacts", str(artifacts), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return Ran(proc, artifacts, Path(env["FAKE_QEMU_RECORD"]))


def test_a_plain_current_guest_passes(tmp_path, tiny_disk):
    ran = run(tmp_path, tiny_disk, serial=guest())
    assert ran.code == 0, ran.out + ran.err
    assert ran.result["host_actions"] == []


def test_input_events_are_sent_until_the_guest_answers(tmp_path, tiny_disk):
    ready = f"{P}TEST|virtio-input-events|READY"
    answer = {"command": "input-send-event", "match": {"events": [{"type": "btn", "data": {"down": False}}]},
              "write": f"{P}TEST|virtio-input-events|PASS|kbd_reports=2|mouse_reports=3\r\n" + RESULT + "\r\n",
              "after": 0.7, "once": True}
    ran = run(tmp_path, tiny_disk, "--with-input-events", serial=guest(ready, result=False), reactions=[answer])
    assert ran.code == 0, ran.out + ran.err
    sent = ran.commands("input-send-event")
    # Stock QEMU refuses a virtio input device's id: the first send to each names it, the rest go without.
    named = [s["arguments"]["device"] for s in sent if "device" in s["arguments"]]
    assert named == ["aero_virtio_kbd0", "aero_virtio_mouse0"]
    events = [e for s in sent for e in s["arguments"]["events"]]
    assert {"type": "key", "data": {"down": True, "key": {"type": "qcode", "data": "a"}}} in events
    assert {"type": "rel", "data": {"axis": "x", "value": 10}} in events
    # Resent every 0.5 s while the guest had not answered: more than one round of five commands.
    assert len(sent) > 6
    actions = [a["action"] for a in ran.result["host_actions"]]
    assert "virtio-input-events: sending input" in actions
    assert "virtio-input-events: the guest answered" in actions


def test_link_flap_goes_down_then_up_after_three_seconds(tmp_path, tiny_disk):
    ready = f"{P}TEST|virtio-net-link-flap|READY|adapter=eth0"
    answer = {"command": "set_link", "match": {"up": True},
              "write": f"{P}TEST|virtio-net-link-flap|PASS|down_ms=3000\r\n{RESULT}\r\n", "after": 0.1}
    ran = run(tmp_path, tiny_disk, "--with-net-link-flap", serial=guest(ready, result=False), reactions=[answer])
    assert ran.code == 0, ran.out + ran.err
    links = ran.commands("set_link")
    assert [c["arguments"] for c in links] == [{"name": "aero_virtio_net0", "up": False},
                                              {"name": "aero_virtio_net0", "up": True}]
    assert 2.9 < links[1]["t"] - links[0]["t"] < 3.6


def test_blk_resize_falls_back_to_block_resize(tmp_path, tiny_disk):
    ready = f"{P}TEST|virtio-blk-resize|READY|disk=0|old_bytes=16777216"
    answer = {"command": "block_resize", "write": f"{P}TEST|virtio-blk-resize|PASS|new_bytes=83886080\r\n{RESULT}\r\n"}
    ran = run(tmp_path, tiny_disk, "--with-blk-resize", serial=guest(ready, result=False), reactions=[answer])
    assert ran.code == 0, ran.out + ran.err
    assert [c["command"] for c in ran.commands() if "resize" in c["command"]] == ["blockdev-resize", "block_resize"]
    assert ran.commands("block_resize")[0]["arguments"] == {"device": "drive0", "size": 16777216 + 64 * 2**20}


def test_ready_is_answered_without_a_flag(tmp_path, tiny_disk):
    """READY is a request: the harness answers it whenever the device is attached."""
    ready = f"{P}TEST|virtio-input-media-keys|READY"
    answer = {"command": "input-send-event", "write": f"{P}TEST|virtio-input-media-keys|PASS\r\n{RESULT}\r\n",
              "once": True, "after": 0.2}
    ran = run(tmp_path, tiny_disk, serial=guest(ready, result=False), reactions=[answer])
    assert ran.code == 0, ran.out + ran.err
    keys = [e["data"]["key"]["data"] for c in ran.commands("input-send-event") for e in c["arguments"]["events"]]
    assert set(keys) == {"volumeup"}


def test_required_test_skipped_as_flag_not_set_names_the_provisioning_switch(tmp_path, tiny_disk):
    skip = f"{P}TEST|virtio-net-link-flap|SKIP|flag_not_set"
    ran = run(tmp_path, tiny_disk, "--with-net-link-flap", serial=guest(skip))
    assert ran.code == 1
    assert "FAIL: VIRTIO_NET_LINK_FLAP_SKIPPED: " in ran.out and "--test-net-link-flap" in ran.out


def test_required_test_that_never_comes_fails_20s_after_its_device(tmp_path, tiny_disk):
    ran = run(tmp_path, tiny_disk, "--with-blk-reset", timeout="60", serial=guest(result=False))
    assert ran.code == 1 and "FAIL: MISSING_VIRTIO_BLK_RESET: " in ran.out, ran.out
    assert "within 20 s of virtio-blk" in ran.out and "--test-blk-reset" in ran.out


def test_a_refused_host_action_fails_with_its_token(tmp_path, tiny_disk):
    ready = f"{P}TEST|virtio-blk-resize|READY|disk=0|old_bytes=0x1000000"
    # A QEMU that has neither resize command.
    ran = run(tmp_path, tiny_disk, serial=guest(ready, result=False), pci_override={},
              blocked_commands=["block_resize"])
    assert ran.code == 1 and "FAIL: QMP_BLK_RESIZE_FAILED: " in ran.out, ran.out + ran.err


def test_resize_plan_rounds_up_to_512_bytes():
    ready = parse(f"{P}TEST|virtio-blk-resize|READY|disk=0|old_bytes=1000")
    assert resize_plan(ready, 1).new_bytes == 1048576 + 1024
    assert resize_plan(parse(f"{P}TEST|virtio-blk-resize|READY|old_bytes=0x200"), 64).old_bytes == 512


SOUND = [f"{P}TEST|virtio-snd|PASS|frames=48000", f"{P}TEST|virtio-snd-capture|PASS|frames=48000",
         f"{P}TEST|virtio-snd-duplex|PASS|frames=48000"]


def sound_guest() -> List[Dict[str, object]]:
    head = [f"{P}START|version=1", f"{P}CONFIG|http_url=http://10.0.2.2:27480/aero-virtio-selftest|udp_port=27481"]
    base = [line for line in CONTRACT_V1 if "virtio-snd" not in line]
    return steps(*head, *base, *SOUND, RESULT)


@pytest.mark.parametrize("audio, code, token", [("tone", 0, "PASS"), ("silence", 1, "VIRTIO_SND_WAV_SILENT")])
def test_the_guests_playback_must_be_heard(tmp_path, tiny_disk, audio, code, token):
    ran = run(tmp_path, tiny_disk, "--with-virtio-snd", version="10.0.2", audio=audio, serial=sound_guest())
    assert ran.code == code, ran.out + ran.err
    assert ran.result["token"] == token
    argv = ran.result["qemu"]["argv"]
    # The none backend (wav has no capture side) and the playback recorded by wavcapture, started
    # before the guest runs.
    assert "none,id=snd0" in argv
    assert any(a.startswith("virtio-sound-pci,audiodev=snd0,id=aero_virtio_snd0,disable-legacy=on") for a in argv)
    hmp = ran.commands("human-monitor-command")
    wav_path = ran.artifacts / "virtio-snd.wav"
    assert [c["arguments"]["command-line"] for c in hmp] == [f'wavcapture "{wav_path}" snd0 48000 16 2']
    assert hmp[0]["t"] < ran.commands("cont")[0]["t"]
    assert (ran.artifacts / "virtio-snd.wav").stat().st_size > 44


def test_a_recording_qemu_refuses_is_a_host_error(tmp_path, tiny_disk):
    ran = run(tmp_path, tiny_disk, "--with-virtio-snd", version="10.0.2", serial=sound_guest(),
              blocked_commands=["human-monitor-command"])
    assert ran.code == 5 and "FAIL: HOST_ERROR: QEMU could not start recording the sound (wavcapture " in ran.out
    assert ran.commands("cont") == []


def test_sound_on_a_qemu_before_8_2_stops_before_boot(tmp_path, tiny_disk):
    ran = run(tmp_path, tiny_disk, "--with-virtio-snd", version="7.2.22", serial=sound_guest())
    assert ran.code == 5 and "FAIL: QEMU_PCI_PREFLIGHT_FAILED: " in ran.out
    assert "virtio-sound-pci arrived in QEMU 8.2" in ran.err


def test_tablet_events_attach_the_tablet_and_move_it(tmp_path, tiny_disk):
    ready = f"{P}TEST|virtio-input-tablet-events|READY"
    answer = {"command": "input-send-event", "match": {"events": [{"type": "btn", "data": {"down": False}}]},
              "write": f"{P}TEST|virtio-input-tablet-events|PASS|last_x=10000|last_y=20000\r\n{RESULT}\r\n",
              "once": True}
    ran = run(tmp_path, tiny_disk, "--with-input-tablet-events", serial=guest(ready, result=False),
              reactions=[answer])
    assert ran.code == 0, ran.out + ran.err
    assert any("aero_virtio_tablet0" in f for f in ran.result["qemu"]["pci"])
    events = [e for c in ran.commands("input-send-event") for e in c["arguments"]["events"]]
    assert {"type": "abs", "data": {"axis": "x", "value": 10000}} in events
    assert {"type": "abs", "data": {"axis": "y", "value": 20000}} in events


def test_extended_input_events_require_the_sub_tests(tmp_path, tiny_disk):
    ready = f"{P}TEST|virtio-input-events|READY"
    answer = {"command": "input-send-event", "match": {"events": [{"type": "btn", "data": {"button": "extra"}}]},
              "write": f"{P}TEST|virtio-input-events|PASS\r\n{P}TEST|virtio-input-events-modifiers|PASS\r\n"
                       f"{P}TEST|virtio-input-events-buttons|PASS\r\n{P}TEST|virtio-input-events-wheel|SKIP|"
                       f"flag_not_set\r\n{RESULT}\r\n", "once": True}
    ran = run(tmp_path, tiny_disk, "--with-input-events-extended", serial=guest(ready, result=False),
              reactions=[answer])
    assert ran.code == 1 and "FAIL: VIRTIO_INPUT_EVENTS_WHEEL_SKIPPED: " in ran.out, ran.out
    assert "--test-input-events-extended" in ran.out
    events = [e for c in ran.commands("input-send-event") for e in c["arguments"]["events"]]
    assert {"type": "rel", "data": {"axis": "wheel", "value": 1}} in events
    assert {"type": "key", "data": {"down": True, "key": {"type": "qcode", "data": "f1"}}} in events


def test_a_qmp_socket_bound_but_not_yet_listening_is_waited_for(tmp_path, tiny_disk):
    # QEMU binds its socket a moment before it listens: a connection then is refused, not a hung QEMU.
    ran = run(tmp_path, tiny_disk, serial=guest(), listen_delay=0.5)
    assert ran.code == 0, ran.out + ran.err
