"""Run QEMU: find and probe the binary, make the overlay, own the process.

``QemuProcess`` is a context manager: on exit QEMU is gone, whatever
happened (polite QMP quit, then SIGTERM, then SIGKILL, each bounded).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple, Type

from harness import hostcache, inotify, interrupt
from harness.deadline import Deadline
from harness.errors import HostError, QemuLaunchError, UsageError
from harness.exitwatch import ExitWatch
from harness.qmp import Qmp, QmpError, QmpRefusedError

log = logging.getLogger(__name__)


def find_qemu(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.sep in name:
            raise UsageError(f"QEMU binary {name} does not exist or is not executable", hint="check --qemu-system")
        raise HostError(
            f"{name} is not installed or not on PATH",
            hint="apt-get install -y qemu-system-x86 qemu-utils, or name a binary with --qemu-system",
        )
    return path


def qemu_img_for(qemu: str) -> str:
    """The qemu-img beside the QEMU binary, else the one on PATH."""
    beside = Path(qemu).resolve().parent / "qemu-img"
    if beside.exists():
        return str(beside)
    found = shutil.which("qemu-img")
    if not found:
        raise HostError("qemu-img is not installed", hint="apt-get install -y qemu-utils")
    return found


def _probe(argv: Sequence[str], timeout: float = 30) -> str:
    try:
        proc = subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=timeout,
        )
    except OSError as exc:
        raise HostError(f"cannot run {argv[0]}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise HostError(f"{' '.join(argv)} did not answer within {timeout:g} s") from exc
    if proc.returncode != 0:
        raise HostError(f"{' '.join(argv)} failed with exit code {proc.returncode}: {proc.stdout.strip()[-500:]}")
    return proc.stdout


def qemu_version(qemu: str) -> str:
    """'7.2.22' from 'QEMU emulator version 7.2.22 (Debian ...)'."""
    try:
        out = _probe([qemu, "--version"])
    except HostError as exc:
        raise UsageError(f"{qemu} is not a QEMU system emulator: {exc.message}", hint=NOT_QEMU_HINT) from exc
    match = re.search(r"^QEMU emulator version (\d+\.\d+(?:\.\d+)?)", out, re.MULTILINE)
    if not match:
        first = out.strip().splitlines()[0][:120] if out.strip() else "nothing"
        raise UsageError(f"{qemu} is not a QEMU system emulator: its --version says {first!r}", hint=NOT_QEMU_HINT)
    return match.group(1)


NOT_QEMU_HINT = "name qemu-system-x86_64 (or a path to it) with --qemu-system"


def supports_option(qemu: str, option: str) -> bool:
    """Whether ``qemu -help`` lists a command-line option (such as ``-action``)."""
    try:
        out = _probe([qemu, "-help"])
    except HostError:
        return False
    return re.search(rf"^{re.escape(option)}\b", out, re.MULTILINE) is not None


@dataclass(frozen=True)
class QemuCaps:
    """What one QEMU binary offers: its version, options, devices and their properties."""

    version: str
    has_action: bool  # -action panic=pause (QEMU 6.0+)
    devices: FrozenSet[str]  # of those asked about, the ones it has
    properties: Dict[str, FrozenSet[str]]


def _property_names(help_text: str) -> FrozenSet[str]:
    return frozenset(re.findall(r"^\s+([A-Za-z0-9_.-]+)=<", help_text, re.MULTILINE))


CAPS_FILE = "qemu-caps.json"


def qemu_caps(qemu: str, drivers: Iterable[str]) -> QemuCaps:
    """What this QEMU build offers (version, options, devices, properties), probed once per build.

    Remembered by the binary's identity (``hostcache.file_identity``): a known
    build answers without starting QEMU at all. A wrapper script can run
    another QEMU without changing itself, so for a script the version is asked
    every time and is part of the key. So is ``$QEMU_MODULE_DIR`` (the modules of
    an unpacked build, see tools/qemu_builds.py), which decides what devices it has.
    """
    version = qemu_version(qemu) if _is_script(qemu) else None
    key = hostcache.file_identity(qemu) + (f"|{version}" if version else "")
    modules = os.environ.get("QEMU_MODULE_DIR")
    if modules:  # the folder QEMU loads device modules from: another folder (or new contents), other devices
        try:
            key += f"|modules={hostcache.file_identity(modules)}"
        except OSError:  # no such folder: its name alone
            key += f"|modules={modules}"
    cache = hostcache.load(CAPS_FILE)
    found: Any = cache.get(key)
    entry: Dict[str, Any] = found if _well_formed(found) else {}
    if not entry or not all(d in entry["properties"] or d in entry["absent"] for d in drivers):
        version = version or qemu_version(qemu)  # also refuses a program that is no QEMU
        known = dict(entry.get("properties", {}))
        absent = set(entry.get("absent", []))
        # One `-device NAME,help` per device, not `-device help`: listing every device loads every
        # module, and a QEMU unpacked beside another one aborts on a module of the other build.
        for driver in sorted(set(drivers) - set(known) - absent):
            props = _property_names(_probe([qemu, "-device", f"{driver},help"]))
            if props:
                known[driver] = sorted(props)
            else:  # "Device 'NAME' not found" (QEMU exits 0 here)
                absent.add(driver)
        entry = {
            "version": version,
            "has_action": supports_option(qemu, "-action"),
            "absent": sorted(absent),
            "properties": known,
        }
        cache[key] = entry
        hostcache.save(CAPS_FILE, cache)
    return QemuCaps(
        version=str(entry["version"]),
        has_action=bool(entry["has_action"]),
        devices=frozenset(entry["properties"]),
        properties={k: frozenset(v) for k, v in entry["properties"].items()},
    )


def _well_formed(entry: Any) -> bool:
    """Whether a cache entry has the shape ``qemu_caps`` writes: another version of the harness (the
    cache is per user) or a damaged file may hold anything."""

    def strings(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)

    return (isinstance(entry, dict) and isinstance(entry.get("version"), str)
            and isinstance(entry.get("has_action"), bool) and strings(entry.get("absent"))
            and isinstance(entry.get("properties"), dict)
            and all(isinstance(name, str) and strings(props) for name, props in entry["properties"].items()))


def _is_script(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return False


@dataclass(frozen=True)
class DiskInfo:
    path: Path
    format: str
    virtual_size: int


def disk_info(qemu_img: str, path: Path) -> DiskInfo:
    """What the image is; a broken one (unreadable, missing backing file, not bootable) is refused here."""
    try:
        proc = subprocess.run(
            [qemu_img, "info", "--output=json", "--backing-chain", "-U", str(path)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostError(f"cannot run {qemu_img}: {exc}") from exc
    if proc.returncode != 0:
        said = proc.stderr.strip()
        hint = "check --disk"
        unopened = re.findall(r"Could not open '([^']+)'", said)
        if any(os.path.abspath(u) != os.path.abspath(path) for u in unopened):
            hint = (f"{path} is an overlay whose backing file {unopened[0]} is missing or unreadable; "
                    "restore it, or give the base image itself")
        raise UsageError(f"{path} is not a disk image QEMU can read: {said}", hint=hint)
    chain = json.loads(proc.stdout)
    info = chain[0] if isinstance(chain, list) else chain
    disk = DiskInfo(path, str(info.get("format", "raw")), int(info.get("virtual-size", 0)))
    if disk.virtual_size == 0:
        raise UsageError(f"{path} is an empty disk image (0 bytes)", hint="check --disk")
    if disk.format == "raw" and not _has_boot_signature(path):
        raise UsageError(
            f"{path} is not a bootable disk image: qemu-img reads it as raw and it has no boot sector "
            "(no 55 AA signature at byte 510)",
            hint="give a qcow2 image or a raw image of a whole disk (the Windows 7 test image)",
        )
    return disk


def _has_boot_signature(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(510)
            return f.read(2) == b"\x55\xaa"
    except OSError:
        return False


def create_overlay(qemu_img: str, base: DiskInfo, overlay: Path) -> None:
    """A throw-away qcow2 on top of the base image, which QEMU then opens read-only."""
    argv = [
        qemu_img, "create", "-q", "-f", "qcow2", "-b", str(base.path.resolve()), "-F", base.format, str(overlay),
    ]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise HostError(f"cannot create the overlay {overlay}: {proc.stdout.strip()}", hint=_lock_hint(proc.stdout))


def _lock_hint(output: str) -> Optional[str]:
    if "lock" in output.lower():
        return "another process (often a QEMU still running) holds the disk image; stop it, or run on a copy"
    return None


def die_with_parent() -> None:
    """In the child before exec: on Linux, QEMU gets SIGKILL if the harness dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


@dataclass(frozen=True)
class Wakeup:
    """Why ``QemuProcess.wait`` returned: QMP events, readable file descriptors, QEMU's exit (or the timeout)."""

    events: Tuple[str, ...] = ()
    ready: FrozenSet[int] = frozenset()
    exited: bool = False


class QemuProcess:
    """One QEMU process with a QMP connection.

    QEMU is started paused (``-S``) so that an instant failure (bad option,
    locked image) is caught before the guest runs; ``resume`` starts it.
    ``wait`` sleeps until QEMU has something to say: an event, its exit.
    """

    def __init__(self, argv: Sequence[str], log_path: Path, qmp_socket: Path) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.qmp_socket = qmp_socket
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.qmp: Optional[Qmp] = None
        self._exit: Optional[ExitWatch] = None
        self._log_file: Optional[Any] = None

    def __enter__(self) -> QemuProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.stop()

    def start(self, connect_timeout: float = 15.0) -> None:
        self._log_file = open(self.log_path, "ab")
        # Held: a signal between fork and the assignment would leave a QEMU nobody stops.
        with interrupt.held():
            try:
                self.proc = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
                    # Its own session: a Ctrl-C on the terminal reaches the harness, which stops QEMU itself.
                    start_new_session=True, preexec_fn=die_with_parent,
                )
            except OSError as exc:
                raise QemuLaunchError(f"cannot start {self.argv[0]}: {exc}") from exc
            self._exit = ExitWatch(self.proc)
        deadline = Deadline(connect_timeout)
        qmp = Qmp(str(self.qmp_socket))  # its first use imports the QMP library: while QEMU starts
        self.qmp = qmp  # closed by stop(), also when connecting fails
        self._wait_for_socket(deadline)
        with interrupt.held():
            try:
                self._connect(qmp, deadline)
            except QmpError as exc:
                # A QEMU that fails at start may open its socket and exit a moment later.
                if self._exited_within(1.0):
                    raise self._launch_failure() from exc
                raise QemuLaunchError(
                    f"QEMU opened its QMP socket but did not answer: {exc}",
                    hint="QEMU seems hung; its output is in " + str(self.log_path),
                ) from exc

    def _wait_for_socket(self, deadline: Deadline) -> None:
        """Until QEMU has made its QMP socket: woken by the socket's creation, QEMU's exit, or a signal."""
        assert self._exit is not None
        created = inotify.watch(self.qmp_socket.parent, inotify.IN_CREATE)
        try:
            while not self.qmp_socket.exists():
                if self._exit.exited():
                    raise self._launch_failure()
                if deadline.expired:
                    raise QemuLaunchError(f"QEMU did not open its QMP socket within {deadline.seconds:g} s")
                if created is None:  # no inotify here: look again soon
                    interrupt.wait_readable([self._exit.fileno()], min(0.02, deadline.remaining))
                else:
                    interrupt.wait_readable([self._exit.fileno(), created.fileno()], deadline.remaining)
                    created.drain()
        finally:
            if created is not None:
                created.close()

    def _connect(self, qmp: Qmp, deadline: Deadline) -> None:
        """QEMU creates the socket file (bind) a moment before it listens: a refused connect is retried."""
        while True:
            try:
                qmp.connect(timeout=max(deadline.remaining, 1.0))
                return
            except QmpRefusedError:
                if deadline.expired or self.proc is None or self.proc.poll() is not None:
                    raise
                interrupt.sleep(0.002)

    def _launch_failure(self) -> QemuLaunchError:
        code = self.proc.returncode if self.proc else None
        tail = self.log_tail()
        return QemuLaunchError(
            f"QEMU exited at start with code {code}:\n{tail}",
            hint=_lock_hint(tail) or f"QEMU's output is in {self.log_path}; the full command is in the run's JSON "
                                     "report beside it",
        )

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.poll() if self.proc else None

    def execute(self, command: str, arguments: Optional[Dict[str, Any]] = None, timeout: float = 10.0) -> Any:
        """One QMP command; raises QmpCommandError (QEMU said no) or QmpError (QMP gone)."""
        if self.qmp is None or not self.alive():
            raise QmpError(f"{command}: QEMU is not running")
        with interrupt.held():
            return self.qmp.execute(command, arguments, timeout)

    def command(self, name: str, **args: Any) -> Any:
        """One QMP command; its return value, or None when QMP is gone or QEMU said no."""
        try:
            return self.execute(name, args or None)
        except QmpError as exc:
            log.debug("QMP %s failed: %s", name, exc)
            return None

    def wait(self, fds: Sequence[int], timeout: Optional[float]) -> Wakeup:
        """Sleep until QEMU sends a QMP event or exits, one of ``fds`` is readable, or ``timeout`` passes.

        A signal wakes it too (``interrupt.wake_fd()`` is among ``fds``); it does not raise it.
        """
        if self._exit is None:
            raise QmpError("QEMU was not started")
        fds = [fd for fd in fds if fd >= 0]
        watched = [*fds, self._exit.fileno()]
        events: List[str] = []
        if self.qmp is not None:
            try:
                with interrupt.held():
                    events, ready = self.qmp.wait(watched, timeout)
            except QmpError as exc:  # QMP is unusable: QEMU's exit and the descriptors still wake the loop
                log.debug("QMP wait failed: %s", exc)
                ready = interrupt.readable(watched, timeout)
        else:
            ready = interrupt.readable(watched, timeout)
        return Wakeup(tuple(events), frozenset(fd for fd in ready if fd in fds), self._exit.fileno() in ready)

    def resume(self) -> bool:
        """Start the VM, which QEMU holds at its first instruction (-S) until the harness is ready;
        False: QEMU exited instead (the follow loop reports that).

        A VM left paused would pass for a silent guest until the run's timeout: a ``cont`` that
        fails while QEMU stays up is an error of its own.
        """
        try:
            self.execute("cont", timeout=60.0)
            return True
        except QmpError as exc:
            # QMP's socket closes a moment before QEMU's exit can be seen.
            if self._exited_within(1.0):
                return False
            raise QemuLaunchError(f"QEMU did not start the VM: QMP cont failed ({exc})",
                                  hint=f"QEMU may be hung; its output is in {self.log_path}") from exc

    def status(self) -> Optional[str]:
        """QMP query-status: running, paused, internal-error, guest-panicked, ..."""
        reply = self.command("query-status")
        if isinstance(reply, dict):
            return str(reply.get("status"))
        return None

    def screendump(self, path: Path) -> bool:
        if self.command("screendump", filename=str(path), format="png") is not None:
            return path.exists()
        # QEMU before 7.1 writes PPM only.
        ppm = path.with_suffix(".ppm")
        return self.command("screendump", filename=str(ppm)) is not None and ppm.exists()

    def stop(self, quit_wait: float = 5.0, term_wait: float = 5.0) -> None:
        """Polite QMP quit, then SIGTERM, then SIGKILL; each step bounded, none cut short by a signal."""
        with interrupt.held():
            self._stop(quit_wait, term_wait)

    def _stop(self, quit_wait: float, term_wait: float) -> None:
        proc = self.proc
        try:
            if proc is not None and proc.poll() is None:
                # Without a QMP answer to quit (QMP never came up, or is gone) there is nothing to wait for.
                if self.command("quit") is None or not self._exited_within(quit_wait):
                    log.debug("QEMU ignored quit; sending SIGTERM")
                    proc.terminate()
                    if not self._exited_within(term_wait):
                        log.debug("QEMU ignored SIGTERM; sending SIGKILL")
                        proc.kill()
                        self._exited_within(10.0)
        finally:
            if self.qmp is not None:
                self.qmp.close()
                self.qmp = None
            if self._exit is not None:
                self._exit.close()
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None

    def _exited_within(self, seconds: float) -> bool:
        """Whether QEMU is gone (and reaped) within ``seconds``: the moment it exits, not a poll later."""
        if self._exit is not None:
            return self._exit.wait(seconds)
        return self.proc is None or self.proc.poll() is not None
