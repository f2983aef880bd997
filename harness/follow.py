"""The follow loop: serial lines in, handlers act on the VM, a verdict out.

Every run that boots a guest and waits for what it says (selftest,
install-win7, and each device test) plugs into ``follow``:

- a ``Judge`` holds the run's rules: it reads every line and decides when the
  run is over, and what it means when QEMU exits, the VM stops, or time runs out;
- ``Handler``s are device tests and helpers that act on lines (a READY marker
  asks the host to inject input) or on a timer (a periodic screenshot). They see
  the VM through ``Context`` and may end the run with a verdict of their own.

The loop sleeps until something happens: the serial log grows (inotify), QEMU
sends a QMP event or exits, a signal arrives (``interrupt.wake_fd()``), a
handler's file descriptor becomes readable, or the next moment a handler or
the deadline asked for. A run whose guest is silent costs no CPU.

The loop owns no resource: the caller hands in a started QEMU and a watcher.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

from harness import interrupt
from harness.console import Console
from harness.deadline import Deadline
from harness.exitcodes import ExitCode
from harness.lines import Line
from harness.markers import Marker, parse
from harness.qemu import QemuProcess
from harness.verdict import Verdict
from harness.watcher import SerialWatcher

# Where the kernel cannot say when the serial log grows (no inotify): how often it is read.
POLL = 0.05
# QEMU writes COM1 to the log a byte at a time: while the guest is talking, the log is read at most
# every BURST seconds (a wake-up per byte costs more than the guest's output is worth); the first
# write after a silence wakes the loop at once.
BURST = 0.005
# QMP events after which the VM may have stopped for good: the judge then hears its run state.
STATE_EVENTS = frozenset({"STOP", "SHUTDOWN", "GUEST_PANICKED"})


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
        """Called once ``next_tick`` has come, or when ``fileno`` is readable."""
        return None

    def next_tick(self) -> Optional[float]:
        """When (``time.monotonic()``) ``on_tick`` is next needed; None: not until a line comes.

        Asked again after every line and every tick: a handler with nothing
        scheduled returns None, and an idle run then sleeps until something happens.
        """
        return None

    def fileno(self) -> Optional[int]:
        """A file descriptor that becomes readable when ``on_tick`` has something to look at (None: none)."""
        return None


class Judge(Handler):
    """The run's rules: when it is over and what it means."""

    def on_exit(self, returncode: Optional[int]) -> Verdict:
        raise NotImplementedError

    def on_state(self, state: str) -> Optional[Verdict]:
        """QEMU's run state (QMP query-status), asked each time QEMU reports the VM stopped (``STATE_EVENTS``)."""
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

    ready: FrozenSet[int] = frozenset()  # file descriptors that woke the loop
    stopped = False  # QEMU said the VM stopped: what does its run state mean?
    heard = 0.0  # when the log last grew
    while True:
        before = watcher.bytes_read
        verdict = feed()
        if verdict is not None:
            return verdict
        if watcher.bytes_read != before:
            heard = time.monotonic()
        if not vm.alive():
            return feed(final=True) or judge.on_exit(vm.returncode)
        if stopped:
            state = vm.status()
            if state is not None:
                # What the guest wrote before it stopped comes first.
                verdict = feed() or judge.on_state(state)
                if verdict is not None:
                    return verdict
        now = time.monotonic()
        for handler in everyone:
            due = handler.next_tick()
            if (due is not None and due <= now) or handler.fileno() in ready:
                verdict = handler.on_tick(ctx)
                if verdict is not None:
                    return verdict
        if deadline.expired:
            return feed(final=True) or judge.on_timeout(deadline.seconds or 0.0)
        ctx.console.status(deadline.elapsed, deadline.seconds or 0.0, judge.status())
        wake = vm.wait(*_sleep(watcher.fileno(), heard, everyone, ctx.console, deadline))
        interrupt.woke()
        ready, stopped = wake.ready, any(event in STATE_EVENTS for event in wake.events)


def _sleep(serial_fd: Optional[int], heard: float, handlers: Sequence[Handler], console: Console,
           deadline: Deadline) -> Tuple[List[int], Optional[float]]:
    """What the loop sleeps on besides QEMU itself, and for how long (None: until one of them wakes it).

    It wakes for a signal, a handler's descriptor, the serial log growing (but not during a burst of
    output, see BURST), and the first moment a handler, the status line or the deadline asked for.
    """
    now = time.monotonic()
    moments = [h.next_tick() for h in handlers] + [console.next_status(), deadline.at]
    fds = [interrupt.wake_fd(), *(h.fileno() for h in handlers)]
    if serial_fd is None:  # no inotify: read the log every POLL
        moments.append(now + POLL)
    elif now < heard + BURST:  # the guest is talking: read again when the burst interval is over
        moments.append(heard + BURST)
    else:
        fds.append(serial_fd)
    first = min((m for m in moments if m is not None), default=None)
    return [fd for fd in fds if fd is not None and fd >= 0], None if first is None else max(0.0, first - now)


class FirmwareWatch(Handler):
    """Ends a run whose firmware found nothing to boot, instead of waiting for the timeout.

    Woken when the firmware's log grows; where inotify is missing, it reads the log every 0.25 s.
    """

    SAYS = "No bootable device"
    TOKEN = "NO_BOOTABLE_DEVICE"
    EVERY = 0.25

    def __init__(self, log: Path, what: str = "on the disk (see firmware.log and screen.png); is --disk a bootable "
                 "guest image?") -> None:
        self.watcher = SerialWatcher(log)
        self.what = what
        self.last_read = 0.0

    def fileno(self) -> Optional[int]:
        return self.watcher.fileno()

    def next_tick(self) -> Optional[float]:
        return None if self.watcher.fileno() is not None else self.last_read + self.EVERY

    def on_tick(self, ctx: Context) -> Optional[Verdict]:
        self.last_read = time.monotonic()
        # All that is new, not one chunk: nothing wakes the loop for the rest until the firmware writes again.
        while True:
            for line in self.watcher.read_lines():
                if self.SAYS in line.text:
                    return Verdict(ExitCode.QEMU_EXITED, self.TOKEN,
                                   f"the firmware found no bootable device {self.what}")
            if not self.watcher.more:
                return None

    def close(self) -> None:
        self.watcher.close()
