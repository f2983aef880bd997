"""Sound, proven with a real driver: the sound guest's Linux virtio-snd plays into real QEMU.

The sound guest (``build-test-guest --sound``) boots a kernel with Linux's virtio_snd driver,
plays a 1 s tone through the device's ALSA playback PCM, records from its capture PCM, then
does both at once; QEMU records the playback and the harness must hear it. Its ``silent-snd``
scenario plays zeros with the same PASS lines, which only the host's WAV check can catch.
virtio-sound-pci arrived in QEMU 8.2: on an older QEMU (Debian 12's 7.2) the module is skipped.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import List

import pytest

from tests.e2e.conftest import QEMU, ROOT, HarnessRun, has_virtio_sound, qemu_pids, scenario, sha256

TCG = ["--accel", "tcg"]


@pytest.fixture(scope="module")
def sound_guest() -> Path:
    if not has_virtio_sound(QEMU):
        pytest.skip(f"{QEMU} has no virtio-sound-pci (QEMU 8.2 and later): the sound tests run on QEMU 10")
    sys.path.insert(0, str(ROOT))
    from images import testguest

    return testguest.ensure(variant=testguest.SOUND)


def free_ports() -> List[int]:
    """An HTTP and a UDP port nobody holds now, so that other runs on this machine need not wait for us."""
    ports = []
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    return ports


def run_sound(tmp_path: Path, guest: Path, *args: str):
    http, udp = free_ports()
    before = sha256(guest)
    artifacts = tmp_path / "run"
    finished = HarnessRun(["--disk", str(guest), "--with-virtio-snd", "--http-port", str(http), "--udp-port",
                           str(udp), "--timeout", "240", *TCG, *args], artifacts).finish()
    assert qemu_pids(str(artifacts)) == [], "a QEMU process was left behind"
    assert sha256(guest) == before, "the base image was written"
    return finished


def statuses(run) -> dict:
    return {t["name"]: t["status"] for t in run.result["tests"]}


def test_the_guests_tone_is_heard(tmp_path, sound_guest):
    run = run_sound(tmp_path, sound_guest)
    assert run.code == 0, run.stdout + run.stderr
    assert "PASS: AERO_VIRTIO_SELFTEST|RESULT|PASS" in run.stdout
    got = statuses(run)
    for test in ("virtio-snd", "virtio-snd-capture", "virtio-snd-duplex"):
        assert got[test] == "PASS", (test, got)
    fields = next(t for t in run.result["tests"] if t["name"] == "virtio-snd")["fields"]
    assert fields["frames"] == "48000" and fields["sound"] == "tone"
    assert "SUBSYS_11001AF4&REV_01" in fields["pnp_id"]  # the function Aero's INF matches, by revision
    heard = run.result["qemu"]["virtio_snd_wav"]
    assert "virtio-snd: the guest's playback was heard" in run.stderr
    assert float(heard.split("peak=")[1].split()[0]) > 5000, heard  # the tone's peak, about 10000


def test_a_guest_that_plays_silence_fails(tmp_path, sound_guest):
    run = run_sound(tmp_path, sound_guest, *scenario("silent-snd"))
    assert run.code == 1, run.stdout + run.stderr
    assert "FAIL: VIRTIO_SND_WAV_SILENT: the guest passed its sound tests but played silence" in run.stdout
    # The guest itself believes it played: only the host's recording can tell.
    got = statuses(run)
    assert got["virtio-snd"] == got["virtio-snd-duplex"] == "PASS"
    assert run.result["token"] == "VIRTIO_SND_WAV_SILENT"
