"""``invoke bench``: the figures behind "cheap" and "quick", taken on the test guest.

Our machines are shared and noisy, so runs that are compared are taken in
rounds (bare QEMU, the harness with ``--accel tcg``, the harness with
``--accel auto``), the order rotating from round to round, and each figure is
the median of the per-round values. Every figure carries a line saying how it
was taken. Results go to stdout as a table and to ``build/bench.json``.

The bench keeps its own harness cache (``XDG_CACHE_HOME`` in its scratch
folder), filled by a first run of each kind, so the figures are those of a
host that has run the harness before on this boot; the first run of a boot
pays the KVM probe, which is measured on its own. The harness's bytecode is
compiled first, as an installed package has it.
"""

from __future__ import annotations

import compileall
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, TextIO, Tuple

from harness import accel, inotify
from harness.hostsvc import HostServices
from harness.interrupt import readable
from harness.qemu import die_with_parent

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "build" / "bench.json"
RESULT = b"AERO_VIRTIO_SELFTEST|RESULT|"
KINDS = ("bare", "tcg", "auto")


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    target: Optional[str]
    met: Optional[bool]
    samples: List[float]
    method: str


@dataclass(frozen=True)
class Setup:
    disk: Path
    qemu: str
    http_port: int
    udp_port: int
    env: Dict[str, str]  # the bench's own harness cache


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _fw(scenario: str) -> List[str]:
    return ["-fw_cfg", f"name=opt/aero/scenario,string={scenario}"]


def _harness(setup: Setup, artifacts: Path, accel_name: str, scenario: str, timeout: float = 300,
             dry_run: bool = False) -> List[str]:
    return [
        sys.executable, "-m", "harness", "selftest", "--disk", str(setup.disk), "--accel", accel_name,
        "--qemu-system", setup.qemu, "--artifacts", str(artifacts), "--timeout", f"{timeout:g}",
        "--http-port", str(setup.http_port), "--udp-port", str(setup.udp_port),
        *(f"--qemu-arg={a}" for a in _fw(scenario)), *(["--dry-run"] if dry_run else []),
    ]


class Seen:
    """The moment ``needle`` shows in a growing file (inotify, else a 1 ms poll), as a whole line if ``line``.

    The file must exist; it may be emptied (truncated) but not replaced. An empty needle: the first byte.
    """

    def __init__(self, path: Path, needle: bytes, line: bool = True) -> None:
        self.path = path
        self.needle = needle
        self.line = line
        self.at: Optional[float] = None
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _found(self, tail: bytes) -> bool:
        start = tail.find(self.needle)
        return start >= 0 and bool(tail) and (not self.line or b"\n" in tail[start:])

    def _watch(self) -> None:
        watch = inotify.watch(self.path)
        offset, tail = 0, b""
        try:
            while True:
                with open(self.path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
                offset += len(data)
                tail = (tail + data)[-8192:]
                if self._found(tail):
                    self.at = time.monotonic()
                    return
                ready = readable([self._stop_r, *([watch.fileno()] if watch else [])], None if watch else 0.001)
                if self._stop_r in ready:
                    return
                if watch:
                    watch.drain()
        finally:
            if watch:
                watch.close()

    def wait(self, timeout: float) -> Optional[float]:
        self._thread.join(timeout)
        return self.at

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        os.close(self._stop_r)
        os.close(self._stop_w)


def _qemu_pid(needle: str, timeout: float = 60) -> Optional[int]:
    """The QEMU process whose command line names ``needle`` (a run's artifacts folder)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if b"qemu-system" in cmdline.split(b"\0")[0] and needle.encode() in cmdline:
                    return int(entry.name)
        time.sleep(0.005)
    return None


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process, all its threads (its children not included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the figures ------------------------------------------------------------


def dry_run_startup(setup: Setup, work: Path, runs: int) -> Figure:
    samples = []
    argv = _harness(setup, work / "dry-run", "tcg", "pass", dry_run=True)
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run(argv, cwd=REPO_ROOT, env=setup.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True)
        samples.append((time.monotonic() - started) * 1000)
    value = _median(samples)
    return Figure("start-up of --dry-run", value, "ms", None, None, samples,
                  f"{runs} runs of `python -m harness selftest --dry-run` (interpreter start, imports, the cached "
                  "QEMU capabilities, qemu-img info), median")


def kvm_probe(setup: Setup, runs: int) -> Figure:
    samples = []
    answers = set()
    for _ in range(runs):
        started = time.monotonic()
        answers.add(accel.probe(setup.qemu))
        samples.append((time.monotonic() - started) * 1000)
    value = _median(samples)
    said = {True: "KVM works", False: "KVM is broken here", None: "inconclusive"}
    return Figure("KVM probe (first `auto` run of a boot)", value, "ms", "<= 200", value <= 200, samples,
                  f"{runs} probes (`harness.accel.probe`: QEMU with -accel kvm runs the 64 KiB probe firmware), "
                  f"median; each said: {', '.join(said[a] for a in sorted(answers, key=str))}. Later runs of the "
                  "boot read the answer from kvm.json")


@dataclass(frozen=True)
class Timed:
    seconds: float  # launch to exit (bare QEMU: to the RESULT line, then killed and reaped)
    running: float  # launch to the firmware's first byte: the guest runs
    ending: float  # the RESULT line to the end (exit, or QEMU killed and reaped)


def _watch_run(folder: Path) -> Tuple[Seen, Seen]:
    """Watch a run's firmware.log for its first byte (SeaBIOS writes from its first instructions) and
    serial.log for the RESULT line; both are made empty first, and QEMU keeps the files it finds."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("firmware.log", "serial.log"):
        (folder / name).write_bytes(b"")
    return Seen(folder / "firmware.log", b"", line=False), Seen(folder / "serial.log", RESULT)


def _timed(started: float, ended: float, firmware: Seen, result: Seen, where: Path) -> Timed:
    firmware.close()
    result.close()
    if firmware.at is None or result.at is None:
        raise RuntimeError(f"the run in {where} showed no firmware output or no RESULT line")
    return Timed(ended - started, firmware.at - started, ended - result.at)


def _timed_harness(setup: Setup, run_dir: Path, accel_name: str) -> Timed:
    firmware, result = _watch_run(run_dir / "artifacts")
    started = time.monotonic()
    proc = subprocess.run(_harness(setup, run_dir / "artifacts", accel_name, "pass"), cwd=REPO_ROOT, env=setup.env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    ended = time.monotonic()
    if proc.returncode != 0:
        raise RuntimeError(f"the harness run in {run_dir} failed with exit code {proc.returncode}")
    return _timed(started, ended, firmware, result, run_dir)


def _bare_argv(setup: Setup, run_dir: Path) -> List[str]:
    """The harness's own command line (``--dry-run``: unpaused, QEMU's snapshot=on overlay), for bare QEMU."""
    out = subprocess.run(_harness(setup, run_dir, "tcg", "pass", dry_run=True), cwd=REPO_ROOT, env=setup.env,
                         capture_output=True, text=True, check=True).stdout
    argv: List[str] = json.loads(out.splitlines()[0])
    return argv


def _timed_bare(setup: Setup, run_dir: Path) -> Timed:
    argv = _bare_argv(setup, run_dir)
    firmware, result = _watch_run(run_dir)
    with HostServices(setup.http_port, setup.udp_port, "/aero-virtio-selftest"):
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=die_with_parent)
        try:
            result.wait(300)
        finally:
            proc.kill()
            proc.wait()
        ended = time.monotonic()
    return _timed(started, ended, firmware, result, run_dir)


def overhead(setup: Setup, work: Path, rounds: int, log: Callable[[str], None]) -> List[Figure]:
    runs: Dict[str, List[Timed]] = {kind: [] for kind in KINDS}
    for i in range(rounds):
        order = KINDS[i % 3:] + KINDS[:i % 3]
        if (i // 3) % 2:
            order = order[::-1]
        for kind in order:
            run_dir = work / f"overhead-{i}-{kind}"
            runs[kind].append(_timed_bare(setup, run_dir) if kind == "bare" else _timed_harness(setup, run_dir, kind))
        log(f"  round {i + 1}/{rounds} ({', '.join(order)}): "
            + ", ".join(f"{kind} {runs[kind][-1].seconds:.2f} s" for kind in KINDS))
    seconds = {kind: [t.seconds for t in timed] for kind, timed in runs.items()}
    tcg = [t / b for t, b in zip(seconds["tcg"], seconds["bare"])]
    auto = [a / b for a, b in zip(seconds["auto"], seconds["bare"])]
    auto_tcg = [a / t for a, t in zip(seconds["auto"], seconds["tcg"])]
    # What the harness itself adds: before the guest runs, and after its RESULT line; the time between
    # is the guest's own, the same in both but for the machine's noise.
    own = {kind: [(h.running - b.running) + (h.ending - b.ending) for h, b in zip(runs[kind], runs["bare"])]
           for kind in KINDS[1:]}
    bare = _median(seconds["bare"])
    by_parts = {kind: 1 + _median(own[kind]) / bare for kind in own}
    auto_by_parts = 1 + (_median(own["auto"]) - _median(own["tcg"])) / _median(seconds["tcg"])
    ms = {kind: {part: _median([getattr(t, part) * 1000 for t in runs[kind]]) for part in ("running", "ending")}
          for kind in KINDS}
    whole = (f"{rounds} rounds of three runs of the 'pass' scenario, the order rotating: bare QEMU (the harness's "
             "own command line from --dry-run, beside the same HTTP/UDP services, killed the moment the bench sees "
             "the RESULT line, inotify), `python -m harness selftest --accel tcg` and `--accel auto`, each from "
             f"launch to exit; median of the per-round ratios. Medians: bare {bare:.2f} s, tcg "
             f"{_median(seconds['tcg']):.2f} s, auto {_median(seconds['auto']):.2f} s; on a shared machine the "
             "guest's own time varies by more than the harness costs, so see the figure from the parts")
    parts = ("the same runs, timed in parts: launch to SeaBIOS's first byte in firmware.log (the guest runs) and "
             "the RESULT line to the end (harness: its exit; bare: QEMU killed and reaped), both seen with inotify; "
             "1 + median per-round (harness - bare) of their sum / median bare run. Medians, launch to guest: "
             + ", ".join(f"{k} {ms[k]['running']:.0f} ms" for k in KINDS) + "; RESULT to end: "
             + ", ".join(f"{k} {ms[k]['ending']:.0f} ms" for k in KINDS))
    return [
        Figure("harness overhead, --accel tcg, from its parts", by_parts["tcg"], "x", "<= 1.01",
               by_parts["tcg"] <= 1.01, [1 + o / bare for o in own["tcg"]], parts),
        Figure("harness overhead, --accel auto, from its parts", by_parts["auto"], "x", None, None,
               [1 + o / bare for o in own["auto"]], parts),
        Figure("--accel auto against --accel tcg, from the parts", auto_by_parts, "x", "<= 1.03",
               auto_by_parts <= 1.03, [], parts),
        Figure("harness overhead, --accel tcg, whole runs", _median(tcg), "x", "<= 1.01", _median(tcg) <= 1.01,
               tcg, whole),
        Figure("harness overhead, --accel auto, whole runs", _median(auto), "x", None, None, auto, whole),
        Figure("--accel auto against --accel tcg, whole runs", _median(auto_tcg), "x", "<= 1.03",
               _median(auto_tcg) <= 1.03, auto_tcg, whole),
    ]


def verdict_latency(setup: Setup, work: Path, runs: int, log: Callable[[str], None]) -> List[Figure]:
    to_exit: List[float] = []
    to_gone: List[float] = []
    for i in range(runs):
        artifacts = work / f"latency-{i}"
        artifacts.mkdir(parents=True)
        serial = artifacts / "serial.log"
        serial.write_bytes(b"")  # the harness empties it too: the inotify watch stays on this file
        seen = Seen(serial, RESULT)
        proc = subprocess.Popen(_harness(setup, artifacts, "tcg", "pass"), cwd=REPO_ROOT, env=setup.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        gone: List[float] = []
        pid = _qemu_pid(str(artifacts))
        watcher = threading.Thread(target=_wait_gone, args=(pid, gone), daemon=True) if pid else None
        if watcher:
            watcher.start()
        proc.wait()
        exited = time.monotonic()
        if watcher:
            watcher.join(10)
        seen.close()
        if seen.at is not None and gone:
            to_exit.append((exited - seen.at) * 1000)
            to_gone.append((gone[0] - seen.at) * 1000)
            log(f"  run {i + 1}/{runs}: exit {to_exit[-1]:.1f} ms, QEMU gone {to_gone[-1]:.1f} ms after RESULT")
    exit_ms = _median(to_exit)
    how = (f"{runs} runs of the 'pass' scenario under TCG (the guest stays up after RESULT, like Windows): the "
           "bench sees the RESULT line complete in serial.log (inotify), QEMU's end (pidfd) and the harness's exit "
           "(wait); medians")
    return [
        Figure("verdict latency: RESULT line -> harness exit", exit_ms, "ms", "<= 25", exit_ms <= 25, to_exit, how),
        Figure("verdict latency: RESULT line -> QEMU gone", _median(to_gone), "ms", None, None, to_gone, how),
    ]


def _wait_gone(pid: int, gone: List[float]) -> None:
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        while Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
            time.sleep(0.001)
    else:
        readable([fd], None)
        os.close(fd)
    gone.append(time.monotonic())


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def waiting_cpu(setup: Setup, work: Path, seconds: float, log: Callable[[str], None]) -> Figure:
    artifacts = work / "cpu"
    proc = subprocess.Popen(_harness(setup, artifacts, "tcg", "hang", timeout=seconds + 120), cwd=REPO_ROOT,
                            env=setup.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        serial = artifacts / "serial.log"
        deadline = time.monotonic() + 120
        # The 'hang' guest says its virtio-blk lines and then nothing: wait for that, and a little more.
        while b"virtio-blk-reset" not in (serial.read_bytes() if serial.exists() else b""):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the 'hang' guest did not reach its silence")
            time.sleep(0.2)
        time.sleep(2)
        cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = _cpu_seconds(proc.pid), time.monotonic()
    finally:
        proc.terminate()
        proc.wait()
    share = (cpu1 - cpu0) / (t1 - t0) * 100
    log(f"  {cpu1 - cpu0:.3f} s CPU over {t1 - t0:.0f} s")
    return Figure(
        "CPU while the guest is silent (share of one core)", share, "%", "<= 0.3", share <= 0.3, [share],
        f"the harness's own user+system time, all its threads (/proc/PID/stat, QEMU excluded), over {seconds:g} s "
        "of a run whose guest has said its last line ('hang' scenario), from 2 s after that line",
    )


WATCH_CHILD = """
import resource, sys, time
from pathlib import Path
from harness.watcher import SerialWatcher
from harness.verdict import Tracker
path = Path(sys.argv[1])
watcher = SerialWatcher(path)
tracker = Tracker()
verdict = None
while verdict is None:
    for marker in watcher.markers():
        verdict = tracker.add(marker) or verdict
    if verdict is None:
        time.sleep(0.05)
print(verdict.line(), watcher.bytes_read, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def watcher_memory(work: Path, sizes_mib: Sequence[int], log: Callable[[str], None]) -> List[Figure]:
    peaks: Dict[int, float] = {}
    for size in sizes_mib:
        log_path = work / f"noise-{size}.log"
        if log_path.exists():
            log_path.unlink()
        child = subprocess.Popen([sys.executable, "-c", WATCH_CHILD, str(log_path)], cwd=REPO_ROOT,
                                 stdout=subprocess.PIPE, text=True)
        _write_noise(log_path, size)
        out, _ = child.communicate(timeout=900)
        _, read, maxrss_kib = out.split()[-3:]
        if not out.startswith("PASS"):
            raise RuntimeError(f"the watcher did not pass on the noisy log: {out}")
        peaks[size] = int(maxrss_kib) / 1024
        log(f"  {size} MiB of noise: peak RSS {peaks[size]:.1f} MiB, read {int(read) / 2**20:.0f} MiB")
        log_path.unlink()
    largest = max(sizes_mib)
    return [Figure(
        f"peak memory, serial watch over {largest} MiB of noise", peaks[largest], "MiB", "<= 64",
        peaks[largest] <= 64, [peaks[s] for s in sizes_mib],
        "a child process runs the harness's own watch path (SerialWatcher, marker parsing, Tracker) on a serial "
        f"log that a writer grows to {', '.join(map(str, sizes_mib))} MiB of noise (random bytes, 100 KiB lines, "
        "fake mid-line markers) before the real markers; its ru_maxrss; samples in that order show it is flat",
    )]


def _write_noise(path: Path, size_mib: int) -> None:
    import random

    rng = random.Random(1)
    block = bytes(rng.getrandbits(8) for _ in range(1 << 16))
    long_line = b"x" * (100 * 1024) + b"\r\n"
    fake = b"noise AERO_VIRTIO_SELFTEST|RESULT|FAIL\r\n"
    with open(path, "ab") as f:
        written = 0
        while written < size_mib << 20:
            for piece in (block, long_line, fake):
                f.write(piece)
                written += len(piece)
        f.write(b"\r\nAERO_VIRTIO_SELFTEST|START|version=1\r\n"
                b"AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS\r\nAERO_VIRTIO_SELFTEST|TEST|virtio-net|PASS\r\n"
                b"AERO_VIRTIO_SELFTEST|RESULT|PASS\r\n")


def parallel_throughput(setup: Setup, work: Path, log: Callable[[str], None], runs: int = 4,
                        rounds: int = 2) -> Figure:
    """Runs per minute of ``--repeat`` with ``--jobs 2`` against ``--jobs 1``, each guest on one CPU."""
    ratios: List[float] = []
    for i in range(rounds):
        seconds: Dict[int, float] = {}
        for jobs in (1, 2) if i % 2 == 0 else (2, 1):
            argv = _harness(setup, work / f"jobs-{i}-{jobs}", "tcg", "pass")
            started = time.monotonic()
            proc = subprocess.run([*argv, "--smp", "1", "--repeat", str(runs), "--jobs", str(jobs)], cwd=REPO_ROOT,
                                  env=setup.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            seconds[jobs] = time.monotonic() - started
            if proc.returncode != 0:
                raise RuntimeError(f"--repeat {runs} --jobs {jobs} did not pass (exit {proc.returncode})")
        ratios.append(seconds[1] / seconds[2])
        log(f"  round {i + 1}/{rounds}: {runs} runs, --jobs 1 {seconds[1]:.1f} s, --jobs 2 {seconds[2]:.1f} s")
    value = _median(ratios)
    return Figure(
        "throughput of --jobs 2 against --jobs 1 (--smp 1)", value, "x", ">= 1.8", value >= 1.8, ratios,
        f"{rounds} rounds, order alternating: `python -m harness selftest --repeat {runs} --smp 1 --accel tcg` "
        "with --jobs 1 and with --jobs 2 (each run in a network namespace of its own), launch to exit; median of "
        "the per-round ratios of the two times (runs per minute with 2 jobs over runs per minute with 1)",
    )


# --- the command ------------------------------------------------------------


def machine(qemu: str) -> Dict[str, str]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    qemu_version = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout
    return {
        "date": time.strftime("%Y-%m-%d"),
        "host": platform.node(),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "qemu": qemu_version.splitlines()[0] if qemu_version else "?",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def table(figures: Sequence[Figure]) -> str:
    rows = [("figure", "median", "target", "met")]
    for f in figures:
        met = "-" if f.met is None else ("yes" if f.met else "NO")
        rows.append((f.name, f"{f.value:.3g} {f.unit}", f.target or "-", met))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def run_bench(disk: Path, qemu: str, out: Path, rounds: int, wait_seconds: float, log_mib: Sequence[int],
              http_port: int, udp_port: int, stream: TextIO) -> List[Figure]:
    def log(text: str) -> None:
        stream.write(text + "\n")
        stream.flush()

    about = machine(qemu)
    # The harness's bytecode, as an installed package has it (PYTHONDONTWRITEBYTECODE=1 would otherwise
    # have every run compile the harness from source, 40 ms here).
    compileall.compile_dir(str(REPO_ROOT / "harness"), quiet=1)
    figures: List[Figure] = []
    with tempfile.TemporaryDirectory(prefix="aero-bench-") as tmp:
        work = Path(tmp)
        setup = Setup(disk, qemu, http_port, udp_port, {**os.environ, "XDG_CACHE_HOME": str(work / "cache")})
        log("a first run of each kind (fills the bench's harness cache) ...")
        for kind in KINDS[1:]:
            _timed_harness(setup, work / f"first-{kind}", kind)
        log("start-up of --dry-run ...")
        figures.append(dry_run_startup(setup, work, 10))
        log("KVM probe ...")
        figures.append(kvm_probe(setup, 10))
        log(f"harness overhead, {rounds} rounds ...")
        figures += overhead(setup, work, rounds, log)
        log("verdict latency ...")
        figures += verdict_latency(setup, work, rounds, log)
        log(f"CPU while the guest is silent, {wait_seconds:g} s ...")
        figures.append(waiting_cpu(setup, work, wait_seconds, log))
        log(f"memory over {', '.join(map(str, log_mib))} MiB serial logs ...")
        figures += watcher_memory(work, log_mib, log)
        log("throughput of --jobs 2 against --jobs 1 ...")
        figures.append(parallel_throughput(setup, work, log))
    about["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": about, "figures": [asdict(f) for f in figures]}, indent=2) + "\n")
    log("")
    log(", ".join(f"{k}: {v}" for k, v in about.items()))
    log("")
    log(table(figures))
    log("")
    for f in figures:
        log(f"- {f.name}: {f.method}")
    log(f"\nwritten to {out}")
    return figures
