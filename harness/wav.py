"""Is there sound in a WAV file? Pure over bytes.

QEMU records what the guest played through virtio-snd (HMP ``wavcapture``, or ``-audiodev wav``).
Samples of any common encoding (PCM 8/16/24/32-bit, IEEE float 32/64-bit,
also inside WAVE_FORMAT_EXTENSIBLE) are measured on the 16-bit scale; the
guest played something when the peak or the RMS passes its threshold
(upstream's defaults: peak > 200 or RMS > 50).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

PCM = 1
FLOAT = 3
EXTENSIBLE = 0xFFFE
# The first two bytes of the KSDATAFORMAT_SUBTYPE GUIDs name the format; the rest is fixed.
_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")


class WavError(ValueError):
    """Not a WAV file this check can read."""


@dataclass(frozen=True)
class WavLevel:
    peak: float  # on the 16-bit scale
    rms: float
    frames: int
    rate: int
    channels: int

    def audible(self, peak_threshold: float, rms_threshold: float) -> bool:
        return self.peak > peak_threshold or self.rms > rms_threshold

    def describe(self) -> str:
        return f"peak={self.peak:.0f} rms={self.rms:.1f} frames={self.frames} rate={self.rate} channels={self.channels}"


def _chunks(data: bytes) -> Iterator[Tuple[bytes, int, int]]:
    """(id, start, size) of each chunk; a size past the end (QEMU killed mid-write) is cut to the file."""
    pos = 12
    while pos + 8 <= len(data):
        cid = data[pos:pos + 4]
        size = struct.unpack_from("<I", data, pos + 4)[0]
        start = pos + 8
        if cid == b"data" and (size == 0 or start + size > len(data)):
            size = len(data) - start
        size = min(size, len(data) - start)
        yield cid, start, size
        pos = start + size + (size & 1)


def _format(fmt: bytes) -> Tuple[int, int, int, int]:
    if len(fmt) < 16:
        raise WavError("the fmt chunk is too short")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == EXTENSIBLE:
        if len(fmt) < 40:
            raise WavError("WAVE_FORMAT_EXTENSIBLE without its sub-format")
        sub = fmt[24:40]
        if sub[2:] != _GUID_TAIL:
            raise WavError(f"unknown extensible sub-format {sub.hex()}")
        tag = struct.unpack_from("<H", sub)[0]
    if tag not in (PCM, FLOAT):
        raise WavError(f"unsupported format tag {tag}")
    if (tag == PCM and bits not in (8, 16, 24, 32)) or (tag == FLOAT and bits not in (32, 64)):
        raise WavError(f"unsupported {bits}-bit samples")
    if channels < 1:
        raise WavError("no channels")
    return tag, channels, rate, bits


def _samples(data: memoryview, tag: int, bits: int) -> Iterator[float]:
    """Samples on the 16-bit scale (±32767)."""
    if tag == FLOAT:
        code = "f" if bits == 32 else "d"
        for (value,) in struct.iter_unpack("<" + code, data[: len(data) // (bits // 8) * (bits // 8)]):
            if math.isfinite(value):
                yield value * 32767.0
    elif bits == 8:
        for byte in data:
            yield (byte - 128) * 256.0
    elif bits == 16:
        for (value,) in struct.iter_unpack("<h", data[: len(data) // 2 * 2]):
            yield float(value)
    elif bits == 24:
        for i in range(0, len(data) - 2, 3):
            value = int.from_bytes(data[i:i + 3], "little", signed=True)
            yield value / 256.0
    else:
        for (value,) in struct.iter_unpack("<i", data[: len(data) // 4 * 4]):
            yield value / 65536.0


def level(data: bytes) -> WavLevel:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavError("not a RIFF/WAVE file")
    fmt: Optional[Tuple[int, int, int, int]] = None
    samples: Optional[memoryview] = None
    for cid, start, size in _chunks(data):
        if cid == b"fmt ":
            fmt = _format(data[start:start + size])
        elif cid == b"data":
            samples = memoryview(data)[start:start + size]
    if fmt is None:
        raise WavError("no fmt chunk")
    if samples is None or len(samples) == 0:
        raise WavError("no audio data (an empty data chunk)")
    tag, channels, rate, bits = fmt
    peak = 0.0
    total = 0.0
    count = 0
    for sample in _samples(samples, tag, bits):
        magnitude = abs(sample)
        peak = max(peak, magnitude)
        total += sample * sample
        count += 1
    rms = math.sqrt(total / count) if count else 0.0
    return WavLevel(min(peak, 32768.0), rms, count // channels, rate, channels)
