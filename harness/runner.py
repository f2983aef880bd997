"""One selftest run: host services, QEMU, the serial watch, the verdict, the artifacts.

This is the shell around the pure core (markers, verdict, qemu_argv): it owns
every resource through an ExitStack, so QEMU, the servers and the scratch
folder are gone on every path out, including Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import logging
import os
import shlex
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from harness import __version__, inotify, interrupt, irq, netns, wav
from harness.accel import kvm_usable, settled, with_accel_fallback
from harness.actions import Watchdog, ready_handlers
from harness.artifacts import junit_xml, prepare_artifacts, result_document, write_json
from harness.config import SelftestConfig, check_disk
from harness.console import Console
from harness.deadline import Deadline
from harness.devices import FIRST_QEMU, VIRTIO_VENDOR, Device, attach, pci_functions, preflight_problems
from harness.devicetests import WATCHDOG_SECONDS
from harness.errors import HostError, PciPreflightError, UsageError
from harness.exitcodes import ExitCode
from harness.follow import Context, FirmwareWatch, Handler, follow
from harness.hostsvc import HostServices
from harness.judge import SelftestJudge, config_mismatch
from harness.qemu import (
    QemuProcess,
    create_overlay,
    disk_info,
    find_qemu,
    qemu_caps,
    qemu_img_for,
)
from harness.qemu_argv import QemuSpec, build_argv, shell_line, wavcapture_command
from harness.qmp import QmpError
from harness.verdict import Tracker, Verdict, failure_verdict
from harness.watcher import SerialWatcher

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class RunOutcome:
    verdict: Verdict
    artifacts: Optional[Path]

    @property
    def exit_code(self) -> ExitCode:
        return self.verdict.code


def fw_cfg_hints(cfg: SelftestConfig) -> List[Tuple[str, str]]:
    """Host settings offered to guests that read fw_cfg (the test guest does;
    a Windows guest has its own baked in and ignores these)."""
    hints = [
        ("opt/aero/http_url", f"http://10.0.2.2:{cfg.http_port}{cfg.http_path}"),
        ("opt/aero/udp_port", str(cfg.udp_port)),
    ]
    if cfg.run_index is not None:  # a run of a --repeat: the test guest's flaky scenario fails by it
        hints.append(("opt/aero/run_index", str(cfg.run_index)))
    return hints


class Run:
    def __init__(self, cfg: SelftestConfig, console: Console) -> None:
        self.cfg = cfg
        self.console = console
        self.judge = SelftestJudge(cfg.requirements(), console)
        self.devices: List[Device] = []
        self.timings: Dict[str, Optional[float]] = {}
        self.actions: List[Dict[str, Any]] = []
        self.qemu_info: Dict[str, Any] = {}
        self.notes: List[str] = []
        self.started = time.monotonic()
        self.panic_pause = False

    def _mark(self, name: str) -> None:
        self.timings[name] = time.monotonic() - self.started

    def execute(self) -> RunOutcome:
        # Signals are only recorded while the run works and raised at its checkpoints,
        # never inside a library's I/O or half-way through starting or stopping QEMU.
        with interrupt.held():
            return self._execute()

    def _execute(self) -> RunOutcome:
        cfg = self.cfg
        cfg.validate()
        if cfg.dry_run:
            return self._dry_run()
        artifacts = prepare_artifacts(cfg.artifacts)
        self.artifacts = artifacts
        verdict: Optional[Verdict] = None
        try:
            verdict = self._run(artifacts)
        except KeyboardInterrupt as exc:
            interrupt.consume()  # answered here: the cleanup and the artifacts below are not cut short
            verdict = failure_verdict(exc)  # the run is over: result.json and the verdict line say so
        except BaseException as exc:
            verdict = failure_verdict(exc)
            raise
        finally:
            if verdict is not None:
                self._write(artifacts, verdict)
            inotify.settle()
        return RunOutcome(verdict, artifacts)

    def _probe(self) -> Tuple[str, str]:
        """Find QEMU and learn what it offers; settle the devices the run attaches."""
        qemu = find_qemu(self.cfg.qemu_system)
        wanted = self.cfg.device_set()
        drivers = [d.driver for d in attach(wanted)]
        caps = qemu_caps(qemu, drivers)
        qemu_img = qemu_img_for(qemu)
        self.qemu_version = caps.version
        self.qemu_info.update(binary=qemu, version=caps.version, profile=wanted.profile)
        missing = [d for d in drivers if d not in caps.devices]
        if missing:
            since = [f"{d} arrived in QEMU {FIRST_QEMU[d]}" for d in missing if d in FIRST_QEMU]
            raise PciPreflightError(
                f"this QEMU ({caps.version}) has no {', '.join(missing)}, which the {wanted.profile} profile needs",
                hint="; ".join(since) + "; name a newer QEMU with --qemu-system" if since
                else "name a QEMU built with it with --qemu-system",
            )
        if wanted.vectors:
            lacking = sorted({d for d in drivers if "vectors" not in caps.properties.get(d, frozenset())})
            if lacking:
                raise HostError(f"this QEMU's {', '.join(lacking)} has no 'vectors' property for the MSI-X options")
        self.devices = attach(wanted, caps.properties)
        self.panic_pause = caps.has_action
        return qemu, qemu_img

    def _run(self, artifacts: Path) -> Verdict:
        cfg = self.cfg
        qemu, qemu_img = self._probe()
        if cfg.disk is None:
            raise UsageError("no --disk given", hint="name a guest image with --disk")
        check_disk(cfg.disk)
        interrupt.checkpoint()
        base = disk_info(qemu_img, cfg.disk)
        with contextlib.ExitStack() as stack:
            # The QMP socket path must stay short (108 bytes), so scratch lives in the temp dir.
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aero-run-")))
            if cfg.private_network:
                netns.loopback_up()
            else:  # runs that share 127.0.0.1 take turns, rather than collide on the ports
                ports = [("tcp", cfg.http_port)] + ([] if cfg.disable_udp else [("udp", cfg.udp_port)])
                stack.enter_context(netns.port_lock(ports, self.console.info))
            services = stack.enter_context(HostServices(
                cfg.http_port, cfg.udp_port, cfg.http_path, udp=not cfg.disable_udp, http_log=cfg.http_log))
            stack.callback(lambda: self.qemu_info.update(http_requests=len(services.requests)))
            self._mark("services_up")

            def fallback() -> None:
                self.console.info("KVM stopped the VM with an internal error at boot; running again under TCG")
                self.notes.append("KVM failed at boot (internal-error); fell back to TCG")
                os.replace(artifacts / "serial.log", artifacts / "serial-kvm-attempt.log")

            return with_accel_fallback(
                qemu, self.qemu_version, cfg.accel, lambda accel, may_fall_back: self._attempt(
                    qemu, qemu_img, base, scratch, accel, may_fall_back), fallback,
            )

    def _spec(self, qemu: str, disk: Path, fmt: str, serial: Path, qmp: Path, accel: str,
              disk_cache: str = "writeback") -> QemuSpec:
        cfg = self.cfg
        return QemuSpec(
            qemu=qemu, disk=str(disk), disk_format=fmt, disk_cache=disk_cache, serial_log=str(serial),
            qmp_socket=str(qmp),
            accel=accel, tcg_thread=cfg.tcg_thread, memory_mib=cfg.memory, smp=cfg.smp,
            fw_cfg=tuple(fw_cfg_hints(cfg)),
            extra=tuple(cfg.qemu_args), panic_pause=self.panic_pause, devices=tuple(self.devices),
            firmware_log=str(serial.parent / "firmware.log"),
        )

    def _dry_run(self) -> RunOutcome:
        """Print the command a run would use, as JSON and as a shell line that runs as it is; start nothing."""
        cfg = self.cfg
        qemu, qemu_img = self._probe()
        if cfg.disk is None:
            raise UsageError("--dry-run needs --disk (the image the command would boot)")
        base = disk_info(qemu_img, cfg.disk)
        known = settled(qemu, self.qemu_version, cfg.accel)
        # Not known yet on this boot: a run would probe first; the line shows the likely choice.
        accel = known or ("kvm" if kvm_usable() else "tcg")
        target = Path(cfg.artifacts).resolve()
        qmp = Path(tempfile.gettempdir()) / "aero-dry-run-qmp.sock"
        spec = self._spec(qemu, base.path.resolve(), base.format, target / "serial.log", qmp, accel)
        # Unpaused (a run starts paused and resumes over QMP), and QEMU's own snapshot=on in place of
        # the run's overlay, so that the line runs as it is when pasted and never writes the image.
        argv = build_argv(replace(spec, paused=False, disk_snapshot=cfg.snapshot))
        self.console.verdict(json.dumps(argv))
        self.console.verdict(f"mkdir -p {shlex.quote(str(target))} && {shell_line(argv)}")
        if cfg.accel == "auto" and known:
            self.console.info(f"note: --accel auto is {known} here (learnt on this boot of the host)")
        elif cfg.accel == "auto":
            self.console.info("note: --accel auto is settled at run time (KVM if it runs guest code here, else TCG)")
        if cfg.with_virtio_snd:
            self.console.info("note: a run records the sound with the QEMU monitor command "
                              f"'{wavcapture_command(str(target / 'virtio-snd.wav'))}' before the guest starts")
        return RunOutcome(Verdict(ExitCode.PASS, "DRY_RUN", "nothing was started"), None)

    def _attempt(
        self, qemu: str, qemu_img: str, base: Any, scratch: Path, accel: str, may_fall_back: bool
    ) -> Verdict:
        cfg = self.cfg
        serial = self.artifacts / "serial.log"
        serial.write_bytes(b"")
        if cfg.snapshot:
            disk = scratch / "overlay.qcow2"
            if disk.exists():
                disk.unlink()
            create_overlay(qemu_img, base, disk)
            fmt, cache = "qcow2", "unsafe"  # thrown away after the run: the guest's flushes need not reach the disk
        else:
            disk, fmt, cache = base.path.resolve(), base.format, "writeback"
        qmp_socket = scratch / "qmp.sock"
        if qmp_socket.exists():
            qmp_socket.unlink()
        argv = build_argv(self._spec(qemu, disk, fmt, serial, qmp_socket, accel, cache))
        self.qemu_info.update(argv=argv, accel=accel, snapshot=cfg.snapshot, base_disk=str(base.path.resolve()))
        watcher = SerialWatcher(serial)
        vm = QemuProcess(argv, self.artifacts / "qemu.log", qmp_socket)
        self.judge = SelftestJudge(
            cfg.requirements(), self.console,
            lambda marker: config_mismatch(marker, cfg.http_port, cfg.http_path,
                                           None if cfg.disable_udp else cfg.udp_port),
            checks_at_pass=self._checks_at_pass(),
            follow_serial=cfg.follow_serial, may_fall_back=may_fall_back, started=self.started,
        )
        with contextlib.ExitStack() as stack:
            stack.callback(watcher.close)
            stack.enter_context(vm)
            self._mark("qemu_started")
            self._preflight(vm)
            if cfg.with_virtio_snd:
                self._record_sound(vm)
            if vm.resume():
                self._mark("guest_started")
            interrupt.checkpoint()
            ctx = Context(vm, self.console)
            firmware = FirmwareWatch(self.artifacts / "firmware.log")
            stack.callback(firmware.close)
            try:
                verdict = follow(vm, watcher, self.judge, [firmware, *self._device_handlers()], ctx,
                                 Deadline(cfg.timeout))
            finally:
                self._absorb(ctx)
                watcher.close()  # the kernel takes a moment to drop their watches: it starts while QEMU stops
                firmware.close()
            self._mark("verdict")
            if not verdict.passed and vm.alive():
                if vm.screendump(self.artifacts / "screen.png"):
                    self.notes.append("screen.png: the guest's screen when the run ended")
        self._mark("qemu_gone")
        self.qemu_info["exit_code"] = vm.returncode
        if cfg.with_virtio_snd and verdict.passed:
            verdict = self._sound_check() or verdict
        return verdict

    def _device_handlers(self) -> List[Handler]:
        """Answers to the guest's READY lines, and a watchdog per required device test."""
        cfg = self.cfg
        handlers = ready_handlers(
            self.devices, extended=cfg.with_input_events_extended, wheel=cfg.with_input_wheel,
            blk_resize_delta_mib=cfg.blk_resize_delta_mib,
        )
        for test in cfg.device_tests():
            handlers.append(Watchdog(test.tests[0], test.after, WATCHDOG_SECONDS,
                                     f"{test.flag} requires it: is the image provisioned with {test.guest_switch}?"))
        return handlers

    def _sound_check(self) -> Optional[Verdict]:
        """After QEMU has stopped (the WAV is complete): did the guest play anything?"""
        cfg = self.cfg
        path = self.artifacts / "virtio-snd.wav"
        try:
            heard = wav.level(path.read_bytes())
        except (OSError, wav.WavError) as exc:
            return Verdict(ExitCode.FAIL, "VIRTIO_SND_WAV_UNREADABLE", f"{path.name}: {exc}")
        self.qemu_info["virtio_snd_wav"] = heard.describe()
        if heard.audible(cfg.virtio_snd_wav_peak_threshold, cfg.virtio_snd_wav_rms_threshold):
            self.console.info(f"virtio-snd: the guest's playback was heard ({heard.describe()})")
            return None
        return Verdict(ExitCode.FAIL, "VIRTIO_SND_WAV_SILENT",
                       f"the guest passed its sound tests but played silence ({heard.describe()}; thresholds: peak > "
                       f"{cfg.virtio_snd_wav_peak_threshold} or rms > {cfg.virtio_snd_wav_rms_threshold})")

    def _checks_at_pass(self) -> List[Callable[[Tracker], Optional[Verdict]]]:
        """What a RESULT|PASS must also show, beyond the required tests: the interrupt modes asked for."""
        cfg = self.cfg
        names = sorted({d.irq_name for d in self.devices}, key=["virtio-blk", "virtio-net", "virtio-input",
                                                               "virtio-snd"].index)
        checks: List[Callable[[Tracker], Optional[Verdict]]] = []
        if cfg.require_intx or cfg.require_msi:
            expected = "intx" if cfg.require_intx else "msi"
            checks.append(lambda tracker: irq.mode_problem(tracker, names, expected))
        for dev in ("net", "blk", "snd", "input"):
            if getattr(cfg, f"require_virtio_{dev}_msix"):
                checks.append(functools.partial(irq.msix_problem, device=f"virtio-{dev}"))
        return checks

    def _preflight(self, vm: QemuProcess) -> None:
        """Before the guest runs a single instruction: is every device what the guest's drivers match?"""
        try:
            reply = vm.execute("query-pci")
        except QmpError as exc:
            raise PciPreflightError(f"QMP query-pci failed: {exc}") from exc
        functions = pci_functions(reply)
        self.qemu_info["pci"] = [f.describe() for f in functions if f.vendor == VIRTIO_VENDOR]
        problems = preflight_problems(self.devices, functions)
        if problems:
            raise PciPreflightError(
                f"QEMU's virtio PCI functions do not match the {self.cfg.profile} profile: " + "; ".join(problems),
                hint="see README, Devices: --virtio-transitional for early images; check --qemu-arg and --qemu-system",
            )

    def _record_sound(self, vm: QemuProcess) -> None:
        """Before the guest runs: QEMU records the sound device's playback into the artifacts (HMP wavcapture)."""
        command = wavcapture_command(str(self.artifacts / "virtio-snd.wav"))
        try:
            said = vm.execute("human-monitor-command", {"command-line": command})
        except QmpError as exc:
            raise HostError(f"QEMU could not start recording the sound ({command}): {exc}") from exc
        if isinstance(said, str) and said.strip():  # HMP answers an error in words, a success with nothing
            raise HostError(f"QEMU could not start recording the sound ({command}): {said.strip()}")
        self.qemu_info["virtio_snd_recording"] = command

    def _absorb(self, ctx: Context) -> None:
        """What the follow loop learnt, kept for result.json."""
        self.timings.update(self.judge.timings)
        self.notes.extend(self.judge.notes)
        self.notes.extend(ctx.notes)
        self.actions.extend(ctx.actions)

    def _write(self, artifacts: Path, verdict: Verdict) -> None:
        tracker = self.judge.tracker
        tests = list(tracker.tests.values())
        document = result_document(
            verdict, tests, tracker.required, self.timings, self.qemu_info, tracker.config,
            {
                "harness_version": __version__,
                "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "notes": self.notes,
                "host_actions": self.actions,
                "artifacts": str(artifacts),
            },
        )
        write_json(artifacts / "result.json", document)
        seconds = self.timings.get("verdict") or 0.0
        (artifacts / "junit.xml").write_bytes(junit_xml(verdict, tests, tracker.required, seconds))


def run_selftest(cfg: SelftestConfig, console: Console) -> RunOutcome:
    run = Run(cfg, console)
    outcome = run.execute()
    if outcome.artifacts is None:
        return outcome
    console.verdict(outcome.verdict.line())
    if not outcome.verdict.passed:
        tail = serial_tail(outcome.artifacts / "serial.log")
        if tail:
            console.block("last lines of the serial log:", tail)
        if (outcome.artifacts / "screen.png").exists():
            console.info(f"the guest's screen when the run ended: {outcome.artifacts / 'screen.png'}")
    console.info(f"artifacts: {outcome.artifacts}")
    return outcome


def serial_tail(path: Path, lines: int = 20) -> List[str]:
    """The last lines of a log, read from its end (the log can be huge)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            data = f.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace").replace("\r", "")
    return [t for t in text.split("\n") if t.strip()][-lines:]
