"""Build the QEMU command line. Pure: one function from a spec to a list.

The argv is never passed through a shell; ``shell_line`` renders it for a
human to read or paste.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import List, Sequence, Tuple


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


def build_argv(spec: QemuSpec) -> List[str]:
    argv = [
        spec.qemu,
        "-name", spec.name,
        "-machine", "pc",
        "-accel", spec.accel,
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
        "-drive", f"file={keyval(spec.disk)},if=none,id=disk0,format={keyval(spec.disk_format)},cache=writeback",
        "-device", f"virtio-blk-pci,drive=disk0,bootindex={1 if spec.boot_cdrom else 0}",
        "-netdev", "user,id=net0",
        "-device", "virtio-net-pci,netdev=net0",
    ]
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


def shell_line(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
