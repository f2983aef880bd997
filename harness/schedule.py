"""Which run goes next, how many at once, when to stop, and how long is left (pure).

A repeat numbers its runs 1..N. ``Schedule`` hands the numbers out in order to
whoever has room (a local job, a slot on a host); a run handed back (its host
became unreachable) goes out again first; with ``until_fail`` nothing new goes
out after the first failure. The shells (harness/repeat.py, harness/fleet.py)
hold the processes and connections; this module only decides.
"""

from __future__ import annotations

import heapq
import statistics
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from harness.errors import UsageError

MAX_SLOTS = 64
# What QEMU itself takes beside the guest's memory, for the default number of jobs.
QEMU_OVERHEAD_MIB = 256


def default_jobs(runs: int, cores: int, available_mib: int, memory_mib: int, smp: int) -> int:
    """Runs at once when --jobs is not given: a core per guest CPU, and memory for each guest and its QEMU."""
    by_cores = cores // max(smp, 1)
    by_memory = available_mib // (memory_mib + QEMU_OVERHEAD_MIB)
    return max(1, min(runs, by_cores, by_memory))


def parse_host(spec: str) -> Tuple[str, int]:
    """``HOST[:SLOTS]`` as (host, slots); a port is written ``user@host:PORT:SLOTS``.

    HOST is a name from ssh_config or ``user@host``; SLOTS is how many runs of a
    repeat the host takes at once (default 1).
    """
    host, sep, tail = spec.rpartition(":")
    if not sep:
        return spec, 1
    if not host or not tail.isdigit():
        raise UsageError(f"--host {spec}: expected HOST or HOST:SLOTS (a whole number of runs at once)",
                         hint="kvm01, kvm01:4, or with a port user@kvm01:2222:4")
    slots = int(tail)
    if not 1 <= slots <= MAX_SLOTS:
        raise UsageError(f"--host {spec}: {slots} slots; a host takes 1 to {MAX_SLOTS} runs at once",
                         hint="a port is written HOST:PORT:SLOTS (user@kvm01:2222:1), or set with Port in ssh_config")
    return host, slots


def parse_hosts(specs: Sequence[str]) -> Tuple[Tuple[str, ...], Tuple[int, ...]]:
    """Every ``--host HOST[:SLOTS]``: the hosts, and their slots in the same order; each host once."""
    parsed = [parse_host(spec) for spec in specs]
    names = [name for name, _ in parsed]
    for name in names:
        if names.count(name) > 1:
            raise UsageError(f"--host {name} is given twice", hint=f"give it once, with its slots: {name}:N")
    return tuple(names), tuple(slots for _, slots in parsed)


class Schedule:
    """The runs of a repeat: handed out, finished, handed back, or never started."""

    def __init__(self, total: int, until_fail: bool = False) -> None:
        self.total = total
        self.until_fail = until_fail
        self._next = 1
        self._returned: List[int] = []
        self.running: Set[int] = set()
        self.outcomes: Dict[int, bool] = {}  # run -> passed
        self.first_failure: Optional[int] = None
        self.stopped = False  # no new runs: a failure under until_fail, or stop()

    def take(self) -> Optional[int]:
        """The next run to start, or None when there is none (all handed out, or stopped)."""
        if self.stopped:
            return None
        if self._returned:
            index = self._returned.pop(0)
        elif self._next <= self.total:
            index = self._next
            self._next += 1
        else:
            return None
        self.running.add(index)
        return index

    def give_back(self, index: int) -> None:
        """A run that did not happen where it went (its host failed): it goes out again first."""
        self.running.discard(index)
        self._returned.append(index)
        self._returned.sort()

    def finish(self, index: int, passed: bool) -> bool:
        """Record a run's outcome; True when this failure stops the repeat (until_fail)."""
        self.running.discard(index)
        self.outcomes[index] = passed
        if not passed and self.first_failure is None:
            self.first_failure = index
            if self.until_fail and not self.stopped:
                self.stopped = True
                return True
        return False

    def stop(self) -> None:
        self.stopped = True

    @property
    def done(self) -> bool:
        """Nothing is running and nothing more will start."""
        return not self.running and (self.stopped or (self._next > self.total and not self._returned))

    @property
    def passed(self) -> int:
        return sum(self.outcomes.values())

    @property
    def failed(self) -> int:
        return len(self.outcomes) - self.passed

    def not_started(self) -> List[int]:
        """Runs that never finished nor run: left when the repeat stopped early or every host failed."""
        return sorted(i for i in range(1, self.total + 1) if i not in self.outcomes and i not in self.running)


def time_left(waiting: int, running_elapsed: Iterable[float], finished_seconds: Iterable[float],
              jobs: int) -> Optional[float]:
    """Seconds until the last run ends, if every run takes the median so far (None before any run ended).

    The runs under way end when they reach the median (or at once, if overdue);
    each waiting run goes to whichever job is free first.
    """
    times = list(finished_seconds)
    if not times:
        return None
    typical = statistics.median(times)
    free_at = sorted(max(typical - elapsed, 0.0) for elapsed in running_elapsed)
    free_at += [0.0] * max(jobs - len(free_at), 0)
    heapq.heapify(free_at)
    for _ in range(waiting):
        heapq.heappush(free_at, heapq.heappop(free_at) + typical)
    return max(free_at, default=0.0)
