"""What the harness remembers about this host between runs: small JSON files in
``~/.cache/aero-virtio-harness/`` (``$XDG_CACHE_HOME`` respected; a user with no
home, such as an arbitrary uid in a container, gets ``<tmp>/aero-virtio-harness-<uid>/``).

Each file maps keys that say exactly what an answer depends on (a QEMU build,
this boot of the host) to the answer, so an entry can never be stale: when
what it depends on changes, its key does too. A missing, unreadable or
damaged file reads as empty; one that cannot be written only costs the
probes next time.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Dict

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME")
    if base:
        return Path(base) / "aero-virtio-harness"
    try:
        home = Path.home()
    except (KeyError, RuntimeError):  # no HOME and no passwd entry for this uid (3.9: KeyError)
        home = Path()
    if home.is_absolute():
        return home / ".cache" / "aero-virtio-harness"
    return Path(tempfile.gettempdir()) / f"aero-virtio-harness-{os.getuid()}"


def _private(directory: Path) -> bool:
    """Whether a cache folder can be trusted: in a shared temp folder, anyone could have made it first."""
    if directory.parent != Path(tempfile.gettempdir()):
        return True
    st = directory.lstat()
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022


def load(name: str) -> Dict[str, Any]:
    directory = cache_dir()
    try:
        if not _private(directory):
            return {}
        data = json.loads((directory / name).read_text())
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested too deep
        return {}
    return data if isinstance(data, dict) else {}


def save(name: str, data: Dict[str, Any]) -> None:
    """Replace the file at once (a concurrent reader sees the old or the new one, never half)."""
    directory = cache_dir()
    path = directory / name
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(directory):
            log.debug("not caching in %s: another user could write there", directory)
            return
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("cannot write %s: %s", path, exc)
        try:
            tmp.unlink()
        except OSError:
            pass


def file_identity(path: str) -> str:
    """A file's real path, device, inode, size, mtime and change time: no copy, upgrade or edit keeps all of them."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return f"{real}|{st.st_dev}:{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
