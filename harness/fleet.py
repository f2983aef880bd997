"""``remote-selftest --repeat N``: the runs of a repeat, spread over SSH hosts by slots.

Each host (``--host HOST:SLOTS``) is prepared once, on its first connection:
checked, the harness installed and the disk uploaded (harness/remote.py). Then
each of its slots, on an SSH connection of its own, takes the next run
(harness/schedule.py), runs it as a remote ``python -m harness selftest`` with
the run's number, in a network namespace of its own when the host allows it (as
a local repeat does, harness/repeat.py; else the host's slots shrink to one),
brings its artifacts home to ``<artifacts>/<host>/run-NNN/`` (the run's output
in ``harness.log`` there) and takes the next.

A host that fails (cannot be reached or prepared, or drops a connection) takes
no more runs, and the run it had goes back to the others; the host is reported
as failed and its code counts in the exit code. The summary is the local
repeat's, with a host column.

Ctrl-C or SIGTERM: no new run; every remote run is told to stop (it stops its
QEMU and its artifacts still come home); a second Ctrl-C drops the connections,
after which each remote run stops itself (its stdin closes).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from harness import interrupt
from harness.artifacts import prepare_artifacts
from harness.console import Console
from harness.deadline import Deadline
from harness.errors import HarnessError
from harness.exitcodes import ExitCode
from harness.netns import Isolation
from harness.remote import (
    SESSION_MARGIN,
    ActiveRuns,
    PrefixWriter,
    RemoteOptions,
    open_connection,
    prepare_host,
    probe_isolation,
    run_selftest_on,
)
from harness.repeat import POLL, Progress, read_junit, read_token, report, stop_message
from harness.schedule import Schedule
from harness.tally import RunRecord, run_name

STOP_WAIT = 60.0  # for the remote runs to stop after a forwarded Ctrl-C
DROP_WAIT = 15.0  # for the workers to notice dropped connections


@dataclass
class Host:
    """A host of the fleet and how it fares."""

    name: str
    slots: int
    used_slots: int = 0
    runs: int = 0
    failure: Optional[Tuple[int, str, str]] = None  # exit code, token, message
    isolation: str = ""
    running: Dict[int, float] = field(default_factory=dict)  # run -> when it started

    def as_dict(self) -> Dict[str, Any]:
        code, token, message = self.failure or (0, "", "")
        return {"host": self.name, "slots": self.slots, "slots_used": self.used_slots, "runs": self.runs,
                "failed": self.failure is not None, "exit_code": code, "token": token or None,
                "message": message or None, "isolation": self.isolation}


def describe(exc: BaseException) -> str:
    if isinstance(exc, HarnessError):
        return exc.message
    text = str(exc).strip()
    return type(exc).__name__ + (f": {text}" if text else "")


def hosts_of(opts: RemoteOptions) -> List[Host]:
    return [Host(name, count) for name, count in zip(opts.hosts, opts.slots or (1,) * len(opts.hosts))]


class Fleet:
    def __init__(self, opts: RemoteOptions, base: Path, console: Console) -> None:
        self.opts = opts
        self.base = base
        self.console = console
        self.hosts = hosts_of(opts)
        self.schedule = Schedule(opts.repeat, opts.until_fail)
        self.progress = Progress(console, self.schedule, sum(h.slots for h in self.hosts))
        self.lock = threading.Lock()  # the schedule, the records, the hosts' state and the console
        self.records: List[RunRecord] = []
        self.reports: Dict[int, Optional[bytes]] = {}
        self.active = ActiveRuns()
        self.out_lock = threading.Lock()
        self.interrupted = False

    # --- the main thread: start the hosts, show progress, take signals ---------

    def run(self) -> bool:
        """Until every host is done; True when a signal cut it short."""
        threads = [threading.Thread(target=self._host, args=(h,), name=f"aero-host-{h.name}", daemon=True)
                   for h in self.hosts]
        with interrupt.held():
            for t in threads:
                t.start()
            try:
                while any(t.is_alive() for t in threads):
                    with self.lock:
                        now = time.monotonic()
                        self.progress.update([now - s for h in self.hosts for s in h.running.values()])
                    interrupt.sleep(POLL)
            except KeyboardInterrupt as exc:
                self._stop(threads, getattr(exc, "name", "Ctrl-C"))
                interrupt.reset()  # a signal now changes nothing: the summary comes, the exit code is 130
                return True
        return False

    def _stop(self, threads: Sequence[threading.Thread], name: str) -> None:
        with self.lock:
            self.interrupted = True
            self.schedule.stop()
            count = sum(len(h.running) for h in self.hosts)
            self.console.info(f"interrupted by {name}: no new run; stopping the {count} remote run"
                              f"{'s' * (count != 1)} under way (each stops its QEMU; its artifacts still come "
                              "home; Ctrl-C again to drop the connections)")
        interrupt.reset()
        self.active.interrupt()
        try:
            deadline = Deadline(STOP_WAIT)
            while any(t.is_alive() for t in threads) and not deadline.expired:
                interrupt.sleep(POLL)
        except KeyboardInterrupt:
            pass
        self.active.close()
        deadline = Deadline(DROP_WAIT)
        for t in threads:
            t.join(max(deadline.remaining, 0.1))

    # --- a host's thread: prepare it once, then its slots ----------------------

    def _host(self, host: Host) -> None:
        say = PrefixWriter(self.console.err, f"[{host.name}] ", self.out_lock)
        conn = self._connect(host)
        if conn is None:
            return
        with conn:
            try:
                prepared = prepare_host(conn, host.name, self.opts, say)  # type: ignore[arg-type]
                isolation, why = probe_isolation(conn)
            except HarnessError as exc:
                self._fail(host, exc.exit_code, exc.token, exc.message)
                return
            except Exception as exc:  # the connection broke: paramiko, socket and invoke errors alike
                self._fail(host, ExitCode.SSH_UNREACHABLE, "SSH_UNREACHABLE",
                           f"{host.name}: the connection was lost while preparing the host ({describe(exc)})")
                return
            with self.lock:
                host.used_slots = host.slots if isolation else 1
                host.isolation = f"each run in {isolation.describe()}" if isolation else f"none ({why})"
                if isolation is None and host.slots > 1:
                    self.console.info(f"{host.name}: no network namespace for the runs there ({why}): its runs go "
                                      f"one at a time, not {host.slots} at once")
            others = [threading.Thread(target=self._slot, args=(host, None, prepared, isolation), daemon=True,
                                       name=f"aero-slot-{host.name}-{n}") for n in range(1, host.used_slots)]
            for t in others:
                t.start()
            self._slot(host, conn, prepared, isolation)
            for t in others:
                t.join()

    def _slot(self, host: Host, conn: Any, prepared: Tuple[str, str, str], isolation: Optional[Isolation]) -> None:
        """Take runs until there are none or the host fails; on a connection of its own unless given one."""
        if conn is None:
            conn = self._connect(host)
            if conn is None:
                return
            with conn:
                self._take_runs(host, conn, prepared, isolation)
        else:
            self._take_runs(host, conn, prepared, isolation)

    def _connect(self, host: Host) -> Any:
        """A new connection to ``host``; None when it cannot be had (the host is then failed)."""
        try:
            return open_connection(host.name, self.opts)
        except HarnessError as exc:
            self._fail(host, exc.exit_code, exc.token, exc.message)
            return None

    def _take_runs(self, host: Host, conn: Any, prepared: Tuple[str, str, str],
                   isolation: Optional[Isolation]) -> None:
        while True:
            with self.lock:
                if host.failure is not None:
                    return
                index = self.schedule.take()
                if index is None:
                    return
                host.running[index] = time.monotonic()
            try:
                record = self._one(host, conn, prepared, isolation, index)
            except Exception as exc:  # the host is gone (or broke): the run goes to the others
                with self.lock:
                    started = host.running.pop(index)
                    if self.interrupted:
                        # Ctrl-C dropped the connections: the run is over, not handed on.
                        self.schedule.finish(index, passed=False)
                        self.records.append(RunRecord(index, ExitCode.INTERRUPTED, "INTERRUPTED",
                                                      time.monotonic() - started, None, host.name))
                        return
                    self.schedule.give_back(index)
                self._fail(host, ExitCode.SSH_UNREACHABLE, "SSH_UNREACHABLE",
                           f"{host.name}: {run_name(index)} broke off ({describe(exc)}); it goes to the other hosts")
                return
            with self.lock:
                host.running.pop(index, None)
                host.runs += 1
                self.records.append(record)
                self.reports[index] = read_junit(record.artifacts) if record.artifacts else None
                stops = self.schedule.finish(index, record.passed)
                self.progress.finished(record)
                if stops:
                    self.console.info(stop_message(record, sum(len(h.running) for h in self.hosts)))

    def _one(self, host: Host, conn: Any, prepared: Tuple[str, str, str], isolation: Optional[Isolation],
             index: int) -> RunRecord:
        local = self.base / host.name / run_name(index)
        local.mkdir(parents=True, exist_ok=True)
        extra = ["--run-index", str(index)] + (["--private-network"] if isolation else [])
        wrapper = [*isolation.prefix, "--"] if isolation else []
        started = time.monotonic()
        # A host that goes silent (no reset, no answer) would hold the run forever: bounded like the run itself.
        watchdog = threading.Timer(self.opts.timeout + SESSION_MARGIN + 60, conn.close)
        watchdog.daemon = True
        watchdog.start()
        try:
            with open(local / "harness.log", "w", encoding="utf-8", errors="replace") as log:
                code = run_selftest_on(conn, self.opts, prepared, local, log, log, self.active, extra, wrapper)
        finally:
            watchdog.cancel()
        if code == -1:
            code = ExitCode.REMOTE_ERROR  # the remote harness ended without an exit status (killed there)
        return RunRecord(index, code, read_token(local, code), time.monotonic() - started, local, host.name)

    def _fail(self, host: Host, code: int, token: str, message: str) -> None:
        with self.lock:
            if host.failure is None:
                host.failure = (int(code), token, message)
                self.console.info(f"FAIL: {token}: {message}; {host.name} takes no more runs")


def run_fleet(opts: RemoteOptions, console: Console) -> int:
    """``opts.repeat`` runs over the hosts' slots; the worst exit code (a failed host's counts)."""
    base = prepare_artifacts(opts.artifacts)
    fleet = Fleet(opts, base, console)
    shown = ", ".join(f"{h.name} ({h.slots} at once)" for h in fleet.hosts)
    console.info(f"{opts.repeat} runs over {shown}; artifacts in {base}/<host>/run-NNN/")
    interrupted = fleet.run()
    for host in fleet.hosts:
        if host.failure:
            console.info(f"{host.name}: FAILED ({host.failure[1]}) after {host.runs} run{'s' * (host.runs != 1)}")
    also = [h.failure[0] for h in fleet.hosts if h.failure] + ([ExitCode.INTERRUPTED] if interrupted else [])
    about = {"hosts": [h.as_dict() for h in fleet.hosts], "until_fail": opts.until_fail, "interrupted": interrupted}
    return report(base, fleet.records, fleet.reports, fleet.schedule, also, about, console)
