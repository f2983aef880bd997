"""Runs side by side on one host: each in its own network namespace, or taking turns on a lock.

Every guest reaches its host at the fixed 10.0.2.2:18080/18081, which libslirp
forwards to 127.0.0.1 *in QEMU's network namespace*. So a run (the whole
``python -m harness selftest`` process: its host services and its QEMU) started
in a namespace of its own serves those ports to its own guest, whatever runs
beside it. ``Isolation`` is how a command is put there: a user+network namespace
(``unshare --user --map-root-user --net``, no privilege needed where user
namespaces are allowed) or, for root where they are not, a network namespace
(``unshare --net``). Loopback is down in a new namespace; the run brings it up
itself (``loopback_up``, for ``--private-network``).

Where no namespace can be made, runs that share a network namespace wait for
each other: ``port_lock`` holds a lock file per port (flock) under /tmp, named
after the namespace, so runs in different namespaces never wait for each other.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import socket
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

from harness import interrupt
from harness.deadline import Deadline
from harness.errors import HostError

LOCK_DIR = Path("/tmp")  # host-wide (XDG_RUNTIME_DIR is per user, and ports are not)
LOCK_POLL = 0.2
# A run that holds the ports ends within its own timeout; this bounds the wait for one that does not.
LOCK_WAIT = 3600.0
PROBE_TIMEOUT = 15.0


@dataclass(frozen=True)
class Isolation:
    """A way to start a command in a network namespace of its own."""

    name: str
    prefix: Tuple[str, ...]

    def wrap(self, argv: Sequence[str]) -> List[str]:
        return [*self.prefix, "--", *argv]

    @property
    def probe(self) -> List[str]:
        return self.wrap(["true"])

    def describe(self) -> str:
        return f"{self.name} of its own ({' '.join(self.prefix)})"


USER_NET = Isolation("a user+network namespace", ("unshare", "--user", "--map-root-user", "--net"))
NET = Isolation("a network namespace", ("unshare", "--net"))  # root, where user namespaces are off
METHODS = (USER_NET, NET)


def choose(problem: Callable[[Sequence[str]], Optional[str]]) -> Tuple[Optional[Isolation], str]:
    """The first method whose probe runs (``problem`` runs an argv: None, or what went wrong); else why none did."""
    problems = []
    for method in METHODS:
        found = problem(method.probe)
        if found is None:
            return method, ""
        problems.append(f"{' '.join(method.prefix)}: {found}")
    return None, "; ".join(problems)


def _local_problem(argv: Sequence[str]) -> Optional[str]:
    try:
        proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if proc.returncode == 0:
        return None
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit code {proc.returncode}"


@functools.lru_cache(maxsize=1)
def probe_local() -> Tuple[Optional[Isolation], str]:
    """How runs are isolated on this machine (probed once per process)."""
    return choose(_local_problem)


# --- inside the namespace ----------------------------------------------------

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFREQ = "16sH22x"  # struct ifreq: the name, then ifr_flags at the start of a 24-byte union


def loopback_up() -> None:
    """Bring ``lo`` up (it starts down in a new network namespace): 127.0.0.1 is where the guest's 10.0.2.2 lands."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            flags = struct.unpack(IFREQ, fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack(IFREQ, b"lo", 0)))[1]
            if not flags & IFF_UP:
                fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack(IFREQ, b"lo", flags | IFF_UP))
    except OSError as exc:
        raise HostError(
            f"cannot bring the loopback interface up: {exc.strerror}",
            hint="--private-network is for a run started in a network namespace of its own (--repeat does that)",
        ) from exc


# --- the lock where there is no namespace ------------------------------------


def namespace_id() -> str:
    """Names this network namespace (runs in two namespaces do not share 127.0.0.1)."""
    try:
        return f"net{os.stat('/proc/self/ns/net').st_ino}"
    except OSError:
        return "net"


def lock_paths(ports: Iterable[Tuple[str, int]], folder: Path = LOCK_DIR) -> List[Path]:
    """One lock file per (protocol, port), in one order for every run (so two runs never deadlock)."""
    ns = namespace_id()
    return sorted(folder / f"aero-virtio-harness-{ns}-{proto}-{port}.lock" for proto, port in set(ports))


def _open_lock(path: Path) -> Tuple[int, bool]:
    """The lock file, opened for writing when we may (then it records our pid), else for reading.

    flock works on either. Another user's file in /tmp opens read-only; and with
    fs.protected_regular an O_CREAT open of it fails, so O_CREAT is tried only when it is missing.
    """
    while True:
        for flags, writable in ((os.O_RDWR, True), (os.O_RDONLY, False)):
            try:
                return os.open(path, flags | os.O_CLOEXEC), writable
            except PermissionError:
                continue
            except FileNotFoundError:
                break
        else:
            raise HostError(f"cannot open the lock file {path}", hint="check the permissions of /tmp")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue  # another run made it a moment ago
        except OSError as exc:
            raise HostError(f"cannot create the lock file {path}: {exc.strerror}") from exc
        os.fchmod(fd, 0o666)  # every user's runs share the ports, so every user may write their pid
        return fd, True


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def held_by(ports: Sequence[Tuple[str, int]], folder: Path = LOCK_DIR) -> Optional[str]:
    """Whether another run holds one of these ports' locks now, and who (for a message; it may change at once)."""
    for path in lock_paths(ports, folder):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return f"another selftest run{_holder(fd)}"
        finally:
            os.close(fd)  # and with it our lock, if we got it
    return None


@contextlib.contextmanager
def port_lock(ports: Sequence[Tuple[str, int]], say: Callable[[str], None], wait: float = LOCK_WAIT,
              folder: Path = LOCK_DIR) -> Iterator[None]:
    """Hold the host-wide locks of these ports; wait (saying so) while another run holds them.

    The wait wakes at once for a signal (``interrupt.sleep``) and is bounded by ``wait``.
    """
    deadline = Deadline(wait)
    shown = ", ".join(f"{proto.upper()} {port}" for proto, port in ports)
    with contextlib.ExitStack() as stack:
        for path in lock_paths(ports, folder):
            fd, writable = _open_lock(path)
            stack.callback(os.close, fd)
            told = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise HostError(f"cannot lock {path}: {exc.strerror}") from exc
                if not told:
                    say(f"waiting for another selftest run{_holder(fd)} to end: runs on this host share "
                        f"127.0.0.1 ({shown}) and take turns (lock {path})")
                    told = True
                if deadline.expired:
                    raise HostError(
                        f"another selftest run held {shown} on 127.0.0.1 for {wait:g} s (lock {path}{_holder(fd)})",
                        hint="is a run hung? its pid is in the lock file",
                    )
                interrupt.sleep(LOCK_POLL)
            if writable:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
