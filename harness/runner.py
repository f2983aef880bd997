"""One selftest run: host services, QEMU, the serial watch, the verdict, the artifacts.

This is the shell around the pure core (markers, verdict, qemu_argv): it owns
every resource through an ExitStack, so QEMU, the servers and the scratch
folder are gone on every path out, including Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from harness import __version__
from harness.artifacts import junit_xml, prepare_artifacts, result_document, write_json
from harness.config import SelftestConfig, check_disk
from harness.console import Console
from harness.deadline import Deadline
from harness.errors import HarnessError, UsageError
from harness.exitcodes import ExitCode
from harness.hostsvc import HostServices
from harness.lines import Line
from harness.markers import Marker, parse
from harness.qemu import (
    KvmBootError,
    QemuProcess,
    create_overlay,
    disk_info,
    find_qemu,
    qemu_img_for,
    qemu_version,
    supports_option,
    with_accel_fallback,
)
from harness.qemu_argv import QemuSpec, build_argv, shell_line
from harness.verdict import Tracker, Verdict, timeout_verdict, vm_gone_verdict
from harness.watcher import SerialWatcher

log = logging.getLogger(__name__)

POLL = 0.05  # how often the serial log is read: the bound on verdict latency
STATUS_POLL = 0.5  # how often QEMU's run state is asked over QMP
# VM run states that end a run before the guest's verdict, with their tokens.
DEAD_STATES = {
    "internal-error": ("VM_INTERNAL_ERROR", "the VM stopped with a hypervisor internal error"),
    "guest-panicked": ("GUEST_PANICKED", "the guest panicked"),
    "io-error": ("VM_IO_ERROR", "the VM stopped on a disk I/O error"),
    "shutdown": ("GUEST_SHUTDOWN", "the guest powered off"),
}


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
    return [
        ("opt/aero/http_url", f"http://10.0.2.2:{cfg.http_port}{cfg.http_path}"),
        ("opt/aero/udp_port", str(cfg.udp_port)),
    ]


def default_test_guest(console: Console) -> Path:
    """The built-in test guest, built first when missing or out of date."""
    try:
        from images import testguest
    except ImportError as exc:
        raise UsageError(
            "no --disk given and the test-guest builder (images/) is not available here",
            hint="pass --disk PATH to a guest image",
        ) from exc
    if not testguest.is_current(testguest.DEFAULT_OUT):
        console.info(f"building the test guest at {testguest.DEFAULT_OUT} (once)...")
    return testguest.ensure()


def resolve_disk(cfg: SelftestConfig, console: Console) -> Path:
    if cfg.disk is not None:
        check_disk(cfg.disk)
        return cfg.disk
    return default_test_guest(console)


def config_mismatch(cfg: SelftestConfig, config: Marker) -> Optional[str]:
    """A warning when the guest's baked-in URL or UDP port differ from the host's."""
    problems = []
    url = config.get("http_url")
    if url:
        match = re.match(r"https?://[^/:]+(?::(\d+))?(/[^?#]*)?", url)
        if match:
            port = int(match.group(1) or 80)
            path = match.group(2) or "/"
            if port != cfg.http_port or path != cfg.http_path:
                problems.append(f"the guest uses {url} but the host serves port {cfg.http_port} path {cfg.http_path}")
    udp = config.get("udp_port")
    if udp and udp.isdigit() and int(udp) != cfg.udp_port:
        problems.append(f"the guest uses UDP port {udp} but the host echoes on {cfg.udp_port}")
    return "; ".join(problems) or None


class Run:
    def __init__(self, cfg: SelftestConfig, console: Console) -> None:
        self.cfg = cfg
        self.console = console
        self.tracker = Tracker(cfg.require_tests)
        self.timings: Dict[str, Optional[float]] = {}
        self.qemu_info: Dict[str, Any] = {}
        self.notes: List[str] = []
        self.started = time.monotonic()
        self.panic_pause = False

    def _mark(self, name: str) -> None:
        self.timings[name] = time.monotonic() - self.started

    def execute(self) -> RunOutcome:
        cfg = self.cfg
        cfg.validate()
        qemu = find_qemu(cfg.qemu_system)
        version = qemu_version(qemu)
        qemu_img = qemu_img_for(qemu)
        self.qemu_info.update(binary=qemu, version=version)
        self.panic_pause = supports_option(qemu, "-action")
        if cfg.dry_run:
            return self._dry_run(qemu, qemu_img)
        disk = resolve_disk(cfg, self.console)
        base = disk_info(qemu_img, disk)
        artifacts = prepare_artifacts(cfg.artifacts)
        self.artifacts = artifacts
        verdict: Optional[Verdict] = None
        with contextlib.ExitStack() as stack:
            # The QMP socket path must stay short (108 bytes), so scratch lives in the temp dir.
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aero-run-")))
            services = stack.enter_context(HostServices(cfg.http_port, cfg.udp_port, cfg.http_path))
            self._mark("services_up")


            def fallback() -> None:
                self.console.info("KVM stopped the VM with an internal error at boot; running again under TCG")
                self.notes.append("KVM failed at boot (internal-error); fell back to TCG")
                os.replace(artifacts / "serial.log", artifacts / "serial-kvm-attempt.log")
                self.tracker = Tracker(cfg.require_tests)

            try:
                verdict = with_accel_fallback(
                    qemu, cfg.accel, lambda accel, may_fall_back: self._attempt(
                        qemu, qemu_img, base, scratch, accel, may_fall_back), fallback,
                )
            except KeyboardInterrupt:
                verdict = Verdict(ExitCode.INTERRUPTED, "INTERRUPTED", "interrupted by Ctrl-C or SIGTERM")
            except HarnessError as exc:
                verdict = Verdict(exc.exit_code, exc.token, exc.message)
                raise
            finally:
                if verdict is None:
                    verdict = Verdict(ExitCode.HOST_ERROR, "HOST_ERROR", "the run ended with an error")
                self.qemu_info["http_requests"] = len(services.requests)
                self._write(artifacts, verdict)
        return RunOutcome(verdict, artifacts)

    def _spec(self, qemu: str, disk: Path, fmt: str, serial: Path, qmp: Path, accel: str) -> QemuSpec:
        cfg = self.cfg
        return QemuSpec(
            qemu=qemu, disk=str(disk), disk_format=fmt, serial_log=str(serial), qmp_socket=str(qmp),
            accel=accel, memory_mib=cfg.memory, smp=cfg.smp, fw_cfg=tuple(fw_cfg_hints(cfg)),
            extra=tuple(cfg.qemu_args), panic_pause=self.panic_pause,
        )

    def _dry_run(self, qemu: str, qemu_img: str) -> RunOutcome:
        """Print the command a run would use; build, create and start nothing."""
        cfg = self.cfg
        if cfg.disk is not None:
            disk, fmt = cfg.disk, disk_info(qemu_img, cfg.disk).format
        else:
            from images import testguest

            disk, fmt = testguest.DEFAULT_OUT, "qcow2"
        accel = cfg.accel
        if accel == "auto":
            accel = "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg"
        target = Path(cfg.artifacts).resolve()
        disk_arg = Path("<scratch>/overlay.qcow2") if cfg.snapshot else disk.resolve()
        spec = self._spec(
            qemu, disk_arg, "qcow2" if cfg.snapshot else fmt, target / "serial.log", Path("<scratch>/qmp.sock"), accel,
        )
        # Unpaused, so that the line runs as it is when pasted (a run starts paused and resumes over QMP).
        argv = build_argv(replace(spec, paused=False))
        self.console.verdict(json.dumps(argv))
        self.console.verdict(shell_line(argv))
        if cfg.accel == "auto":
            self.console.info("note: --accel auto is settled at run time (KVM if it runs guest code here, else TCG)")
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
            fmt = "qcow2"
        else:
            disk, fmt = base.path.resolve(), base.format
        qmp_socket = scratch / "qmp.sock"
        if qmp_socket.exists():
            qmp_socket.unlink()
        argv = build_argv(self._spec(qemu, disk, fmt, serial, qmp_socket, accel))
        self.qemu_info.update(argv=argv, accel=accel, snapshot=cfg.snapshot, base_disk=str(base.path.resolve()))
        watcher = SerialWatcher(serial)
        vm = QemuProcess(argv, self.artifacts / "qemu.log", qmp_socket)
        with contextlib.ExitStack() as stack:
            stack.callback(watcher.close)
            stack.enter_context(vm)
            self._mark("qemu_started")
            vm.resume()
            deadline = Deadline(cfg.timeout)
            verdict = self._watch(vm, watcher, deadline, may_fall_back)
            self._mark("verdict")
            if not verdict.passed and vm.alive():
                if vm.screendump(self.artifacts / "screen.png"):
                    self.notes.append("screen.png: the guest's screen when the run ended")
        self._mark("qemu_gone")
        self.qemu_info["exit_code"] = vm.returncode
        return verdict

    def _watch(self, vm: QemuProcess, watcher: SerialWatcher, deadline: Deadline, may_fall_back: bool) -> Verdict:
        cfg = self.cfg
        next_status = 0.0
        while True:
            verdict = self._consume(watcher)
            if verdict is not None:
                return verdict
            if not vm.alive():
                verdict = self._consume(watcher, final=True)
                if verdict is not None:
                    return verdict
                return vm_gone_verdict(
                    "QEMU_EXITED", f"QEMU exited with code {vm.returncode}", self.tracker
                )
            now = time.monotonic()
            if now >= next_status:
                next_status = now + STATUS_POLL
                state = vm.status()
                if state in DEAD_STATES:
                    if state == "internal-error" and may_fall_back and self.tracker.last is None:
                        raise KvmBootError()
                    token, what = DEAD_STATES[state]
                    self._consume(watcher)
                    return vm_gone_verdict(token, what, self.tracker)
            if deadline.expired:
                return timeout_verdict(cfg.timeout, self.tracker)
            last = self.tracker.last.short if self.tracker.last else "waiting for the guest's START"
            self.console.status(deadline.elapsed, cfg.timeout, last)
            time.sleep(POLL)

    def _consume(self, watcher: SerialWatcher, final: bool = False) -> Optional[Verdict]:
        """Everything the log holds now, a chunk at a time; the verdict if RESULT is among it."""
        while True:
            lines = watcher.read_lines()
            if final and not watcher.more:
                lines += watcher.splitter.flush()
            verdict = self._lines(lines)
            if verdict is not None or not watcher.more:
                return verdict

    def _lines(self, lines: List[Line]) -> Optional[Verdict]:
        for line in lines:
            if self.cfg.follow_serial:
                self.console.serial(line.text)
            marker = parse(line.text)
            if marker is None:
                continue
            if "first_marker" not in self.timings:
                self._mark("first_marker")
            if marker.kind == "CONFIG":
                problem = config_mismatch(self.cfg, marker)
                if problem:
                    self.console.info(f"warning: {problem}")
                    self.notes.append(problem)
            verdict = self.tracker.add(marker)
            if verdict is not None:
                self._mark("result_seen")
                return verdict
        return None

    def _write(self, artifacts: Path, verdict: Verdict) -> None:
        tests = list(self.tracker.tests.values())
        document = result_document(
            verdict, tests, self.cfg.require_tests, self.timings, self.qemu_info, self.tracker.config,
            {
                "harness_version": __version__,
                "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "notes": self.notes,
                "artifacts": str(artifacts),
            },
        )
        write_json(artifacts / "result.json", document)
        seconds = self.timings.get("verdict") or 0.0
        (artifacts / "junit.xml").write_bytes(junit_xml(verdict, tests, self.cfg.require_tests, seconds))


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
