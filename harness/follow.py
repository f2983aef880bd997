"""The follow loop: serial lines in, handlers act on the VM, a verdict out.

Every run that boots a guest and waits for what it says (selftest,
install-win7, and each device test) plugs into ``follow``:

- a ``Judge`` holds the run's rules: it reads every line and decides when the
  run is over, and what it means when QEMU exits, the VM stops, or time runs out;
- ``Handler``s are device tests and helpers that act on lines (a READY marker
  asks the host to inject input) or on a timer (a periodic screenshot). They see
  the VM through ``Context`` and may end the run with a verdict of their own.

The loop owns no resource: the caller hands in a started QEMU and a watcher.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from harness import interrupt
from harness.console import Console
from harness.deadline import Deadline
from harness.exitcodes import ExitCode
from harness.lines import Line
from harness.markers import Marker, parse
from harness.qemu import QemuProcess
from harness.verdict import Verdict
from harness.watcher import SerialWatcher

POLL = 0.05  # how often the serial log is read: the bound on verdict latency
STATUS_POLL = 0.5  # how often QEMU's run state is asked over QMP


@dataclass
class Context:
    """What a handler sees: the VM, the console, the clock, and the run's record of host actions."""

    vm: QemuProcess
    console: Console
    started: float = field(default_factory=time.monotonic)
    actions: List[Dict[str, Any]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def record(self, action: str, **details: Any) -> None:
        """A host action (or the guest's answer to one), for the console and result.json."""
        entry = {"t": round(self.elapsed, 3), "action": action, **details}
        self.actions.append(entry)
        said = ", ".join(f"{k}={v}" for k, v in details.items())
        self.console.info(f"[{self.elapsed:7.1f}s] host: {action}" + (f" ({said})" if said else ""))


class Handler:
    """A device test or helper. Override what you need; each may return a verdict to end the run."""

    def on_line(self, line: Line, marker: Optional[Marker], ctx: Context) -> Optional[Verdict]:
        return None

    def on_tick(self, ctx: Context) -> Optional[Verdict]:
        """Called at least every ``POLL`` seconds while the run goes on."""
        return None


class Judge(Handler):
    """The run's rules: when it is over and what it means."""

    def on_exit(self, returncode: Optional[int]) -> Verdict:
        raise NotImplementedError

    def on_state(self, state: str) -> Optional[Verdict]:
        """QEMU's run state (QMP query-status), asked every ``STATUS_POLL`` seconds."""
        return None

    def on_timeout(self, seconds: float) -> Verdict:
        raise NotImplementedError

    def status(self) -> str:
        """What the live status line shows."""
        return ""


def follow(
    vm: QemuProcess,
    watcher: SerialWatcher,
    judge: Judge,
    handlers: Sequence[Handler],
    ctx: Context,
    deadline: Deadline,
) -> Verdict:
    """Run until the judge or a handler gives a verdict; QEMU is left running for the caller to stop."""
    everyone: List[Handler] = [judge, *handlers]

    def feed(final: bool = False) -> Optional[Verdict]:
        while True:
            lines = watcher.read_lines()
            if final and not watcher.more:
                lines += watcher.splitter.flush()
            for line in lines:
                marker = parse(line.text)
                for handler in everyone:
                    verdict = handler.on_line(line, marker, ctx)
                    if verdict is not None:
                        return verdict
            if not watcher.more:
                return None

    next_status = 0.0
    while True:
        verdict = feed()
        if verdict is not None:
            return verdict
        if not vm.alive():
            return feed(final=True) or judge.on_exit(vm.returncode)
        now = time.monotonic()
        if now >= next_status:
            next_status = now + STATUS_POLL
            state = vm.status()
            if state is not None:
                # What the guest wrote before it stopped comes first.
                verdict = feed() or judge.on_state(state)
                if verdict is not None:
                    return verdict
        for handler in everyone:
            verdict = handler.on_tick(ctx)
            if verdict is not None:
                return verdict
        if deadline.expired:
            return feed(final=True) or judge.on_timeout(deadline.seconds or 0.0)
        ctx.console.status(deadline.elapsed, deadline.seconds or 0.0, judge.status())
        interrupt.sleep(min(POLL, deadline.remaining))


class FirmwareWatch(Handler):
    """Ends a run whose firmware found nothing to boot, instead of waiting for the timeout."""

    SAYS = "No bootable device"

    def __init__(self, log: Path) -> None:
        self.watcher = SerialWatcher(log)
        self.last_read = 0.0

    def on_tick(self, ctx: Context) -> Optional[Verdict]:
        now = time.monotonic()
        if now - self.last_read < 0.25:
            return None
        self.last_read = now
        for line in self.watcher.read_lines():
            if self.SAYS in line.text:
                return Verdict(ExitCode.QEMU_EXITED, "NO_BOOTABLE_DEVICE",
                               "the firmware found no bootable device on the disk (see firmware.log and screen.png); "
                               "is --disk a bootable guest image?")
        return None

    def close(self) -> None:
        self.watcher.close()
