"""The sound check: WAV files of every encoding QEMU or a user might give, loud and silent."""

import math
import struct

import pytest

from harness.wav import WavError, level

GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")


def wav(samples, bits=16, tag=1, channels=1, rate=48000, extensible=False, data_size=None):
    """A WAV file of ``samples`` in -1.0..1.0."""
    if tag == 3:
        code = "f" if bits == 32 else "d"
        body = b"".join(struct.pack("<" + code, s) for s in samples)
    elif bits == 8:
        body = bytes(int(128 + s * 127) for s in samples)
    elif bits == 24:
        body = b"".join(int(s * 8388607).to_bytes(3, "little", signed=True) for s in samples)
    else:
        scale = {16: 32767, 32: 2147483647}[bits]
        code = {16: "h", 32: "i"}[bits]
        body = b"".join(struct.pack("<" + code, int(s * scale)) for s in samples)
    block = channels * bits // 8
    fmt_tag = 0xFFFE if extensible else tag
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * block, block, bits)
    if extensible:
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + GUID_TAIL
    size = len(body) if data_size is None else data_size
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


TONE = [0.25 * math.sin(2 * math.pi * 440 * i / 48000) for i in range(4800)]
HISS = [0.001 * ((-1) ** i) for i in range(4800)]  # about 33 on the 16-bit scale: silence to the check


@pytest.mark.parametrize("bits, tag, extensible", [
    (8, 1, False), (16, 1, False), (24, 1, False), (32, 1, False), (32, 3, False), (64, 3, False),
    (16, 1, True), (32, 3, True),
])
def test_a_tone_is_heard_in_every_encoding(bits, tag, extensible):
    loud = level(wav(TONE, bits, tag, extensible=extensible))
    assert loud.audible(200, 50) and 8000 < loud.peak < 8300 and loud.frames == 4800
    if bits > 8:  # 8-bit quantisation alone is louder than the thresholds
        assert not level(wav(HISS, bits, tag, extensible=extensible)).audible(200, 50)


def test_silence_and_thresholds():
    silent = level(wav([0.0] * 1000))
    assert silent.peak == 0 and not silent.audible(200, 50)
    assert level(wav(HISS)).audible(20, 1000)  # a lower peak threshold hears the hiss


def test_a_wav_cut_short_by_a_killed_qemu_is_still_read():
    data = wav(TONE, data_size=0)
    assert level(data).audible(200, 50)
    assert level(wav(TONE, data_size=10**9)).frames == 4800


@pytest.mark.parametrize("data, words", [
    (b"not a wav", "RIFF"),
    (wav([], 16), "no audio data"),
    (wav(TONE, 16).replace(struct.pack("<HH", 2, 16), struct.pack("<HH", 2, 12), 1), "unsupported 12-bit"),
    (wav(TONE, 16, tag=2), "unsupported format tag 2"),
])
def test_unreadable_files_say_why(data, words):
    with pytest.raises(WavError, match=words):
        level(data)
