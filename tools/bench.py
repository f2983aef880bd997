"""``invoke bench``: the figures behind "cheap" and "quick", taken on the test guest.

Every figure is a median over several runs; runs that are compared are paired
and their order alternates, because these machines are noisy. Each figure
carries a line saying how it was taken. Results go to stdout as a table and
to ``build/bench.json``.
"""

from __future__ import annotations

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
from typing import Callable, Dict, List, Optional, Sequence, TextIO

from harness.hostsvc import HostServices
from harness.qemu import die_with_parent
from harness.qemu_argv import QemuSpec, build_argv

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "build" / "bench.json"
POLL = 0.001  # how often the bench itself looks at files and processes


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    target: Optional[str]
    met: Optional[bool]
    samples: List[float]
    method: str


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _fw(scenario: str, poweroff: bool = False) -> List[str]:
    args = ["-fw_cfg", f"name=opt/aero/scenario,string={scenario}"]
    if poweroff:
        args += ["-fw_cfg", "name=opt/aero/poweroff,string=1"]
    return args


def _harness(disk: Path, artifacts: Path, qemu: str, extra: Sequence[str], timeout: float = 300) -> List[str]:
    return [
        sys.executable, "-m", "harness", "selftest", "--disk", str(disk), "--accel", "tcg", "--qemu-system", qemu,
        "--artifacts", str(artifacts), "--timeout", f"{timeout:g}", *(f"--qemu-arg={a}" for a in extra),
    ]


def _wait_for_bytes(path: Path, needle: bytes, stop: threading.Event, found: List[float]) -> None:
    """Timestamp the moment ``needle`` appears in a growing file (polled every millisecond)."""
    offset = 0
    tail = b""
    while not stop.is_set():
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            data = b""
        if data:
            offset += len(data)
            tail = (tail + data)[-4096:]
            if needle in tail:
                found.append(time.monotonic())
                return
        time.sleep(POLL)


def _qemu_pid(needle: str) -> Optional[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu-system" in cmdline.split(b"\0")[0] and needle.encode() in cmdline:
                return int(entry.name)
    return None


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (its own threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the figures ------------------------------------------------------------


def overhead(disk: Path, qemu: str, work: Path, pairs: int, log: Callable[[str], None]) -> Figure:
    ratios: List[float] = []
    for i in range(pairs):
        order = ("harness", "bare") if i % 2 == 0 else ("bare", "harness")
        times: Dict[str, float] = {}
        for kind in order:
            run_dir = work / f"overhead-{i}-{kind}"
            run_dir.mkdir(parents=True)
            times[kind] = _timed_harness(disk, qemu, run_dir) if kind == "harness" else _timed_bare(disk, qemu, run_dir)
        ratios.append(times["harness"] / times["bare"])
        log(f"  pair {i + 1}/{pairs}: harness {times['harness']:.2f} s, bare {times['bare']:.2f} s")
    value = _median(ratios)
    return Figure(
        "harness overhead (wall time ratio)", value, "x", "<= 1.03", value <= 1.03, ratios,
        f"{pairs} pairs, order alternating: `python -m harness selftest --accel tcg` from launch to exit, against "
        "the same guest under bare qemu-system-x86_64 (same devices, snapshot=on) beside the same HTTP/UDP "
        "server, stopped by a minimal watcher that polls the serial file every 1 ms for RESULT and kills QEMU; "
        "median of the per-pair ratios",
    )


def _timed_harness(disk: Path, qemu: str, run_dir: Path) -> float:
    started = time.monotonic()
    subprocess.run(_harness(disk, run_dir / "artifacts", qemu, _fw("pass")), cwd=REPO_ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.monotonic() - started


def _timed_bare(disk: Path, qemu: str, run_dir: Path) -> float:
    serial = run_dir / "serial.log"
    spec = QemuSpec(qemu=qemu, disk=str(disk), disk_format="qcow2", serial_log=str(serial),
                    qmp_socket=str(run_dir / "qmp.sock"), accel="tcg", paused=False,
                    fw_cfg=(("opt/aero/scenario", "pass"),))
    argv = build_argv(spec)
    drive = argv.index("-drive") + 1
    argv[drive] += ",snapshot=on"
    with HostServices(18080, 18081, "/aero-virtio-selftest"):
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=die_with_parent)
        found: List[float] = []
        stop = threading.Event()
        watcher = threading.Thread(target=_wait_for_bytes, args=(serial, b"|RESULT|", stop, found))
        watcher.start()
        watcher.join(300)
        stop.set()
        proc.kill()
        proc.wait()
        return time.monotonic() - started


def verdict_latency(disk: Path, qemu: str, work: Path, runs: int, log: Callable[[str], None]) -> List[Figure]:
    to_exit: List[float] = []
    to_gone: List[float] = []
    for i in range(runs):
        artifacts = work / f"latency-{i}"
        serial = artifacts / "serial.log"
        found: List[float] = []
        gone: List[float] = []
        stop = threading.Event()
        proc = subprocess.Popen(_harness(disk, artifacts, qemu, _fw("pass")), cwd=REPO_ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seen = threading.Thread(target=_wait_for_bytes, args=(serial, b"|RESULT|", stop, found))
        seen.start()
        pid: Optional[int] = None
        while pid is None and proc.poll() is None:
            pid = _qemu_pid(str(artifacts))
            time.sleep(0.01)
        while pid is not None and Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
            time.sleep(POLL)
        gone.append(time.monotonic())
        proc.wait()
        exited = time.monotonic()
        stop.set()
        seen.join()
        if found:
            to_exit.append((exited - found[0]) * 1000)
            to_gone.append((gone[0] - found[0]) * 1000)
            log(f"  run {i + 1}/{runs}: exit {to_exit[-1]:.0f} ms, QEMU gone {to_gone[-1]:.0f} ms after RESULT")
    exit_ms = _median(to_exit)
    method = (
        f"{runs} runs on the 'pass' scenario (the guest stays up after RESULT, like Windows): the bench polls "
        "serial.log every 1 ms for the RESULT line, /proc for the QEMU process, and waits for the harness; "
        "medians"
    )
    return [
        Figure("verdict latency: RESULT line -> harness exit", exit_ms, "ms", "<= 100", exit_ms <= 100, to_exit,
               method),
        Figure("verdict latency: RESULT line -> QEMU gone", _median(to_gone), "ms", None, None, to_gone, method),
    ]


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def waiting_cpu(disk: Path, qemu: str, work: Path, seconds: float, log: Callable[[str], None]) -> Figure:
    artifacts = work / "cpu"
    proc = subprocess.Popen(_harness(disk, artifacts, qemu, _fw("hang"), timeout=seconds + 30), cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while _qemu_pid(str(artifacts)) is None and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(2)  # past start-up
        cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = _cpu_seconds(proc.pid), time.monotonic()
    finally:
        proc.terminate()
        proc.wait()
    share = (cpu1 - cpu0) / (t1 - t0) * 100
    log(f"  {cpu1 - cpu0:.2f} s CPU over {t1 - t0:.0f} s")
    return Figure(
        "CPU while waiting (share of one core)", share, "%", "<= 1", share <= 1.0, [share],
        f"the harness's own user+system time (/proc/PID/stat, QEMU excluded) over {seconds:g} s of a run whose "
        "guest never says RESULT",
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
    figures = []
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
    figures.append(Figure(
        f"peak memory, serial watch over {largest} MiB of noise", peaks[largest], "MiB", "<= 64",
        peaks[largest] <= 64, [peaks[s] for s in sizes_mib],
        "a child process runs the harness's own watch path (SerialWatcher, marker parsing, Tracker) on a serial "
        f"log that a writer grows to {', '.join(map(str, sizes_mib))} MiB of noise (random bytes, 100 KiB lines, "
        "fake mid-line markers) before the real markers; its ru_maxrss; samples in that order show it is flat",
    ))
    return figures


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


def dry_run_startup(disk: Path, qemu: str, runs: int) -> Figure:
    samples = []
    argv = [sys.executable, "-m", "harness", "selftest", "--dry-run", "--disk", str(disk), "--qemu-system", qemu]
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run(argv, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        samples.append((time.monotonic() - started) * 1000)
    value = _median(samples)
    return Figure("start-up of --dry-run", value, "ms", None, None, samples,
                  f"{runs} runs of `python -m harness selftest --dry-run` (interpreter start, imports, qemu --version, "
                  "qemu-img info), median")


def parallel_throughput(disk: Path, qemu: str, work: Path, log: Callable[[str], None], runs: int = 4,
                        rounds: int = 2) -> Figure:
    """Runs per minute of ``--repeat`` with ``--jobs 2`` against ``--jobs 1``, each guest on one CPU."""
    ratios: List[float] = []
    for i in range(rounds):
        seconds: Dict[int, float] = {}
        for jobs in (1, 2) if i % 2 == 0 else (2, 1):
            argv = _harness(disk, work / f"jobs-{i}-{jobs}", qemu, _fw("pass"))
            started = time.monotonic()
            proc = subprocess.run([*argv, "--smp", "1", "--repeat", str(runs), "--jobs", str(jobs)], cwd=REPO_ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
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


def machine() -> Dict[str, str]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    qemu_version = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout
    return {
        "date": time.strftime("%Y-%m-%d"),
        "host": platform.node(),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "qemu": qemu_version.splitlines()[0] if qemu_version else "?",
    }


def table(figures: Sequence[Figure]) -> str:
    rows = [("figure", "median", "target", "met")]
    for f in figures:
        met = "-" if f.met is None else ("yes" if f.met else "NO")
        rows.append((f.name, f"{f.value:.3g} {f.unit}", f.target or "-", met))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def run_bench(disk: Path, qemu: str, out: Path, pairs: int, wait_seconds: float, log_mib: Sequence[int],
              stream: TextIO) -> List[Figure]:
    def log(text: str) -> None:
        stream.write(text + "\n")
        stream.flush()

    figures: List[Figure] = []
    with tempfile.TemporaryDirectory(prefix="aero-bench-") as tmp:
        work = Path(tmp)
        log("start-up of --dry-run ...")
        figures.append(dry_run_startup(disk, qemu, 10))
        log(f"harness overhead, {pairs} pairs ...")
        figures.append(overhead(disk, qemu, work, pairs, log))
        log("verdict latency ...")
        figures += verdict_latency(disk, qemu, work, pairs, log)
        log(f"CPU while waiting {wait_seconds:g} s ...")
        figures.append(waiting_cpu(disk, qemu, work, wait_seconds, log))
        log(f"memory over {', '.join(map(str, log_mib))} MiB serial logs ...")
        figures += watcher_memory(work, log_mib, log)
        log("throughput of --jobs 2 against --jobs 1 ...")
        figures.append(parallel_throughput(disk, qemu, work, log))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "figures": [asdict(f) for f in figures]}, indent=2) + "\n")
    log("")
    log(table(figures))
    log("")
    for f in figures:
        log(f"- {f.name}: {f.method}")
    log(f"\nwritten to {out}")
    return figures
