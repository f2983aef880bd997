"""Build the QEMU command line. Pure: one function from a spec to a list.

The argv is never passed through a shell; ``shell_line`` renders it for a
human to read or paste.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from harness.devices import AUDIODEV_ID, DRIVE_ID, NETDEV_ID, Device, DeviceSet, attach


def keyval(value: str) -> str:
    """Escape a value inside QEMU's ``key=value,...`` syntax: a comma is doubled."""
    return value.replace(",", ",,")


@dataclass(frozen=True)
class QemuSpec:
    qemu: str
    disk: str
    disk_format: str
    serial_log: str
    qmp_socket: str
    accel: str = "tcg"
    tcg_thread: str = "single"  # under TCG: one thread for all vCPUs ("multi": MTTCG, a thread each)
    memory_mib: int = 2048
    smp: int = 2
    fw_cfg: Tuple[Tuple[str, str], ...] = ()
    extra: Tuple[str, ...] = ()
    paused: bool = True
    # Hold a panicked guest (QEMU 6.0+ has -action) so its screen can be saved.
    panic_pause: bool = False
    # CD images on IDE (an installer and its media); the first boots when boot_cdrom is set.
    cdroms: Tuple[str, ...] = ()
    boot_cdrom: bool = False
    # A reboot ends the run (selftest); an install reboots on purpose.
    no_reboot: bool = True
    name: str = "aero-selftest"
    # The virtio devices (harness.devices); the default is the contract-v1 set without optional properties.
    devices: Tuple[Device, ...] = field(default_factory=lambda: tuple(attach(DeviceSet(), {})))
    # QEMU's own throw-away overlay (-drive snapshot=on), for a command line a person runs by hand.
    disk_snapshot: bool = False
    # "unsafe" for the run's own throw-away overlay: the guest's flushes need not reach the disk (QEMU's
    # snapshot=on overlay does the same); "writeback" where the image is kept.
    disk_cache: str = "writeback"
    # SeaBIOS's debug console (port 0x402): says "No bootable device." within seconds.
    firmware_log: Optional[str] = None


def build_argv(spec: QemuSpec) -> List[str]:
    argv = [
        spec.qemu,
        "-name", spec.name,
        "-machine", "pc",
        "-accel", f"tcg,thread={spec.tcg_thread}" if spec.accel == "tcg" else spec.accel,
        "-m", str(spec.memory_mib),
        "-smp", str(spec.smp),
        "-nodefaults",
        "-no-user-config",
        # A VGA card with no window: QMP screendump can still show the screen.
        "-display", "none",
        "-vga", "std",
        # A guest that reboots or crashes makes QEMU exit instead of looping.
        *(["-no-reboot"] if spec.no_reboot else []),
        *(["-action", "panic=pause"] if spec.panic_pause else []),
        # Windows keeps its clock in local time.
        "-rtc", "base=localtime",
        "-chardev", f"file,id=com1,path={keyval(spec.serial_log)}",
        "-serial", "chardev:com1",
        "-chardev", f"socket,id=qmp,path={keyval(spec.qmp_socket)},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        *(["-chardev", f"file,id=firmware,path={keyval(spec.firmware_log)}",
            "-device", "isa-debugcon,iobase=0x402,chardev=firmware"] if spec.firmware_log else []),
        "-drive", f"file={keyval(spec.disk)},if=none,id={DRIVE_ID},format={keyval(spec.disk_format)},"
        f"cache={spec.disk_cache}" + (",snapshot=on" if spec.disk_snapshot else ""),
        "-netdev", f"user,id={NETDEV_ID}",
    ]
    if any(d.role == "snd" for d in spec.devices):
        # The none backend, not wav: wav has no capture side, so QEMU gives virtio-sound's input
        # stream no voice ("Could not create a backend for voice `virtio-sound.in'") and a guest's
        # capture never gets a frame. none plays into nothing and captures silence; the playback
        # is recorded by wavcapture on the same audiodev.
        argv += ["-audiodev", f"none,id={AUDIODEV_ID}"]
    for device in spec.devices:
        argv += ["-device", device.device_arg()]
    for index, image in enumerate(spec.cdroms):
        argv += [
            "-drive", f"file={keyval(image)},if=none,id=cd{index},media=cdrom,readonly=on",
            "-device", f"ide-cd,drive=cd{index}" + (",bootindex=0" if spec.boot_cdrom and index == 0 else ""),
        ]
    for name, value in spec.fw_cfg:
        argv += ["-fw_cfg", f"name={keyval(name)},string={keyval(value)}"]
    if spec.paused:
        argv.append("-S")
    argv += list(spec.extra)
    return argv


def hmp_string(value: str) -> str:
    """A value as one argument of an HMP command line: quoted, with its quotes and backslashes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wavcapture_command(path: str) -> str:
    """The HMP command that records the sound device's playback to ``path`` (48 kHz, 16-bit, stereo).

    Sent before the guest runs (QEMU starts paused); QEMU completes the WAV's header when it exits.
    """
    return f"wavcapture {hmp_string(path)} {AUDIODEV_ID} 48000 16 2"


def shell_line(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
