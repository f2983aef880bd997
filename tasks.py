"""Invoke tasks: a thin front on the harness package (``invoke --list``).

Settings come, in this order, from the command line, then from Invoke's
configuration (``invoke.yaml`` under ``selftest:``, or ``INVOKE_SELFTEST_<NAME>``
environment variables), then from the harness defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

from invoke import Collection, Context, Exit, task

from harness.cli import SELFTEST_HELP, guarded
from harness.config import SelftestConfig, default_artifacts
from harness.console import Console
from harness.verdict import DEFAULT_REQUIRED

# Every selftest setting with its default; Invoke reads invoke.yaml and
# INVOKE_SELFTEST_* only for keys that exist here.
SELFTEST_DEFAULTS = {
    "disk": None,
    "qemu_system": "qemu-system-x86_64",
    "timeout": 600.0,
    "http_port": 18080,
    "udp_port": 18081,
    "http_path": "/aero-virtio-selftest",
    "memory": 2048,
    "smp": 2,
    "accel": "auto",
    "snapshot": True,
    "follow_serial": False,
    "dry_run": False,
    "require_test": list(DEFAULT_REQUIRED),
    "qemu_arg": [],
    "artifacts": None,
}

HELP = {name.replace("-", "_"): text for name, text in SELFTEST_HELP.items()}


def _setting(c: Context, name: str, given: Any, flag_default: Any = None) -> Any:
    """The command line's value when given, else the configuration's."""
    if given is not None and given != flag_default:
        return given
    return c.config.selftest.get(name, SELFTEST_DEFAULTS[name])


def _run(body: Any) -> None:
    code = guarded(body, Console())
    if code:
        raise Exit(code=code)


@task(help=HELP, iterable=["require_test", "qemu_arg"], auto_shortflags=False)
def selftest(
    c: Context,
    disk: Optional[str] = None,
    qemu_system: Optional[str] = None,
    timeout: Optional[float] = None,
    http_port: Optional[int] = None,
    udp_port: Optional[int] = None,
    http_path: Optional[str] = None,
    memory: Optional[int] = None,
    smp: Optional[int] = None,
    accel: Optional[str] = None,
    snapshot: bool = True,
    follow_serial: bool = False,
    dry_run: bool = False,
    require_test: Optional[List[str]] = None,
    qemu_arg: Optional[List[str]] = None,
    artifacts: Optional[str] = None,
) -> None:
    """Boot a guest under QEMU, serve its tests and judge its selftest (exit 0 PASS, 1 FAIL, 2 TIMEOUT, 3 QEMU gone)."""

    def body() -> int:
        from harness.runner import run_selftest

        disk_value = _setting(c, "disk", disk)
        artifacts_value = _setting(c, "artifacts", artifacts)
        cfg = SelftestConfig(
            disk=Path(disk_value) if disk_value else None,
            qemu_system=str(_setting(c, "qemu_system", qemu_system)),
            timeout=float(_setting(c, "timeout", timeout)),
            http_port=int(_setting(c, "http_port", http_port)),
            udp_port=int(_setting(c, "udp_port", udp_port)),
            http_path=str(_setting(c, "http_path", http_path)),
            memory=int(_setting(c, "memory", memory)),
            smp=int(_setting(c, "smp", smp)),
            accel=str(_setting(c, "accel", accel)),
            snapshot=bool(_setting(c, "snapshot", snapshot, True)),
            follow_serial=bool(_setting(c, "follow_serial", follow_serial, False)),
            dry_run=bool(_setting(c, "dry_run", dry_run, False)),
            require_tests=tuple(_setting(c, "require_test", require_test or None)),
            qemu_args=tuple(_setting(c, "qemu_arg", qemu_arg or None)),
            artifacts=Path(artifacts_value) if artifacts_value else default_artifacts(),
        )
        return int(run_selftest(cfg, Console()).exit_code)

    _run(body)


@task(help={"out": "where to write the image (default: build/test-guest.qcow2)"}, auto_shortflags=False)
def build_test_guest(c: Context, out: Optional[str] = None) -> None:
    """Build the Linux test guest from Debian packages and print its path."""
    import argparse

    from harness.cli import cmd_build_test_guest

    _run(lambda: cmd_build_test_guest(argparse.Namespace(out=Path(out) if out else None), Console()))


ns = Collection(selftest, build_test_guest)
ns.configure({"selftest": SELFTEST_DEFAULTS})
