"""``install-win7``: turn a Windows 7 ISO and the provisioning media into a test image.

QEMU boots the installer CD with the provisioning CD beside it and a new
qcow2 on virtio-blk. The run follows the ``AERO_PROVISION|...`` lines that
provision.cmd writes to COM1, saves a screenshot every few minutes, and ends
when provisioning reports DONE and the guest has shut down. The image is
written under a temporary name and renamed only on success.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from harness import inotify, interrupt, options
from harness.accel import KvmBootError, with_accel_fallback
from harness.artifacts import prepare_artifacts
from harness.console import Console
from harness.deadline import Deadline
from harness.devices import DeviceSet, attach
from harness.errors import HostError, UsageError
from harness.exitcodes import ExitCode
from harness.follow import Context, FirmwareWatch, Handler, Judge, follow
from harness.lines import Line
from harness.markers import Marker
from harness.qemu import QemuProcess, find_qemu, qemu_caps, qemu_img_for
from harness.qemu_argv import QemuSpec, build_argv
from harness.verdict import Verdict, failure_verdict
from harness.watcher import SerialWatcher

PREFIX = "AERO_PROVISION|"
DONE = "PROVISION_DONE"  # the judge's token for DONE; the install then waits for the shutdown
SHUTDOWN_WAIT = 300.0  # provision.cmd shuts Windows down; this long it may take


_default = functools.partial(options.default, "install_win7")


@dataclass(frozen=True)
class InstallConfig:
    """The settings of one install; the defaults are the options' (harness/options.py)."""

    iso: Path
    media: Path
    out: Path
    size: str = _default("size")
    force: bool = _default("force")
    timeout: float = _default("timeout")
    memory: int = _default("memory")
    smp: int = _default("smp")
    tcg_thread: str = _default("tcg_thread")
    accel: str = _default("accel")
    qemu_system: str = _default("qemu_system")
    screenshot_every: float = _default("screenshot_every")
    qemu_args: Tuple[str, ...] = _default("qemu_arg")
    artifacts: Path = field(default_factory=lambda: Path("artifacts") / time.strftime("install-%Y%m%d-%H%M%S"))

    def validate(self) -> None:
        for name, path in (("--iso", self.iso), ("--media", self.media)):
            if not path.is_file():
                raise UsageError(f"{name} {path} is not a file", hint="give the path of an ISO image")
        if self.out.is_dir():
            raise UsageError(f"--out {self.out} is a directory", hint="give the file name of the image to create")
        if self.out.exists() and not self.force:
            raise UsageError(f"--out {self.out} exists", hint="pass --force to overwrite it, or pick another name")
        if not re.fullmatch(r"\d+(\.\d+)?[KMGT]?", self.size):
            raise UsageError(f"--size {self.size!r} is not a size such as 32G")
        if not self.timeout > 0 or not self.screenshot_every > 0:
            raise UsageError("--timeout and --screenshot-every must be positive numbers of seconds")
        if self.memory < 512:
            raise UsageError(f"--memory is in MiB; Windows 7 needs at least 512, not {self.memory}")


class Install:
    def __init__(self, cfg: InstallConfig, console: Console) -> None:
        self.cfg = cfg
        self.console = console
        self.lines: List[str] = []
        self.screenshots: List[str] = []
        self.started = time.monotonic()

    def execute(self) -> Verdict:
        with interrupt.held():  # signals are taken at the run's checkpoints (harness.interrupt)
            return self._execute()

    def _execute(self) -> Verdict:
        cfg = self.cfg
        cfg.validate()
        qemu = find_qemu(cfg.qemu_system)
        # Windows Setup boots from the CD; the Aero storage driver binds the contract-v1 disk.
        wanted = DeviceSet(disk_bootindex=1)
        caps = qemu_caps(qemu, [d.driver for d in attach(wanted)])
        self.devices = tuple(attach(wanted, caps.properties))
        version = caps.version
        qemu_img = qemu_img_for(qemu)
        artifacts = prepare_artifacts(cfg.artifacts)
        partial = cfg.out.with_name(cfg.out.name + ".partial")
        verdict: Optional[Verdict] = None
        info: Dict[str, Any] = {"qemu": qemu, "qemu_version": version}
        try:
            verdict = with_accel_fallback(
                qemu, version, cfg.accel,
                lambda accel, may_fall_back: self._attempt(qemu, qemu_img, partial, accel, may_fall_back, info),
                lambda: self.console.info("KVM stopped the VM at boot; running again under TCG"),
            )
            if verdict.passed:
                os.replace(partial, cfg.out)
        except KeyboardInterrupt as exc:
            interrupt.consume()
            verdict = failure_verdict(exc)
        except BaseException as exc:  # install.json says why, then the error goes to the CLI
            verdict = failure_verdict(exc)
            raise
        finally:
            if partial.exists():
                partial.unlink()  # a half-installed image is of no use
            if verdict is not None:
                self._write(artifacts, verdict, info)
            inotify.settle()
        return verdict

    def _attempt(
        self, qemu: str, qemu_img: str, disk: Path, accel: str, may_fall_back: bool, info: Dict[str, Any]
    ) -> Verdict:
        cfg = self.cfg
        disk.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(disk), cfg.size],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise HostError(f"cannot create {disk}: {proc.stderr.strip()}")
        serial = cfg.artifacts / "serial.log"
        serial.write_bytes(b"")
        firmware_log = cfg.artifacts / "firmware.log"
        with contextlib.ExitStack() as stack:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aero-install-")))
            spec = QemuSpec(
                qemu=qemu, disk=str(disk.resolve()), disk_format="qcow2", serial_log=str(serial.resolve()),
                qmp_socket=str(scratch / "qmp.sock"), accel=accel, tcg_thread=cfg.tcg_thread,
                memory_mib=cfg.memory, smp=cfg.smp,
                cdroms=(str(cfg.iso.resolve()), str(cfg.media.resolve())), boot_cdrom=True, no_reboot=False,
                extra=cfg.qemu_args, name="aero-install", devices=self.devices,
                firmware_log=str(firmware_log.resolve()),
            )
            argv = build_argv(spec)
            info.update(argv=argv, accel=accel)
            vm = stack.enter_context(QemuProcess(argv, cfg.artifacts / "qemu.log", scratch / "qmp.sock"))
            watcher = SerialWatcher(serial)
            stack.callback(watcher.close)
            vm.resume()
            interrupt.checkpoint()
            ctx = Context(vm, self.console)
            judge = ProvisionJudge(self, vm, may_fall_back)
            shots = PeriodicScreenshots(self, vm, cfg.screenshot_every)
            # An ISO that does not boot would otherwise wait out the whole --timeout (hours).
            firmware = FirmwareWatch(firmware_log, "on the installer CD (see firmware.log and screen-no-boot.png); "
                                     "is --iso a bootable Windows 7 installation ISO?")
            stack.callback(firmware.close)
            verdict = follow(vm, watcher, judge, [firmware, shots], ctx, Deadline(cfg.timeout))
            if verdict.token == FirmwareWatch.TOKEN:
                self.screenshot(vm, "no-boot")
            if verdict.token == DONE:
                self.console.info("provisioning reported DONE; waiting for the guest to shut down")
                return self._finish(vm)
            return verdict

    def _finish(self, vm: QemuProcess) -> Verdict:
        """Let the guest shut down by itself; ask it with ACPI if it does not; never cut the power first."""
        if not _wait_exit(vm, SHUTDOWN_WAIT):
            vm.command("system_powerdown")
            if not _wait_exit(vm, 120):
                self.screenshot(vm, "no-shutdown")
                return Verdict(ExitCode.FAIL, "NO_SHUTDOWN",
                               "provisioning finished but the guest did not shut down; the image may be inconsistent")
        return Verdict(ExitCode.PASS, "PASS", f"provisioned image at {self.cfg.out}")

    def screenshot(self, vm: QemuProcess, label: str) -> Optional[str]:
        path = self.cfg.artifacts / f"screen-{label}.png"
        if vm.alive() and vm.screendump(path):
            self.screenshots.append(path.name)
            return str(path)
        return None

    def _write(self, artifacts: Path, verdict: Verdict, info: Dict[str, Any]) -> None:
        document = {
            "verdict": "PASS" if verdict.passed else "FAIL",
            "exit_code": int(verdict.code),
            "token": verdict.token,
            "detail": verdict.detail,
            "image": str(self.cfg.out) if verdict.passed else None,
            "provision_lines": self.lines,
            "screenshots": self.screenshots,
            "seconds": round(time.monotonic() - self.started, 1),
            **info,
        }
        (artifacts / "install.json").write_text(json.dumps(document, indent=2) + "\n")


def _wait_exit(vm: QemuProcess, seconds: float) -> bool:
    deadline = Deadline(seconds)
    while vm.alive() and not deadline.expired:
        vm.wait([interrupt.wake_fd()], deadline.remaining)
        interrupt.woke()
    return not vm.alive()


class ProvisionJudge(Judge):
    """provision.cmd's COM1 lines: DONE ends the install (the guest then shuts down), FAIL fails it."""

    def __init__(self, install: Install, vm: QemuProcess, may_fall_back: bool) -> None:
        self.install = install
        self.vm = vm
        self.may_fall_back = may_fall_back

    @property
    def last(self) -> str:
        return self.install.lines[-1] if self.install.lines else "none"

    def on_line(self, line: Line, marker: Optional[Marker], ctx: Context) -> Optional[Verdict]:
        if not line.text.startswith(PREFIX):
            return None
        self.install.lines.append(line.text)
        self.install.console.info(f"[{time.monotonic() - self.install.started:7.1f}s] {line.text}")
        if line.text.startswith(PREFIX + "DONE"):
            return Verdict(ExitCode.PASS, DONE, line.text)
        if line.text.startswith(PREFIX + "FAIL"):
            self.install.screenshot(self.vm, "failed")
            return Verdict(ExitCode.FAIL, "PROVISION_FAILED", line.text[len(PREFIX):])
        return None

    def on_exit(self, returncode: Optional[int]) -> Verdict:
        return Verdict(ExitCode.QEMU_EXITED, "QEMU_EXITED",
                       f"QEMU exited with code {returncode} before provisioning reported DONE; last line: {self.last}")

    def on_state(self, state: str) -> Optional[Verdict]:
        if state != "internal-error":
            return None
        if self.may_fall_back and not self.install.lines:
            raise KvmBootError()
        self.install.screenshot(self.vm, "internal-error")
        return Verdict(ExitCode.QEMU_EXITED, "VM_INTERNAL_ERROR", "the VM stopped with an internal error")

    def on_timeout(self, seconds: float) -> Verdict:
        shot = self.install.screenshot(self.vm, "timeout")
        return Verdict(ExitCode.TIMEOUT, "TIMEOUT",
                       f"provisioning did not report DONE within {seconds:g} s; last line: {self.last}; "
                       f"last screenshot: {shot or 'none'}")

    def status(self) -> str:
        return self.install.lines[-1] if self.install.lines else "Windows Setup running (no provisioning line yet)"


class PeriodicScreenshots(Handler):
    """A screenshot every so often, so a stuck Windows Setup can be seen afterwards."""

    def __init__(self, install: Install, vm: QemuProcess, every: float) -> None:
        self.install = install
        self.vm = vm
        self.every = every
        self.next = time.monotonic() + every

    def next_tick(self) -> Optional[float]:
        return self.next

    def on_tick(self, ctx: Context) -> Optional[Verdict]:
        self.install.screenshot(self.vm, f"{int(ctx.elapsed // 60):04d}m")
        self.next += self.every
        return None


def run_install(cfg: InstallConfig, console: Console) -> ExitCode:
    verdict = Install(cfg, console).execute()
    console.verdict("PASS: " + verdict.detail if verdict.passed else verdict.line())
    if not verdict.passed:
        console.info(f"artifacts: {cfg.artifacts.resolve()}")
    else:
        console.info(f"next: invoke selftest --disk {cfg.out}")
    return verdict.code
