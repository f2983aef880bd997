"""``remote-selftest``: the same selftest run on remote KVM hosts over SSH (Fabric).

For each host: connect (host keys checked against known_hosts; a new key is
accepted only when asked), check Python and QEMU there, ship the harness as
wheels unpacked into a per-version folder, upload the disk unless the host
already has the same content (by SHA-256), run ``python3 -m harness selftest``
with its output streamed live, fetch the artifacts into
``<artifacts>/<host>/`` and remove the remote scratch. The remote harness
ends itself when the SSH session goes away (its stdin closes) and at its own
deadline, so a Ctrl-C or a dropped connection never leaves QEMU running.
Files travel over plain exec channels of the same connection (``cat``,
``stat``, ``tar``), never sftp, which a minimal sshd does not offer.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import hashlib
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

from harness import __version__, interrupt, netns
from harness.errors import (
    HarnessError,
    RemoteError,
    RemoteNoPythonError,
    RemoteNoQemuError,
    SSHAuthError,
    SSHHostKeyError,
    SSHUnreachableError,
    UsageError,
)

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
REMOTE_HOME = ".cache/aero-virtio-harness"  # relative to the remote user's home
WHEEL_CACHE = REPO_ROOT / "build" / "wheels"
QMP_REQUIREMENT = "qemu.qmp==0.0.6"
# The remote run's own deadline beyond the guest timeout: boot, probes, upload of artifacts.
SESSION_MARGIN = 600.0


@dataclass(frozen=True)
class RemoteOptions:
    hosts: Tuple[str, ...]
    selftest_args: Tuple[str, ...]  # passed to the remote ``harness selftest``, without --disk/--artifacts
    disk: Optional[Path]
    remote_disk: Optional[str]
    artifacts: Path
    timeout: float
    qemu_system: str = "qemu-system-x86_64"
    ssh_config: Optional[Path] = None
    accept_new_host_key: bool = False
    remote_python: str = "python3"
    connect_timeout: float = 15.0
    # remote-selftest --repeat N: the runs spread over the hosts' slots (harness/fleet.py).
    slots: Tuple[int, ...] = ()  # per host, in the order of hosts (default 1 each)
    repeat: int = 1
    until_fail: bool = False


@dataclass(frozen=True)
class HostOutcome:
    host: str
    code: int
    verdict: str
    seconds: float
    artifacts: Optional[Path]


# --- stopping remote runs ----------------------------------------------------


class ActiveRuns:
    """The remote runs under way, so that a local Ctrl-C can stop them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runners: List[Any] = []
        self._connections: List[Any] = []

    def add(self, runner: Any, conn: Any) -> None:
        with self._lock:
            self._runners.append(runner)
            self._connections.append(conn)

    def interrupt(self) -> None:
        """Forward a Ctrl-C: the remote harness reads ETX on its stdin and stops its run."""
        with self._lock:
            runners = list(self._runners)
        for runner in runners:
            channel = getattr(runner, "channel", None)
            if channel is not None and not channel.closed:
                try:
                    channel.send(b"\x03")
                except (OSError, EOFError) as exc:
                    log.debug("forwarding ^C: %s", exc)

    def close(self) -> None:
        """Drop every connection: the remote harness sees EOF on stdin and stops its run."""
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.close()
            except Exception as exc:  # closing is best effort; the remote side guards itself
                log.debug("closing %s: %s", conn, exc)


# --- output -----------------------------------------------------------------


class PrefixWriter:
    """A text stream that puts ``[host] `` before every line (for several hosts)."""

    def __init__(self, target: IO[str], prefix: str, lock: threading.Lock) -> None:
        self.target = target
        self.prefix = prefix
        self.lock = lock
        self._at_line_start = True

    def write(self, text: str) -> int:
        if not self.prefix:
            with self.lock:
                self.target.write(text)
            return len(text)
        out = []
        for piece in text.splitlines(keepends=True):
            if self._at_line_start:
                out.append(self.prefix)
            out.append(piece)
            self._at_line_start = piece.endswith("\n")
        with self.lock:
            self.target.write("".join(out))
        return len(text)

    def flush(self) -> None:
        with self.lock:
            self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()


# --- the harness shipped as wheels ------------------------------------------


def _source_digest() -> str:
    h = hashlib.sha256(__version__.encode())
    for path in sorted((REPO_ROOT / "harness").glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    h.update((REPO_ROOT / "pyproject.toml").read_bytes())
    h.update(QMP_REQUIREMENT.encode())
    return h.hexdigest()[:16]


_WHEELS_LOCK = threading.Lock()


def build_wheels() -> Tuple[str, List[Path]]:
    """The harness and qemu.qmp as wheels, built once per harness source digest.

    Hosts are prepared in parallel: one build at a time (a thread lock, and a file lock
    for other harness processes), since pip builds in the source tree.
    """
    with _WHEELS_LOCK:
        WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
        with open(WHEEL_CACHE / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return _build_wheels()


def _build_wheels() -> Tuple[str, List[Path]]:
    digest = _source_digest()
    folder = WHEEL_CACHE / digest
    done = folder / ".complete"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
        for argv in (
            [*pip, "wheel", "--no-deps", "-w", str(folder), str(REPO_ROOT)],
            [*pip, "download", "--no-deps", "--only-binary=:all:", "-d", str(folder), QMP_REQUIREMENT],
        ):
            proc = subprocess.run(argv, capture_output=True, text=True)
            if proc.returncode != 0:
                raise HarnessError(f"cannot build the harness wheels: {' '.join(argv)}\n{proc.stderr.strip()[-800:]}")
        done.touch()
    return digest, sorted(folder.glob("*.whl"))


# --- disks ------------------------------------------------------------------


def file_sha256(path: Path, cache_file: Path = REPO_ROOT / "build" / "disk-hashes.json") -> str:
    """SHA-256 of a (large) disk image, remembered by path, size and mtime."""
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    try:
        cache: Dict[str, str] = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 << 20), b""):
            h.update(block)
    cache[key] = h.hexdigest()
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(cache, indent=1))
    except OSError:
        pass
    return cache[key]


class Progress:
    """A progress line for big uploads, at most a few updates a second."""

    def __init__(self, label: str, out: IO[str], total: int) -> None:
        self.label = label
        self.out = out
        self.total = total
        self.started = time.monotonic()
        self.last = 0.0
        self.live = out.isatty()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < (0.25 if self.live else 10.0) and done < total:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-6) / 2**20
        text = f"{self.label}: {done / 2**20:.0f}/{total / 2**20:.0f} MiB ({rate:.0f} MiB/s)"
        self.out.write(("\r\x1b[K" + text) if self.live else text + "\n")
        if self.live and done >= total:
            self.out.write("\n")
        self.out.flush()


# --- SSH --------------------------------------------------------------------


def _known_hosts_file(conn: Any) -> Path:
    value = conn.ssh_config.get("userknownhostsfile")
    if value:
        first = value.split()[0] if isinstance(value, str) else value[0]
        return Path(os.path.expanduser(first))
    return Path(os.path.expanduser("~/.ssh/known_hosts"))


def open_connection(host: str, opts: RemoteOptions) -> Any:
    """A connected Fabric Connection, host key checked; errors mapped to our kinds."""
    import paramiko
    from fabric import Config, Connection

    overrides: Dict[str, Any] = {"load_ssh_configs": True}
    if opts.ssh_config is not None:
        if not opts.ssh_config.is_file():
            raise UsageError(f"--ssh-config {opts.ssh_config} is not a file")
        overrides["ssh_config_path"] = str(opts.ssh_config)
    config = Config(overrides=overrides)
    conn = Connection(
        host,
        config=config,
        connect_timeout=int(opts.connect_timeout),
        connect_kwargs={"allow_agent": True, "look_for_keys": True, "banner_timeout": opts.connect_timeout},
    )
    known_hosts = _known_hosts_file(conn)
    client = conn.client
    if known_hosts.exists():
        client.load_host_keys(str(known_hosts))

    class CheckedPolicy(paramiko.MissingHostKeyPolicy):
        """Fabric would add an unknown key silently; we refuse it unless asked."""

        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            fingerprint = hashlib.sha256(key.asbytes()).hexdigest()[:32]
            if not opts.accept_new_host_key:
                raise SSHHostKeyError(
                    f"{host}: the host key of {hostname} ({key.get_name()}, sha256 {fingerprint}...) is not in "
                    f"{known_hosts}",
                    hint="check the key with the host's administrator, then run again with --accept-new-host-key "
                    "(or add it to known_hosts yourself)",
                )
            client.get_host_keys().add(hostname, key.get_name(), key)
            known_hosts.parent.mkdir(parents=True, exist_ok=True)
            with open(known_hosts, "a") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
            log.warning("added the host key of %s (%s) to %s", hostname, key.get_name(), known_hosts)

    client.set_missing_host_key_policy(CheckedPolicy())
    target = f"{conn.user}@{conn.host}:{conn.port}"
    try:
        conn.open()
    except HarnessError:
        raise
    except paramiko.BadHostKeyException as exc:
        raise SSHHostKeyError(
            f"{host}: the host key of {target} has CHANGED since it was recorded in {known_hosts}",
            hint="this can be an attack; if the host was reinstalled, remove its old line from known_hosts",
        ) from exc
    except paramiko.AuthenticationException as exc:
        raise SSHAuthError(
            f"{host}: {target} refused our keys ({exc})",
            hint="check IdentityFile in ssh_config, ssh-agent, and the host's authorized_keys; "
            "passwords are never prompted for",
        ) from exc
    except socket.gaierror as exc:
        raise SSHUnreachableError(f"{host}: cannot resolve {conn.host}: {exc.strerror}") from exc
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise SSHUnreachableError(
            f"{host}: cannot connect to {target}: {exc}", hint="is the host up and sshd listening on that port?"
        ) from exc
    return conn


def _run(conn: Any, command: str, **kwargs: Any) -> Any:
    kwargs.setdefault("hide", True)
    kwargs.setdefault("warn", True)
    kwargs.setdefault("in_stream", False)
    return conn.run(command, **kwargs)


def check_host(conn: Any, host: str, opts: RemoteOptions) -> str:
    """The remote home folder; an error of its own when Python 3.9+ or QEMU is not there."""
    py = shlex.quote(opts.remote_python)
    probe = _run(conn, f"{py} -c 'import sys, os; print(sys.version_info >= (3, 9)); print(os.path.expanduser(\"~\"))'")
    lines = probe.stdout.split()
    if probe.exited != 0 or not lines or lines[0] != "True":
        raise RemoteNoPythonError(
            f"{host}: no Python 3.9 or newer as {opts.remote_python!r} on the host",
            hint="install python3 there (apt-get install python3), or name it with --remote-python",
        )
    qemu = _run(conn, f"command -v {shlex.quote(opts.qemu_system)}")
    if qemu.exited != 0:
        raise RemoteNoQemuError(
            f"{host}: {opts.qemu_system} is not installed on the host",
            hint="apt-get install qemu-system-x86 qemu-utils there, or name a binary with --qemu-system",
        )
    return str(lines[1])


def install_harness(conn: Any, home: str, host: str, opts: RemoteOptions) -> str:
    """Unpack the wheels into a per-version folder on the host (once); return its path."""
    digest, wheels = build_wheels()
    site = f"{home}/{REMOTE_HOME}/harness-{digest}"
    if _run(conn, f"test -f {shlex.quote(site)}/.complete").exited == 0:
        return site
    staging = f"{site}.partial-{uuid.uuid4().hex[:8]}"
    _check(_run(conn, f"mkdir -p {shlex.quote(staging)}"), host, "create the harness folder")
    for wheel in wheels:
        put_file(conn, host, wheel, f"{staging}/{wheel.name}")
    unpack = (
        "import glob, sys, zipfile\n"
        "for w in glob.glob(sys.argv[1] + '/*.whl'):\n"
        "    zipfile.ZipFile(w).extractall(sys.argv[1])\n"
    )
    script = (
        f"{shlex.quote(opts.remote_python)} -c {shlex.quote(unpack)} {shlex.quote(staging)} && "
        f"rm -f {shlex.quote(staging)}/*.whl && touch {shlex.quote(staging)}/.complete && "
        f"rm -rf {shlex.quote(site)} && mv {shlex.quote(staging)} {shlex.quote(site)}"
    )
    _check(_run(conn, script), host, "unpack the harness")
    return site


def _check(result: Any, host: str, what: str) -> None:
    if result.exited != 0:
        raise RemoteError(f"{host}: cannot {what}: {(result.stderr or result.stdout).strip()[-500:]}")


def upload_disk(conn: Any, home: str, host: str, disk: Path, out: IO[str]) -> str:
    """The disk's path on the host, uploaded only when the host lacks this content."""
    digest = file_sha256(disk)
    size = disk.stat().st_size
    folder = f"{home}/{REMOTE_HOME}/disks"
    target = f"{folder}/{digest}{''.join(disk.suffixes[-1:]) or '.img'}"
    if remote_size(conn, target) == size:
        out.write(f"{host}: {disk.name} is already on the host (sha256 {digest[:12]}...), not uploading\n")
        return target
    _check(_run(conn, f"mkdir -p {shlex.quote(folder)}"), host, "create the disk folder")
    put_file(conn, host, disk, target, Progress(f"{host}: uploading {disk.name}", out, size))
    return target


def fetch_artifacts(conn: Any, host: str, remote_dir: str, local_dir: Path) -> None:
    """The remote artifacts folder's files into ``local_dir`` (nothing when the folder is not there)."""
    local_dir.mkdir(parents=True, exist_ok=True)
    if _run(conn, f"test -d {shlex.quote(remote_dir)}").exited != 0:
        return
    what = f"fetch the artifacts from {remote_dir}"
    channel = _exec(conn, host, f"tar -cf - -C {shlex.quote(remote_dir)} .", what)
    try:
        channel.shutdown_write()  # tar reads nothing from us
        stream = channel.makefile("rb")
        unpack_tar(stream, local_dir)
        while stream.read(TRANSFER_CHUNK):  # tar's padding after the archive's end
            pass
    except _channel_errors() + (tarfile.TarError,) as exc:
        raise _broken(channel, host, what, exc) from exc
    else:
        _finish(channel, host, what)
    finally:
        channel.close()


# --- transfers over plain exec channels ---------------------------------------
# No sftp: sshd has no sftp subsystem unless its config names one (a minimal
# sshd_config does not), while every host has sh, cat, mv, stat and tar.

TRANSFER_CHUNK = 256 * 1024
TRANSFER_STALL = 120.0  # seconds without progress before a transfer is given up
OnProgress = Callable[[int, int], None]  # (bytes done, bytes in all), as Progress takes them


def _channel_errors() -> Tuple[Type[BaseException], ...]:
    """What a failing SSH channel raises (paramiko is imported only when remote-selftest runs)."""
    import paramiko

    return (OSError, EOFError, paramiko.SSHException)


def _exec(conn: Any, host: str, command: str, what: str) -> Any:
    """A paramiko channel running ``command`` on the connection's transport."""
    transport = conn.client.get_transport()
    if transport is None or not transport.is_active():
        raise RemoteError(f"{host}: cannot {what}: the connection is closed")
    try:
        channel = transport.open_session(timeout=TRANSFER_STALL)
        channel.settimeout(TRANSFER_STALL)
        channel.exec_command(command)
    except _channel_errors() as exc:
        raise RemoteError(f"{host}: cannot {what}: {exc}") from exc
    return channel


def _stderr_tail(channel: Any) -> str:
    """What the remote command has written to stderr so far, as ``: <its last lines>``."""
    data = b""
    try:
        while channel.recv_stderr_ready():
            data += channel.recv_stderr(65536)
    except _channel_errors():
        pass
    text = data.decode("utf-8", errors="replace").strip()
    return f": {text[-500:]}" if text else ""


def _broken(channel: Any, host: str, what: str, exc: BaseException) -> RemoteError:
    """The error for a transfer that broke off: the host's own reason when its command failed, else ``exc``."""
    channel.status_event.wait(2.0)  # a command that stopped by itself has said why by now
    code = channel.exit_status if channel.exit_status_ready() else None
    said = _stderr_tail(channel)
    if code is not None and code > 0:
        return RemoteError(f"{host}: cannot {what}: exit code {code}{said}")
    return RemoteError(f"{host}: cannot {what}: {str(exc) or type(exc).__name__}{said}")


def _finish(channel: Any, host: str, what: str) -> None:
    """Wait (bounded) for the remote command's exit; a RemoteError unless it is 0."""
    if not channel.status_event.wait(TRANSFER_STALL):
        raise RemoteError(f"{host}: cannot {what}: the host did not finish within {TRANSFER_STALL:g} s")
    code = channel.recv_exit_status()
    if code != 0:
        said = _stderr_tail(channel) or (": the connection closed" if code == -1 else "")
        raise RemoteError(f"{host}: cannot {what}: exit code {code}{said}")


def remote_size(conn: Any, path: str) -> Optional[int]:
    """The size of a file on the host; None when there is none."""
    result = _run(conn, f"stat -c %s {shlex.quote(path)}")
    text = result.stdout.strip()
    return int(text) if result.exited == 0 and text.isdigit() else None


def send_file(conn: Any, host: str, local: Path, command: str, progress: Optional[OnProgress] = None) -> None:
    """Stream a local file into the stdin of ``command`` on the host, in chunks."""
    what = f"upload {local.name}"
    channel = _exec(conn, host, command, what)
    try:
        size = local.stat().st_size
        done = 0
        with open(local, "rb") as f:
            for block in iter(lambda: f.read(TRANSFER_CHUNK), b""):
                channel.sendall(block)
                done += len(block)
                if progress is not None:
                    progress(done, size)
        channel.shutdown_write()
    except _channel_errors() as exc:
        raise _broken(channel, host, what, exc) from exc
    else:
        _finish(channel, host, what)
    finally:
        channel.close()


def put_file(conn: Any, host: str, local: Path, remote: str, progress: Optional[OnProgress] = None) -> None:
    """Upload a file to ``remote``, which appears only complete: written beside it, size checked, renamed."""
    partial = f"{remote}.partial-{uuid.uuid4().hex[:8]}"
    try:
        send_file(conn, host, local, f"cat > {shlex.quote(partial)}", progress)
        size, got = local.stat().st_size, remote_size(conn, partial)
        if got != size:
            raise RemoteError(f"{host}: uploading {local.name}: the host has {got} bytes of {size}")
        _check(_run(conn, f"mv -f {shlex.quote(partial)} {shlex.quote(remote)}"), host, f"move {partial} into place")
    except BaseException:
        try:
            _run(conn, f"rm -f {shlex.quote(partial)}")
        except Exception as exc:  # a cleanup error never hides the first one
            log.debug("removing %s: %s", partial, exc)
        raise


def unpack_tar(stream: IO[bytes], folder: Path) -> List[str]:
    """Unpack a tar stream into ``folder``; the paths written, relative to it.

    Only regular files at relative paths inside ``folder``: whatever the host
    sends, nothing is written elsewhere (no absolute paths, no ``..``, no links
    or devices; those are skipped with a warning).
    """
    written = []
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if member.isdir():
                continue
            path = PurePosixPath(member.name)
            if not member.isfile() or path.is_absolute() or ".." in path.parts or not path.parts:
                log.warning("not fetched: %r is not a regular file inside the artifacts folder", member.name)
                continue
            target = folder.joinpath(*path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None  # a regular file has contents
            with open(target, "wb") as out:
                shutil.copyfileobj(source, out, TRANSFER_CHUNK)
            written.append(path.as_posix())
    return written


def prepare_host(conn: Any, host: str, opts: RemoteOptions, err: IO[str]) -> Tuple[str, str, str]:
    """Once per host: check it, install the harness, put the disk there; (home, harness folder, disk)."""
    home = check_host(conn, host, opts)
    site = install_harness(conn, home, host, opts)
    if opts.remote_disk:
        disk = opts.remote_disk
        if _run(conn, f"test -f {shlex.quote(disk)} && test -r {shlex.quote(disk)}").exited != 0:
            raise UsageError(f"{host}: --remote-disk {disk} is not a readable file on the host")
    else:
        assert opts.disk is not None
        disk = upload_disk(conn, home, host, opts.disk, err)
    # Stale runs (their session died before cleanup) are pruned after a day.
    _run(conn, f"find {shlex.quote(home + '/' + REMOTE_HOME + '/runs')} -mindepth 1 -maxdepth 1 -mtime +0 "
         "-exec rm -rf {} + 2>/dev/null; true")
    return home, site, disk


def run_selftest_on(
    conn: Any, opts: RemoteOptions, prepared: Tuple[str, str, str], local: Path, out: IO[str], err: IO[str],
    active: ActiveRuns, extra: Sequence[str] = (), wrapper: Sequence[str] = (),
) -> int:
    """One ``python -m harness selftest`` on a prepared host, its output streamed; its exit code.

    Its artifacts are fetched into ``local`` and its scratch folder removed.
    ``extra`` goes after the selftest options, ``wrapper`` before the command
    (a network namespace: harness/netns.py).
    """
    home, site, disk = prepared
    run_dir = f"{home}/{REMOTE_HOME}/runs/{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    remote_artifacts = f"{run_dir}/artifacts"
    argv = [
        *wrapper, opts.remote_python, "-m", "harness", "selftest", "--disk", disk, "--artifacts", remote_artifacts,
        "--exit-on-stdin-eof", "--session-deadline", f"{opts.timeout + SESSION_MARGIN:g}",
        "--qemu-system", opts.qemu_system, *opts.selftest_args, *extra,
    ]
    command = (
        f"mkdir -p {shlex.quote(run_dir)} && cd {shlex.quote(run_dir)} && "
        f"PYTHONPATH={shlex.quote(site)} exec {' '.join(shlex.quote(a) for a in argv)}"
    )
    try:
        runner = conn.config.runners.remote(context=conn, inline_env=conn.inline_ssh_env)
        active.add(runner, conn)
        result = runner.run(command, warn=True, hide=False, pty=False, out_stream=out, err_stream=err,
                            in_stream=False)
        code = int(result.exited)
        if code == -1 and not conn.is_connected:  # no exit status: the session ended with the connection
            raise SSHUnreachableError(f"{conn.host}: the connection was lost before the run ended",
                                      hint="the run on the host stops itself when its session goes away")
        fetch_artifacts(conn, getattr(conn, "original_host", conn.host), remote_artifacts, local)
    finally:
        try:
            _run(conn, f"rm -rf {shlex.quote(run_dir)}")
        except Exception as exc:  # best effort (stale runs are pruned); a lost connection's first error says more
            log.debug("%s: removing %s: %s", conn.host, run_dir, exc)
    return code


def probe_isolation(conn: Any) -> Tuple[Optional[netns.Isolation], str]:
    """How runs on this host can each have a network namespace of their own (harness/netns.py)."""

    def problem(argv: Sequence[str]) -> Optional[str]:
        result = _run(conn, " ".join(shlex.quote(a) for a in argv))
        if result.exited == 0:
            return None
        lines = (result.stderr or "").strip().splitlines()
        return lines[-1] if lines else f"exit code {result.exited}"

    return netns.choose(problem)


def run_on_host(host: str, opts: RemoteOptions, out: IO[str], err: IO[str], active: ActiveRuns) -> HostOutcome:
    started = time.monotonic()
    local = opts.artifacts / host
    conn = open_connection(host, opts)
    with conn:
        prepared = prepare_host(conn, host, opts, err)
        code = run_selftest_on(conn, opts, prepared, local, out, err, active)
    verdict = "?"
    try:
        verdict = json.loads((local / "result.json").read_text()).get("token", "?")
    except (OSError, ValueError):
        pass
    return HostOutcome(host, code, verdict, time.monotonic() - started, local)


def run_remote(opts: RemoteOptions, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> List[HostOutcome]:
    """Run on every host (in parallel when several); outcomes in the order of ``opts.hosts``."""
    if opts.disk is not None and not opts.disk.is_file():
        raise UsageError(f"--disk {opts.disk} does not exist or is not a file")
    lock = threading.Lock()
    several = len(opts.hosts) > 1
    active = ActiveRuns()

    def one(host: str) -> HostOutcome:
        prefix = f"[{host}] " if several else ""
        o = PrefixWriter(out, prefix, lock)
        e = PrefixWriter(err, prefix, lock)
        started = time.monotonic()
        try:
            return run_on_host(host, opts, o, e, active)  # type: ignore[arg-type]
        except HarnessError as exc:
            if not several:
                raise
            e.write(f"FAIL: {exc.token}: {exc}\n")
            return HostOutcome(host, int(exc.exit_code), exc.token, time.monotonic() - started, None)

    # The hosts run on worker threads; the main thread stays free to take Ctrl-C and SIGTERM.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(opts.hosts))
    futures = [pool.submit(one, host) for host in opts.hosts]
    try:
        try:
            while not all(f.done() for f in futures):
                concurrent.futures.wait(futures, timeout=0.2)
        except KeyboardInterrupt:
            err.write("interrupted: stopping the remote runs (Ctrl-C again to drop the connections)\n")
            interrupt.reset()  # a second Ctrl-C raises again
            active.interrupt()
            try:
                concurrent.futures.wait(futures, timeout=60)
            except KeyboardInterrupt:
                pass
            active.close()
            concurrent.futures.wait(futures, timeout=15)
            raise
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=False)


def summary_table(outcomes: Sequence[HostOutcome]) -> str:
    rows = [("host", "exit", "verdict", "time")]
    rows += [(o.host, str(o.code), o.verdict, f"{o.seconds:.1f}s") for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)




