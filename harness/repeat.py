"""``selftest --repeat N --jobs J``: many runs of one selftest on this machine, J at once.

Each run is a child ``python -m harness selftest`` with its own artifacts folder
(``<artifacts>/run-NNN/``, its output in ``harness.log`` there) and, where this
machine allows it, a network namespace of its own (harness/netns.py), so every
guest has 127.0.0.1:18080/18081 to itself. Where it does not, the runs go one at
a time and take the host-wide port lock, like any run outside a namespace.
The guest is offered the run's number through fw_cfg (``--run-index``).

This module starts, watches and stops the children; what to run next comes from
harness/schedule.py and the sums from harness/tally.py: a table, the totals,
``junit.xml`` (a testsuite per run) and ``summary.json`` in the artifacts folder,
and the worst exit code.

Ctrl-C or SIGTERM: no new run; SIGTERM to every run under way (each stops its
QEMU, writes its artifacts and exits 130), bounded; a second Ctrl-C kills them
(their QEMU dies with them). A child also ends itself when the parent is gone:
its stdin, a pipe from here, closes (``--exit-on-stdin-eof``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, Dict, Iterable, List, Mapping, Optional, Sequence

from harness import interrupt, netns
from harness.artifacts import prepare_artifacts, write_json
from harness.config import SelftestConfig
from harness.console import Console
from harness.deadline import Deadline
from harness.errors import HostError
from harness.exitcodes import ExitCode
from harness.schedule import Schedule, default_jobs, time_left
from harness.tally import RunRecord, aggregate_junit, run_name, summary_table, totals

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # what a child needs on sys.path to import harness
# A run's process is stopped when it outlives its --timeout by this much (start-up, probes, stopping QEMU).
CHILD_MARGIN = 300.0
STOP_WAIT = 60.0  # for the runs to stop their QEMU after SIGTERM, before they are killed
POLL = 0.1


def available_mib() -> int:
    """Memory available for new processes (MemAvailable), in MiB."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 4096


def child_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def read_token(folder: Path, code: int) -> str:
    """The verdict token of a finished run: from its result.json, else its last FAIL line, else a guess."""
    if code < 0:
        return signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else f"signal {-code}"
    try:
        token = json.loads((folder / "result.json").read_text()).get("token")
        if isinstance(token, str) and token:
            return token
    except (OSError, ValueError, AttributeError):
        pass
    try:
        lines = (folder / "harness.log").read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in reversed(lines):
        if line.startswith("FAIL: ") and line.count(":") >= 2:
            return line.split(":")[1].strip()
    return "PASS" if code == 0 else ExitCode(code).name if code in ExitCode._value2member_map_ else "?"


def read_junit(folder: Path) -> Optional[bytes]:
    try:
        return (folder / "junit.xml").read_bytes()
    except OSError:
        return None


# --- one run -----------------------------------------------------------------


class Child:
    """One run of the repeat: a ``python -m harness selftest`` process writing to its own folder."""

    def __init__(self, index: int, argv: Sequence[str], folder: Path, env: Mapping[str, str]) -> None:
        self.index = index
        self.folder = folder
        self.started = time.monotonic()
        self.stopping: Optional[Deadline] = None
        folder.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = open(folder / "harness.log", "wb")
        try:
            # Its own session: a Ctrl-C on the terminal reaches the parent, which stops every run.
            self.proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=self._log,
                                         stderr=subprocess.STDOUT, env=dict(env), start_new_session=True)
        except OSError as exc:
            self._log.close()
            raise HostError(f"cannot start a run: {argv[0]}: {exc.strerror}") from exc

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def poll(self) -> Optional[int]:
        return self.proc.poll()

    def stop(self) -> None:
        """Ask the run to end (SIGTERM: it stops its QEMU and writes its artifacts)."""
        if self.stopping is None and self.proc.poll() is None:
            self.stopping = Deadline(STOP_WAIT)
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """End it now (its QEMU dies with it: the parent-death signal)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def close(self) -> int:
        self.kill()
        code = self.proc.wait()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self._log.close()
        return code

    def record(self, code: int) -> RunRecord:
        return RunRecord(self.index, code, read_token(self.folder, code), self.elapsed, self.folder)


# --- progress ----------------------------------------------------------------


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """A line per finished run, and on a terminal a live line: done/total, passed, failed, time left."""

    def __init__(self, console: Console, schedule: Schedule, jobs: int) -> None:
        self.console = console
        self.schedule = schedule
        self.jobs = jobs
        self.seconds: List[float] = []

    def counts(self) -> str:
        s = self.schedule
        return f"{len(s.outcomes)}/{s.total} done: {s.passed} passed, {s.failed} failed"

    def finished(self, record: RunRecord) -> None:
        self.seconds.append(record.seconds)
        what = "PASS" if record.passed else f"FAIL exit {record.code} {record.token}"
        where = "" if record.passed or record.artifacts is None else f" ({record.artifacts})"
        self.console.info(f"{record.label}: {what} in {record.seconds:.1f} s{where}  [{self.counts()}]")

    def update(self, running_elapsed: Sequence[float]) -> None:
        s = self.schedule
        waiting = 0 if s.stopped else s.total - len(s.outcomes) - len(running_elapsed)
        left = time_left(waiting, running_elapsed, self.seconds, self.jobs)
        eta = "" if left is None else f", about {duration(left)} left"
        self.console.live_line(f"[{self.counts()}, {len(running_elapsed)} running{eta}]")


def spans(indexes: Iterable[int]) -> str:
    """1, 2, 3, 5 -> 'run-001..run-003, run-005'."""
    out: List[List[int]] = []
    for index in sorted(indexes):
        if out and out[-1][1] == index - 1:
            out[-1][1] = index
        else:
            out.append([index, index])
    return ", ".join(run_name(a) if a == b else f"{run_name(a)}..{run_name(b)}" for a, b in out)


def stop_message(record: RunRecord, running: int) -> str:
    under_way = {0: "no run is under way", 1: "the run under way finishes"}.get(
        running, f"the {running} runs under way finish")
    return f"{record.label} failed ({record.token}): --until-fail starts no new run; {under_way}"


def report(base: Path, records: Sequence[RunRecord], reports: Mapping[int, Optional[bytes]], schedule: Schedule,
           also: Sequence[int], about: Mapping[str, Any], console: Console) -> int:
    """Write junit.xml and summary.json into the artifacts folder, print the table and the totals; the exit code."""
    t = totals(records, schedule.total, also)
    (base / "junit.xml").write_bytes(aggregate_junit(records, reports))
    never = schedule.not_started()
    write_json(base / "summary.json", {
        **about, "totals": t.as_dict(), "runs": [r.as_dict() for r in sorted(records, key=lambda r: r.index)],
        "not_run": never, "first_failure": schedule.first_failure,
    })
    console.info("")
    if records:
        console.info(summary_table(records))
    if never:
        console.info(f"not run: {spans(never)}")
    console.info(f"artifacts: {base}/ (junit.xml and summary.json; each run's in its own folder)")
    console.verdict(t.line())
    return int(t.worst)


# --- the repeat --------------------------------------------------------------


def child_argv(cfg: SelftestConfig, options: Sequence[str], index: int, folder: Path,
               isolation: Optional[netns.Isolation]) -> List[str]:
    """The command of one run: the repeat's selftest options, and its own disk, folder, number and namespace."""
    assert cfg.disk is not None
    argv = [sys.executable, "-m", "harness", "selftest", *options, "--disk", str(cfg.disk.resolve()),
            "--artifacts", str(folder), "--run-index", str(index), "--exit-on-stdin-eof"]
    if cfg.http_log is not None:
        argv += ["--http-log", str(folder / cfg.http_log.name)]
    if isolation is None:
        return argv
    return isolation.wrap([*argv, "--private-network"])


def run_repeat(cfg: SelftestConfig, options: Sequence[str], console: Console) -> int:
    """``cfg.repeat`` runs, ``jobs`` at once; the worst exit code."""
    isolation, why = netns.probe_local()
    jobs = min(cfg.jobs, cfg.repeat) if cfg.jobs else default_jobs(
        cfg.repeat, os.cpu_count() or 1, available_mib(), cfg.memory, cfg.smp)
    if isolation is None and jobs > 1:
        console.info(f"no network namespace for the runs here ({why}): they share 127.0.0.1 and go one at a time, "
                     f"not {jobs} at once")
        jobs = 1
    base = prepare_artifacts(cfg.artifacts)
    where = (f"each in {isolation.describe()}, with 127.0.0.1:{cfg.http_port}/{cfg.udp_port} to itself"
             if isolation else "taking turns on the host-wide port lock")
    console.info(f"{cfg.repeat} runs, {jobs} at once, {where}; artifacts in {base}/run-NNN/")
    repeat = Repeat(cfg, options, isolation, jobs, base, console)
    interrupted = repeat.run()
    about = {"isolation": f"each run in {isolation.describe()}" if isolation else f"none ({why}): host-wide port lock",
             "jobs": jobs, "until_fail": cfg.until_fail, "interrupted": interrupted}
    return report(base, repeat.records, repeat.reports, repeat.schedule,
                  [ExitCode.INTERRUPTED] if interrupted else [], about, console)


class Repeat:
    """The runs under way, and those finished."""

    def __init__(self, cfg: SelftestConfig, options: Sequence[str],
                 isolation: Optional[netns.Isolation], jobs: int, base: Path, console: Console) -> None:
        self.cfg = cfg
        self.options = options
        self.isolation = isolation
        self.jobs = jobs
        self.base = base
        self.console = console
        self.schedule = Schedule(cfg.repeat, cfg.until_fail)
        self.progress = Progress(console, self.schedule, jobs)
        self.records: List[RunRecord] = []
        self.reports: Dict[int, Optional[bytes]] = {}
        self.children: Dict[int, Child] = {}
        self.env = child_env()
        self.bound = cfg.timeout + CHILD_MARGIN
        self.ports = [("tcp", cfg.http_port)] + ([] if cfg.disable_udp else [("udp", cfg.udp_port)])

    def run(self) -> bool:
        """Until every run has ended; True when a signal cut it short."""
        with interrupt.held(), contextlib.ExitStack() as stack:
            stack.callback(self._close)
            try:
                while not self.schedule.done:
                    self._start()
                    self._reap()
                    self.progress.update([c.elapsed for c in self.children.values()])
                    interrupt.sleep(POLL)
            except KeyboardInterrupt as exc:
                self.schedule.stop()
                self._stop_all(getattr(exc, "name", "Ctrl-C"))
                interrupt.reset()  # a signal now changes nothing: the summary comes, the exit code is 130
                return True
        return False

    def _start(self) -> None:
        while len(self.children) < self.jobs:
            index = self.schedule.take()
            if index is None:
                return
            folder = self.base / run_name(index)
            if self.isolation is None:
                who = netns.held_by(self.ports)
                if who:
                    self.console.info(f"{run_name(index)} waits for {who}, which holds the ports "
                                      f"{self.cfg.http_port}/{self.cfg.udp_port} on 127.0.0.1")
            argv = child_argv(self.cfg, self.options, index, folder, self.isolation)
            self.children[index] = Child(index, argv, folder, self.env)

    def _reap(self) -> None:
        for child in list(self.children.values()):
            if child.poll() is not None:
                self._collect(child)
            elif child.stopping is not None and child.stopping.expired:
                self.console.info(f"{run_name(child.index)}: did not stop within {STOP_WAIT:g} s: killing it")
                child.kill()
            elif child.stopping is None and child.elapsed > self.bound:
                self.console.info(f"{run_name(child.index)}: still running {self.bound:g} s after it started: "
                                  "stopping it")
                child.stop()

    def _collect(self, child: Child) -> None:
        del self.children[child.index]
        record = child.record(child.close())
        self.records.append(record)
        self.reports[record.index] = read_junit(child.folder)
        stops = self.schedule.finish(record.index, record.passed)
        self.progress.finished(record)
        if stops:
            self.console.info(stop_message(record, len(self.children)))

    def _stop_all(self, name: str) -> None:
        """After Ctrl-C or SIGTERM: every run under way stops its QEMU (bounded); a second Ctrl-C kills them."""
        count = len(self.children)
        self.console.info(f"interrupted by {name}: no new run; stopping the {count} run{'s' * (count != 1)} under "
                          "way (each stops its QEMU and keeps its artifacts; Ctrl-C again to kill them)")
        interrupt.reset()  # a second signal raises again
        for child in self.children.values():
            child.stop()
        try:
            deadline = Deadline(STOP_WAIT + 5)
            while self.children and not deadline.expired:
                self._reap()
                interrupt.sleep(POLL)
        except KeyboardInterrupt:
            self.console.info("killing the runs under way")
        for child in list(self.children.values()):
            child.kill()
            self._collect(child)

    def _close(self) -> None:
        """Whatever happened, no run outlives the repeat: stopped politely (bounded), then killed."""
        for child in self.children.values():
            child.stop()
        deadline = Deadline(STOP_WAIT)
        while any(c.poll() is None for c in self.children.values()) and not deadline.expired:
            time.sleep(POLL)
        for child in list(self.children.values()):
            child.close()
