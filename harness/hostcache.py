"""What the harness remembers about this host between runs: small JSON files in
``~/.cache/aero-virtio-harness/`` (``$XDG_CACHE_HOME`` respected).

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
from pathlib import Path
from typing import Any, Dict

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aero-virtio-harness"


def load(name: str) -> Dict[str, Any]:
    try:
        data = json.loads((cache_dir() / name).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save(name: str, data: Dict[str, Any]) -> None:
    """Replace the file at once (a concurrent reader sees the old or the new one, never half)."""
    path = cache_dir() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("cannot write %s: %s", path, exc)


def file_identity(path: str) -> str:
    """A file's real path, device, inode, size, mtime and change time: no copy, upgrade or edit keeps all of them."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return f"{real}|{st.st_dev}:{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
