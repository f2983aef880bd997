"""The settings of one selftest run, checked before anything starts."""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

from harness import options
from harness.errors import UsageError
from harness.options import ACCELS as ACCELS  # their home was here: kept importable from here
from harness.options import DEFAULT_HTTP_PATH as DEFAULT_HTTP_PATH

# The guest reaches the host's services at this address (QEMU user networking).
GUEST_HOST = "10.0.2.2"


def default_artifacts() -> Path:
    return Path("artifacts") / time.strftime("selftest-%Y%m%d-%H%M%S")


def guest_http_url(http_port: int, http_path: str) -> str:
    """The URL a guest GETs for the host's HTTP endpoint."""
    return f"http://{GUEST_HOST}:{http_port}{http_path}"


_default = functools.partial(options.default, "selftest")


@dataclass(frozen=True)
class SelftestConfig:
    """The settings of one run; the defaults are the options' (harness/options.py)."""

    disk: Optional[Path] = _default("disk")
    qemu_system: str = _default("qemu_system")
    timeout: float = _default("timeout")
    http_port: int = _default("http_port")
    udp_port: int = _default("udp_port")
    http_path: str = _default("http_path")
    memory: int = _default("memory")
    smp: int = _default("smp")
    accel: str = _default("accel")
    snapshot: bool = _default("snapshot")
    follow_serial: bool = _default("follow_serial")
    dry_run: bool = _default("dry_run")
    require_tests: Tuple[str, ...] = _default("require_test")
    qemu_args: Tuple[str, ...] = _default("qemu_arg")
    artifacts: Path = field(default_factory=default_artifacts)

    def validate(self) -> None:
        if not self.timeout > 0:
            raise UsageError(f"--timeout must be a positive number of seconds, not {self.timeout:g}")
        for name, port in (("--http-port", self.http_port), ("--udp-port", self.udp_port)):
            if not 1 <= port <= 65535:
                raise UsageError(f"{name} must be a port from 1 to 65535, not {port}")
        if not re.fullmatch(r"/[A-Za-z0-9._~/-]*", self.http_path):
            raise UsageError(
                f"--http-path must start with / and hold only URL-safe characters, not {self.http_path!r}",
                hint=f"the guest's default is {DEFAULT_HTTP_PATH}",
            )
        if self.memory < 64:
            raise UsageError(f"--memory is in MiB and must be at least 64, not {self.memory}")
        if not 1 <= self.smp <= 256:
            raise UsageError(f"--smp must be from 1 to 256, not {self.smp}")
        if self.accel not in ACCELS:
            raise UsageError(f"--accel must be one of {', '.join(ACCELS)}, not {self.accel!r}")
        for name in self.require_tests:
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise UsageError(f"--require-test {name!r} is not a test name such as virtio-net")
        if self.disk is not None:
            check_disk(self.disk)
        if self.artifacts.exists() and not self.artifacts.is_dir():
            raise UsageError(f"--artifacts {self.artifacts} exists and is not a folder")


def check_disk(disk: Path) -> None:
    if not disk.exists():
        raise UsageError(f"--disk {disk} does not exist", hint="give the path of a qcow2 or raw image")
    if disk.is_dir():
        raise UsageError(f"--disk {disk} is a directory, not a disk image", hint="give the image file inside it")
    try:
        with open(disk, "rb"):
            pass
    except OSError as exc:
        raise UsageError(f"--disk {disk} cannot be read: {exc.strerror}") from exc
