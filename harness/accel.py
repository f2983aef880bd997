"""``--accel auto``: KVM where it really runs guest code, else TCG, learnt once per boot of the host.

On some hosts /dev/kvm opens but KVM cannot run a boot loader: the VM stops
with an internal error as soon as the guest takes an interrupt in 32-bit
protected mode before it turns paging on (measured here: syslinux's IRET;
such a KVM runs that code through its instruction emulator, which has no
protected-mode INT or IRET). Three ways to learn it, cheapest first:

1. remembered: ``kvm.json`` in the harness's cache (harness/hostcache.py),
   keyed by all the answer depends on: this boot of the host
   (/proc/sys/kernel/random/boot_id), the kernel (uname -r), /dev/kvm itself,
   and the QEMU binary (its identity and version). A reboot, a new kernel, a
   reloaded KVM module or another QEMU is a new key, so never a stale answer;
2. the probe: QEMU runs a 64 KiB firmware of ours that enters 32-bit
   protected mode, takes an interrupt, returns from it and exits through
   ``isa-debug-exit`` with a code of its own. It takes about 50 ms where KVM
   works, and ends at the internal error as fast where it does not;
3. the run: a KVM run that ``auto`` chose still falls back to TCG when the VM
   stops with internal-error before the guest said anything (the probe cannot
   play every guest), and the host is then remembered as broken.

On a host whose KVM works a run pays at most one probe, once per boot and
QEMU build; on a host whose KVM is broken, the first run pays the probe and
every later run nothing.
"""

from __future__ import annotations

import datetime
import logging
import os
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Optional, Tuple, TypeVar

from harness import hostcache, interrupt
from harness.deadline import Deadline
from harness.exitwatch import ExitWatch
from harness.qemu import die_with_parent

log = logging.getLogger(__name__)

KVM_FILE = "kvm.json"
KVM_DEVICE = "/dev/kvm"
PROBE_EXIT = 0x2A  # the probe firmware's word to isa-debug-exit; QEMU exits with (value << 1) | 1
PROBE_TIMEOUT = 3.0  # QEMU starts in about 50 ms; a probe that takes this long says nothing
BROKEN_SAYS = "KVM internal error"


class KvmBootError(Exception):
    """Raised by an attempt whose KVM, chosen by ``auto``, stopped the VM before the guest said anything."""


def kvm_usable() -> bool:
    """Whether this user may open /dev/kvm at all (whether KVM then runs guest code is another matter)."""
    return os.access(KVM_DEVICE, os.R_OK | os.W_OK)


def host_key(qemu: str, version: str) -> Optional[str]:
    """What KVM's answer depends on here; None where it cannot be told (no boot id: nothing is remembered)."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        kvm = os.stat(KVM_DEVICE)
        qemu_id = hostcache.file_identity(qemu)
    except OSError:
        return None
    return f"{boot_id}|{os.uname().release}|kvm:{kvm.st_rdev}:{kvm.st_ctime_ns}|{qemu_id}|{version}"


def known(key: Optional[str]) -> Optional[bool]:
    """What was learnt about KVM for this key: True (works), False (broken), None (nothing yet)."""
    if key is None:
        return None
    entry = hostcache.load(KVM_FILE).get(key)
    return bool(entry["works"]) if isinstance(entry, dict) and "works" in entry else None


def remember(key: Optional[str], works: bool, how: str) -> None:
    """Record what was learnt; entries of earlier boots go (they can never match again)."""
    if key is None:
        return
    boot = key.split("|", 1)[0]
    cache = {k: v for k, v in hostcache.load(KVM_FILE).items() if k.startswith(boot + "|")}
    cache[key] = {"works": works, "how": how,
                  "learnt": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    hostcache.save(KVM_FILE, cache)


def probe_firmware() -> bytes:
    """64 KiB of firmware: real mode → 32-bit protected mode → INT 0x20 → IRET → ``out 0xf4`` (exit code 85).

    Mapped at 0xF0000 (and below 4 GiB, where the CPU starts at 0xFFFFFFF0).
    The descriptors carry their accessed bits, so the CPU never writes to ROM.
    """
    image = bytearray(0x10000)

    def put(offset: int, data: bytes) -> None:
        image[offset:offset + len(data)] = data

    base = 0xF0000
    gdt, gdtr, idt, idtr, code32, handler = 0x100, 0x120, 0x200, 0x320, 0x400, 0x480
    put(0xFFF0, bytes.fromhex("ea000000f0"))  # reset vector: jmp far f000:0000
    put(0x0000, bytes.fromhex(
        "fa"  # cli
        "2e0f011620 01"  # lgdt cs:[gdtr]
        "0f20c0 0c01 0f22c0"  # mov eax, cr0; or al, 1; mov cr0, eax
        "66ea"  # jmp dword 0x08:code32
    ) + struct.pack("<IH", base + code32, 0x08))
    put(gdt, bytes(8) + bytes.fromhex("ffff0000009bcf00") + bytes.fromhex("ffff00000093cf00"))  # null, code, data
    put(gdtr, struct.pack("<HI", 3 * 8 - 1, base + gdt))
    put(idt + 0x20 * 8, struct.pack("<HHBBH", (base + handler) & 0xFFFF, 0x08, 0, 0x8E, (base + handler) >> 16))
    put(idtr, struct.pack("<HI", 0x21 * 8 - 1, base + idt))
    put(code32, bytes.fromhex(
        "66b81000 8ed8 8ec0 8ed0"  # mov ax, 0x10; mov ds/es/ss, ax
        "bc00800000"  # mov esp, 0x8000
        "0f011d"  # lidt [idtr]
    ) + struct.pack("<I", base + idtr) + bytes.fromhex(
        "cd20"  # int 0x20: where a KVM that cannot run boot loaders stops
        "b0" + f"{PROBE_EXIT:02x}" + " e6f4"  # mov al, PROBE_EXIT; out 0xf4, al
        "f4 ebfd"  # hlt; jmp back to hlt
    ))
    put(handler, bytes.fromhex("cf"))  # iretd
    return bytes(image)


def probe(qemu: str, timeout: float = PROBE_TIMEOUT, accel: str = "kvm") -> Optional[bool]:
    """Does KVM (or ``accel``) run the probe firmware? True, False, or None when the probe could not tell."""
    with tempfile.TemporaryDirectory(prefix="aero-kvm-") as tmp:
        firmware = Path(tmp) / "probe.bin"
        firmware.write_bytes(probe_firmware())
        argv = [qemu, "-machine", "pc", "-accel", accel, "-nodefaults", "-no-user-config", "-display", "none",
                "-m", "16", "-no-reboot", "-bios", str(firmware), "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
        with interrupt.held():  # a signal between fork and the assignment would leave a QEMU nobody stops
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, start_new_session=True, preexec_fn=die_with_parent)
            except OSError as exc:
                log.debug("KVM probe: %s", exc)
                return None
        assert proc.stderr is not None
        try:
            said = _output_until_told(proc, Deadline(timeout))
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stderr.close()
    text = said.decode(errors="replace").strip()
    if proc.returncode == (PROBE_EXIT << 1) | 1:
        return True
    # Only KVM's own verdict on guest code is remembered: a KVM that cannot start a VM now (busy with
    # another hypervisor, out of memory or descriptors) may start one later, so that is "cannot tell".
    if BROKEN_SAYS in text:
        log.debug("KVM probe: %s", text[-300:])
        return False
    log.debug("KVM probe inconclusive (exit %s): %s", proc.returncode, text[-300:])
    return None


def _output_until_told(proc: subprocess.Popen[bytes], deadline: Deadline) -> bytes:
    """QEMU's output until it exits or says KVM failed (it then stays up), within the deadline; a signal raises."""
    assert proc.stderr is not None
    err = proc.stderr.fileno()
    os.set_blocking(err, False)
    exited = ExitWatch(proc)
    said = b""
    try:
        while BROKEN_SAYS.encode() not in said and not deadline.expired:
            ready = interrupt.wait_readable([err, exited.fileno()], deadline.remaining)
            if err in ready:
                try:
                    said += os.read(err, 65536)
                except BlockingIOError:
                    pass
            if exited.fileno() in ready:
                return said + proc.stderr.read()
    finally:
        exited.close()
    return said


def choose(qemu: str, version: str, requested: str) -> Tuple[str, bool]:
    """The accelerator of a run, and whether it may still fall back to TCG (``auto`` chose KVM)."""
    if requested != "auto":
        return requested, False
    if not kvm_usable():
        return "tcg", False
    key = host_key(qemu, version)
    works = known(key)
    if works is None:
        works = probe(qemu)
        if works is not None:
            remember(key, works, "the probe firmware " + ("ran" if works else "stopped KVM with an internal error"))
    if works is False:
        return "tcg", False
    return "kvm", True  # KVM works, or the probe could not tell: the run's own fallback stays armed


def settled(qemu: str, version: str, requested: str) -> Optional[str]:
    """What ``choose`` would pick, from what is known without a probe (None: a run would probe first)."""
    if requested != "auto":
        return requested
    if not kvm_usable():
        return "tcg"
    works = known(host_key(qemu, version))
    return None if works is None else ("kvm" if works else "tcg")


T = TypeVar("T")


def with_accel_fallback(
    qemu: str, version: str, requested: str, attempt: Callable[[str, bool], T], on_fallback: Callable[[], None]
) -> T:
    """Run ``attempt(accel, may_fall_back)``; when it raises KvmBootError, remember that and run it under TCG."""
    accel, may_fall_back = choose(qemu, version, requested)
    try:
        return attempt(accel, may_fall_back)
    except KvmBootError:
        remember(host_key(qemu, version), False, "a guest stopped with internal-error under KVM before a word")
        on_fallback()
        return attempt("tcg", False)
