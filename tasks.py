"""Invoke tasks: a thin front on the harness package (``invoke --list``).

Settings come, in this order, from the command line, then from Invoke's
configuration (``invoke.yaml`` under ``selftest:``, or ``INVOKE_SELFTEST_<NAME>``
environment variables), then from the harness defaults.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from invoke import Collection, Context, Exit, task

from harness.cli import INSTALL_HELP, MEDIA_HELP, REMOTE_HELP, SELFTEST_HELP
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


def _selftest_argv(c: Context, given: Dict[str, Any]) -> List[str]:
    """The harness command line for these task arguments and Invoke's configuration."""
    argv: List[str] = []
    for name in ("disk", "qemu_system", "timeout", "http_port", "udp_port", "http_path", "memory", "smp", "accel",
                 "artifacts"):
        value = _setting(c, name, given[name])
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    if not _setting(c, "snapshot", given["snapshot"], True):
        argv.append("--no-snapshot")
    for flag in ("follow_serial", "dry_run"):
        if _setting(c, flag, given[flag], False):
            argv.append(f"--{flag.replace('_', '-')}")
    required = given["require_test"] or None
    if required is not None or c.config.selftest.get("require_test") != SELFTEST_DEFAULTS["require_test"]:
        for name in _setting(c, "require_test", required):
            argv += ["--require-test", str(name)]
    for arg in _setting(c, "qemu_arg", given["qemu_arg"] or None):
        argv.append(f"--qemu-arg={arg}")
    return argv


def _main(argv: List[str]) -> None:
    from harness.cli import main

    code = main(argv)
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
    _main(["selftest", *_selftest_argv(c, locals())])


REMOTE_TASK_HELP = dict(HELP, **{name.replace("-", "_"): text for name, text in REMOTE_HELP.items()})


@task(help=REMOTE_TASK_HELP, iterable=["host", "require_test", "qemu_arg"], auto_shortflags=False)
def remote_selftest(
    c: Context,
    host: Optional[List[str]] = None,
    remote_disk: Optional[str] = None,
    accept_new_host_key: bool = False,
    ssh_config: Optional[str] = None,
    remote_python: Optional[str] = None,
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
    """Run the same selftest on remote KVM hosts over SSH; artifacts land in <artifacts>/<host>/."""
    given = locals()
    argv = ["remote-selftest", *_selftest_argv(c, given)]
    for name in host or []:
        argv += ["--host", name]
    if remote_disk:
        argv += ["--remote-disk", remote_disk]
    if accept_new_host_key:
        argv.append("--accept-new-host-key")
    if ssh_config:
        argv += ["--ssh-config", ssh_config]
    if remote_python:
        argv += ["--remote-python", remote_python]
    _main(argv)


@task(
    help={
        "out": "where to write the image (default: build/test-guest.qcow2)",
        "installer_iso": "also write a CD that plays the Windows installer, for trying install-win7",
    },
    auto_shortflags=False,
)
def build_test_guest(c: Context, out: Optional[str] = None, installer_iso: Optional[str] = None) -> None:
    """Build the Linux test guest from Debian packages and print its path."""
    _main(["build-test-guest", *(["--out", out] if out else []),
           *(["--installer-iso", installer_iso] if installer_iso else [])])


MEDIA_TASK_HELP = {k.replace("-", "_"): v for k, v in MEDIA_HELP.items()
                   if k not in ("http-port", "http-path", "udp-port")}


@task(help=MEDIA_TASK_HELP, iterable=["test_switch", "inf"], auto_shortflags=False)
def provision_media(
    c: Context,
    drivers: Optional[str] = None,
    selftest: Optional[str] = None,
    out: Optional[str] = None,
    http_url: Optional[str] = None,
    dns_host: Optional[str] = None,
    blk_root: Optional[str] = None,
    test_switch: Optional[List[str]] = None,
    test_signing: bool = True,
    inf: Optional[List[str]] = None,
    arch: Optional[str] = None,
    product_key: Optional[str] = None,
    admin_password: Optional[str] = None,
    computer_name: Optional[str] = None,
) -> None:
    """Build the provisioning ISO (drivers, selftest, provision.cmd, autounattend.xml) for a Windows 7 image.

    The guest's URL and UDP port come from the same settings `invoke selftest` serves
    (selftest.http_port, http_path, udp_port in invoke.yaml), so host and guest agree.
    """
    argv = ["provision-media"]
    for name, value in (("drivers", drivers), ("selftest", selftest), ("out", out), ("http-url", http_url),
                        ("dns-host", dns_host), ("blk-root", blk_root), ("arch", arch), ("product-key", product_key),
                        ("admin-password", admin_password), ("computer-name", computer_name)):
        if value:
            argv += [f"--{name}", value]
    for name in ("http_port", "http_path", "udp_port"):
        argv += [f"--{name.replace('_', '-')}", str(_setting(c, name, None))]
    for switch in test_switch or []:
        argv += ["--test-switch", switch]
    for name in inf or []:
        argv += ["--inf", name]
    if not test_signing:
        argv.append("--no-test-signing")
    _main(argv)


@task(help={k.replace("-", "_"): v for k, v in INSTALL_HELP.items()}, iterable=["qemu_arg"], auto_shortflags=False)
def install_win7(
    c: Context,
    iso: Optional[str] = None,
    media: Optional[str] = None,
    out: Optional[str] = None,
    size: str = "32G",
    force: bool = False,
    timeout: float = 10800.0,
    memory: int = 2048,
    smp: int = 2,
    accel: str = "auto",
    qemu_system: str = "qemu-system-x86_64",
    screenshot_every: float = 300.0,
    qemu_arg: Optional[List[str]] = None,
    artifacts: Optional[str] = None,
) -> None:
    """Install Windows 7 unattended onto a new image with the provisioning media, following its progress."""
    argv = ["install-win7", "--size", size, "--timeout", f"{timeout:g}", "--memory", str(memory), "--smp", str(smp),
            "--accel", accel, "--qemu-system", qemu_system, "--screenshot-every", f"{screenshot_every:g}"]
    for name, value in (("iso", iso), ("media", media), ("out", out), ("artifacts", artifacts)):
        if value:
            argv += [f"--{name}", value]
    if force:
        argv.append("--force")
    for arg in qemu_arg or []:
        argv.append(f"--qemu-arg={arg}")
    _main(argv)


@task(
    help={
        "pairs": "paired runs for the overhead and latency figures (default: 5)",
        "wait_seconds": "idle time over which the CPU figure is taken (default: 60)",
        "out": "where to write the figures (default: build/bench.json)",
    },
    auto_shortflags=False,
)
def bench(c: Context, pairs: int = 5, wait_seconds: float = 60.0, out: Optional[str] = None) -> None:
    """Measure the harness on the test guest: overhead, verdict latency, idle CPU, memory, start-up."""
    _main(["bench", "--pairs", str(pairs), "--wait-seconds", f"{wait_seconds:g}", *(["--out", out] if out else [])])


ns = Collection(selftest, remote_selftest, build_test_guest, provision_media, install_win7, bench)
ns.configure({"selftest": SELFTEST_DEFAULTS})
