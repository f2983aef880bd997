"""``python -m harness``: the entry point, and the one place that exits.

Invoke's tasks.py and the remote runner call the same functions; only
``main`` turns an outcome or an exception into a process exit code.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Callable, List, NoReturn, Optional, Sequence

from harness import __version__
from harness.config import ACCELS, DEFAULT_HTTP_PATH, SelftestConfig, check_disk, default_artifacts
from harness.console import Console
from harness.errors import HarnessError, UsageError
from harness.exitcodes import ExitCode
from harness.verdict import DEFAULT_REQUIRED

if TYPE_CHECKING:
    from harness.remote import RemoteOptions

log = logging.getLogger("harness")

# The help strings, shared with tasks.py so both front ends say the same.
SELFTEST_HELP = {
    "disk": "guest disk image (qcow2 or raw); default: the built-in test guest, built on demand",
    "qemu-system": "QEMU binary to run (default: qemu-system-x86_64 on PATH)",
    "timeout": "seconds to wait for the guest's RESULT line (default: 600)",
    "http-port": "port of the HTTP endpoint on 127.0.0.1 (guest: 10.0.2.2) (default: 18080)",
    "udp-port": "port of the UDP echo on 127.0.0.1 (default: 18081)",
    "http-path": f"URL path the guest GETs (default: {DEFAULT_HTTP_PATH})",
    "memory": "guest memory in MiB (default: 2048)",
    "smp": "guest CPUs (default: 2)",
    "accel": "accelerator: auto (KVM when it really works, else TCG), kvm, tcg, ... (default: auto)",
    "snapshot": "run on a throw-away overlay so the base image is never written (default: on; "
    "--no-snapshot writes the image itself)",
    "follow-serial": "print the guest's serial lines as they arrive",
    "dry-run": "print the QEMU command (JSON and shell) and start nothing",
    "require-test": "a guest TEST that must PASS; repeatable (default: virtio-blk and virtio-net)",
    "qemu-arg": "an extra QEMU argument, appended as is; repeatable",
    "artifacts": "folder for serial.log, qemu.log, result.json, junit.xml, screen.png "
    "(default: artifacts/selftest-<date>-<time>)",
}


def add_selftest_arguments(parser: argparse.ArgumentParser) -> None:
    h = SELFTEST_HELP
    parser.add_argument("--disk", type=Path, help=h["disk"])
    parser.add_argument("--qemu-system", default="qemu-system-x86_64", help=h["qemu-system"])
    parser.add_argument("--timeout", type=float, default=600.0, help=h["timeout"])
    parser.add_argument("--http-port", type=int, default=18080, help=h["http-port"])
    parser.add_argument("--udp-port", type=int, default=18081, help=h["udp-port"])
    parser.add_argument("--http-path", default=DEFAULT_HTTP_PATH, help=h["http-path"])
    parser.add_argument("--memory", type=int, default=2048, help=h["memory"])
    parser.add_argument("--smp", type=int, default=2, help=h["smp"])
    parser.add_argument("--accel", default="auto", choices=ACCELS, help=h["accel"])
    parser.add_argument("--snapshot", action=argparse.BooleanOptionalAction, default=True, help=h["snapshot"])
    parser.add_argument("--follow-serial", action="store_true", help=h["follow-serial"])
    parser.add_argument("--dry-run", action="store_true", help=h["dry-run"])
    parser.add_argument("--require-test", action="append", metavar="NAME", help=h["require-test"])
    parser.add_argument("--qemu-arg", action="append", metavar="ARG", default=[], help=h["qemu-arg"])
    parser.add_argument("--artifacts", type=Path, help=h["artifacts"])


def add_session_guards(parser: argparse.ArgumentParser) -> None:
    """Options remote-selftest gives the remote run: it ends with its SSH session."""
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--session-deadline", type=float, help=argparse.SUPPRESS)


def passthrough_args(args: argparse.Namespace) -> List[str]:
    """The selftest options of a parsed command line, as arguments for a remote run.

    --disk, --artifacts and --qemu-system are handled by remote-selftest itself.
    """
    out = [
        "--timeout", f"{args.timeout:g}", "--http-port", str(args.http_port), "--udp-port", str(args.udp_port),
        "--http-path", args.http_path, "--memory", str(args.memory), "--smp", str(args.smp), "--accel", args.accel,
    ]
    if args.follow_serial:
        out.append("--follow-serial")
    if args.dry_run:
        out.append("--dry-run")
    for name in args.require_test or []:
        out += ["--require-test", name]
    for arg in args.qemu_arg:
        out.append(f"--qemu-arg={arg}")
    return out


def config_from_args(args: argparse.Namespace) -> SelftestConfig:
    return SelftestConfig(
        disk=args.disk,
        qemu_system=args.qemu_system,
        timeout=args.timeout,
        http_port=args.http_port,
        udp_port=args.udp_port,
        http_path=args.http_path,
        memory=args.memory,
        smp=args.smp,
        accel=args.accel,
        snapshot=args.snapshot,
        follow_serial=args.follow_serial,
        dry_run=args.dry_run,
        require_tests=tuple(args.require_test) if args.require_test else DEFAULT_REQUIRED,
        qemu_args=tuple(args.qemu_arg),
        artifacts=args.artifacts or default_artifacts(),
    )


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad usage with our exit code instead of its own 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(int(ExitCode.USAGE), f"{self.prog}: error: {message}\n")


REMOTE_HELP = {
    "host": "an SSH host (a name from ~/.ssh/config, or user@host:port); repeatable: hosts run in parallel",
    "disk": "a local disk image, uploaded unless the host already has the same content (default: the test guest)",
    "remote-disk": "a disk image already on the host (never written: runs use an overlay)",
    "artifacts": "local folder; each host's artifacts land in <artifacts>/<host>/ (default: artifacts/remote-<time>)",
    "accept-new-host-key": "accept and record the key of a host not yet in known_hosts (default: refuse)",
    "ssh-config": "ssh_config file to resolve hosts with (default: ~/.ssh/config, as Fabric does)",
    "remote-python": "Python 3.9+ on the host (default: python3)",
}


def add_remote_arguments(parser: argparse.ArgumentParser) -> None:
    add_selftest_arguments(parser)
    for action in parser._actions:
        if action.dest in ("disk", "artifacts"):
            action.help = REMOTE_HELP[action.dest]
    parser.add_argument("--host", action="append", required=True, help=REMOTE_HELP["host"])
    parser.add_argument("--remote-disk", help=REMOTE_HELP["remote-disk"])
    parser.add_argument("--accept-new-host-key", action="store_true", help=REMOTE_HELP["accept-new-host-key"])
    parser.add_argument("--ssh-config", type=Path, help=REMOTE_HELP["ssh-config"])
    parser.add_argument("--remote-python", default="python3", help=REMOTE_HELP["remote-python"])


MEDIA_HELP = {
    "drivers": "folder holding the driver packages (searched for the allow-listed INFs)",
    "selftest": "aero-virtio-selftest.exe",
    "out": "the ISO to write (default: build/provision.iso)",
    "http-url": "URL the guest's selftest GETs (default: from --http-port/--http-path, as the harness serves)",
    "http-port": "host HTTP port, as for selftest (default: 18080)",
    "http-path": f"host HTTP path, as for selftest (default: {DEFAULT_HTTP_PATH})",
    "udp-port": "UDP echo port (default: 18081)",
    "dns-host": "host name the selftest resolves (default: host.lan)",
    "blk-root": "the selftest's --blk-root (default: not passed)",
    "test-switch": "a selftest switch such as net-link-flap (becomes --test-net-link-flap); repeatable",
    "test-signing": "turn test signing on (bcdedit) for test-signed drivers (default: on)",
    "inf": "an INF of the allow-list (repeatable; default: aero_virtio_blk and aero_virtio_net)",
    "arch": "Windows architecture: amd64 or x86 (default: amd64)",
    "product-key": "Windows product key for autounattend.xml (default: $AERO_WIN7_PRODUCT_KEY, else none); "
    "never printed or logged",
    "admin-password": "password of the auto-logon account 'aero' (default: Aero-Test-1)",
    "computer-name": "the guest's computer name (default: AERO-WIN7)",
}


def add_media_arguments(parser: argparse.ArgumentParser) -> None:
    h = MEDIA_HELP
    parser.add_argument("--drivers", type=Path, required=True, help=h["drivers"])
    parser.add_argument("--selftest", type=Path, required=True, help=h["selftest"])
    parser.add_argument("--out", type=Path, help=h["out"])
    parser.add_argument("--http-url", help=h["http-url"])
    parser.add_argument("--http-port", type=int, default=18080, help=h["http-port"])
    parser.add_argument("--http-path", default=DEFAULT_HTTP_PATH, help=h["http-path"])
    parser.add_argument("--udp-port", type=int, default=18081, help=h["udp-port"])
    parser.add_argument("--dns-host", default="host.lan", help=h["dns-host"])
    parser.add_argument("--blk-root", help=h["blk-root"])
    parser.add_argument("--test-switch", action="append", default=[], metavar="NAME", help=h["test-switch"])
    parser.add_argument("--test-signing", action=argparse.BooleanOptionalAction, default=True, help=h["test-signing"])
    parser.add_argument("--inf", action="append", metavar="NAME", help=h["inf"])
    parser.add_argument("--arch", default="amd64", choices=("amd64", "x86"), help=h["arch"])
    parser.add_argument("--product-key", help=h["product-key"])
    parser.add_argument("--admin-password", default="Aero-Test-1", help=h["admin-password"])
    parser.add_argument("--computer-name", default="AERO-WIN7", help=h["computer-name"])


def cmd_provision_media(args: argparse.Namespace, console: Console) -> int:
    try:
        from images import provision
    except ImportError as exc:
        raise UsageError("the media builder (images/) is not installed with this copy of the harness") from exc
    settings = provision.GuestSettings(
        http_url=args.http_url or f"http://10.0.2.2:{args.http_port}{args.http_path}",
        udp_port=args.udp_port,
        dns_host=args.dns_host,
        blk_root=args.blk_root,
        test_switches=tuple(s if s.startswith("--test-") else f"--test-{s}" for s in args.test_switch),
        test_signing=args.test_signing,
        infs=tuple(args.inf) if args.inf else provision.DEFAULT_INFS,
        arch=args.arch,
        admin_password=args.admin_password,
        computer_name=args.computer_name,
        product_key=args.product_key or os.environ.get("AERO_WIN7_PRODUCT_KEY") or None,
    )
    out = args.out or Path("build") / "provision.iso"
    files = provision.build_media(args.drivers, args.selftest, settings, out)
    console.info(f"{len(files)} files; the task runs: {provision.schtasks_line(settings)}")
    console.verdict(str(out))
    return 0


INSTALL_HELP = {
    "iso": "the Windows 7 installation ISO",
    "media": "the provisioning ISO from provision-media",
    "out": "the image to create (qcow2)",
    "size": "virtual size of the new disk (default: 32G)",
    "force": "overwrite --out if it exists",
    "timeout": "seconds to wait for provisioning to report DONE (default: 10800)",
    "memory": "guest memory in MiB (default: 2048)",
    "smp": "guest CPUs (default: 2)",
    "accel": "accelerator: auto, kvm, tcg, ... (default: auto)",
    "qemu-system": "QEMU binary (default: qemu-system-x86_64 on PATH)",
    "screenshot-every": "seconds between screenshots saved to the artifacts (default: 300)",
    "qemu-arg": "an extra QEMU argument; repeatable",
    "artifacts": "folder for serial.log, qemu.log, install.json and screenshots "
    "(default: artifacts/install-<date>-<time>)",
}


def add_install_arguments(parser: argparse.ArgumentParser) -> None:
    h = INSTALL_HELP
    parser.add_argument("--iso", type=Path, required=True, help=h["iso"])
    parser.add_argument("--media", type=Path, required=True, help=h["media"])
    parser.add_argument("--out", type=Path, required=True, help=h["out"])
    parser.add_argument("--size", default="32G", help=h["size"])
    parser.add_argument("--force", action="store_true", help=h["force"])
    parser.add_argument("--timeout", type=float, default=10800.0, help=h["timeout"])
    parser.add_argument("--memory", type=int, default=2048, help=h["memory"])
    parser.add_argument("--smp", type=int, default=2, help=h["smp"])
    parser.add_argument("--accel", default="auto", choices=ACCELS, help=h["accel"])
    parser.add_argument("--qemu-system", default="qemu-system-x86_64", help=h["qemu-system"])
    parser.add_argument("--screenshot-every", type=float, default=300.0, help=h["screenshot-every"])
    parser.add_argument("--qemu-arg", action="append", default=[], metavar="ARG", help=h["qemu-arg"])
    parser.add_argument("--artifacts", type=Path, help=h["artifacts"])


def cmd_install_win7(args: argparse.Namespace, console: Console) -> int:
    from harness.install import InstallConfig, run_install

    cfg = InstallConfig(
        iso=args.iso, media=args.media, out=args.out, size=args.size, force=args.force, timeout=args.timeout,
        memory=args.memory, smp=args.smp, accel=args.accel, qemu_system=args.qemu_system,
        screenshot_every=args.screenshot_every, qemu_args=tuple(args.qemu_arg),
        artifacts=args.artifacts or Path("artifacts") / time.strftime("install-%Y%m%d-%H%M%S"),
    )
    return int(run_install(cfg, console))


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="python -m harness", description="Host side of the Aero virtio selftest.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_ArgumentParser)
    selftest = sub.add_parser("selftest", help="boot a guest under QEMU and judge its selftest")
    add_selftest_arguments(selftest)
    add_session_guards(selftest)
    remote = sub.add_parser("remote-selftest", help="the same selftest on remote KVM hosts over SSH")
    add_remote_arguments(remote)
    bench = sub.add_parser("bench", help="measure the harness on the test guest (writes build/bench.json)")
    bench.add_argument("--pairs", type=int, default=5, help="paired runs for overhead and latency (default: 5)")
    bench.add_argument("--wait-seconds", type=float, default=60.0, help="idle time measured for CPU (default: 60)")
    bench.add_argument("--log-mib", type=int, action="append", help="serial log sizes for the memory figure, "
                       "repeatable (default: 64, 256, 1024)")
    bench.add_argument("--qemu-system", default="qemu-system-x86_64", help="QEMU binary (default: on PATH)")
    bench.add_argument("--out", type=Path, help="where to write the figures (default: build/bench.json)")
    media = sub.add_parser("provision-media", help="build the provisioning ISO for a Windows 7 test image")
    add_media_arguments(media)
    install = sub.add_parser("install-win7", help="install Windows 7 unattended onto a new image, provisioned")
    add_install_arguments(install)
    build = sub.add_parser("build-test-guest", help="build the Linux test guest image")
    build.add_argument("--out", type=Path, help="where to write it (default: build/test-guest.qcow2)")
    build.add_argument("--installer-iso", type=Path, help="also write a CD that plays the Windows installer "
                       "for install-win7 (see README)")
    return parser


def _guard_session(args: argparse.Namespace) -> None:
    """End this run (as if by SIGTERM) when its SSH session closes or its deadline passes."""
    pid = os.getpid()
    if args.exit_on_stdin_eof:

        def watch_stdin() -> None:
            # os.read, not sys.stdin: a buffered reader's lock would trip interpreter shutdown.
            # EOF: the session is gone. ETX (^C): remote-selftest forwards a local Ctrl-C.
            try:
                while True:
                    data = os.read(0, 4096)
                    if not data or b"\x03" in data:
                        break
            except OSError:
                pass
            os.kill(pid, signal.SIGTERM)

        threading.Thread(target=watch_stdin, name="aero-stdin-eof", daemon=True).start()
    if args.session_deadline:
        timer = threading.Timer(args.session_deadline, os.kill, (pid, signal.SIGTERM))
        timer.daemon = True
        timer.start()


def cmd_selftest(args: argparse.Namespace, console: Console) -> int:
    from harness.runner import run_selftest

    _guard_session(args)
    return int(run_selftest(config_from_args(args), console).exit_code)


def remote_options(args: argparse.Namespace, console: Console) -> RemoteOptions:
    from harness.remote import RemoteOptions
    from harness.runner import default_test_guest

    if not args.snapshot:
        raise UsageError("--no-snapshot is not allowed with remote-selftest: the remote base image is never written")
    if args.disk is not None and args.remote_disk is not None:
        raise UsageError("give --disk (a local image to upload) or --remote-disk (one on the host), not both")
    disk = args.disk
    if disk is None and args.remote_disk is None:
        disk = default_test_guest(console)
    if disk is not None:
        check_disk(disk)
    config_from_args(args).validate()
    return RemoteOptions(
        hosts=tuple(args.host),
        selftest_args=tuple(passthrough_args(args)),
        disk=disk,
        remote_disk=args.remote_disk,
        artifacts=args.artifacts or Path("artifacts") / time.strftime("remote-%Y%m%d-%H%M%S"),
        timeout=args.timeout,
        qemu_system=args.qemu_system,
        ssh_config=args.ssh_config,
        accept_new_host_key=args.accept_new_host_key,
        remote_python=args.remote_python,
    )


def cmd_remote_selftest(args: argparse.Namespace, console: Console) -> int:
    from harness.remote import run_remote, summary_table, worst

    opts = remote_options(args, console)
    outcomes = run_remote(opts, console.out, console.err)
    if len(outcomes) > 1:
        console.info("")
        console.info(summary_table(outcomes))
    console.info(f"artifacts: {opts.artifacts.resolve()}/<host>/")
    return worst([o.code for o in outcomes])


def cmd_build_test_guest(args: argparse.Namespace, console: Console) -> int:
    try:
        from images import testguest
    except ImportError as exc:
        raise HarnessError("the test-guest builder (images/) is not installed with this copy of the harness") from exc
    image = testguest.build(args.out or testguest.DEFAULT_OUT)
    console.info(
        f"built in {image.manifest['build_seconds']} s, {int(image.manifest['size_bytes']) / 2**20:.1f} MiB, "
        f"kernel {image.manifest['kernel']}"
    )
    console.verdict(str(image.path))
    if args.installer_iso:
        console.verdict(str(testguest.build_installer_iso(args.installer_iso, image.path)))
    return 0


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    from harness.bench import DEFAULT_OUT, run_bench
    from harness.qemu import find_qemu
    from harness.runner import default_test_guest

    if args.pairs < 1 or args.wait_seconds <= 0:
        raise UsageError("--pairs must be at least 1 and --wait-seconds positive")
    run_bench(default_test_guest(console), find_qemu(args.qemu_system), args.out or DEFAULT_OUT, args.pairs,
              args.wait_seconds, args.log_mib or [64, 256, 1024], console.out)
    return 0


def _raise_interrupt(signum: int, frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def exit_code_for(exc: BaseException) -> ExitCode:
    """The one mapping from an exception to an exit code."""
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(exc, HarnessError):
        return exc.exit_code
    return ExitCode.INTERNAL_ERROR


def guarded(body: Callable[[], int], console: Console) -> int:
    """Run a command body; report any error the way a user can act on it."""
    try:
        return body()
    except KeyboardInterrupt as exc:
        console.info("interrupted")
        return int(exit_code_for(exc))
    except HarnessError as exc:
        console.verdict(f"FAIL: {exc.token}: {exc.message}")
        if exc.hint:
            console.info(f"hint: {exc.hint}")
        return int(exit_code_for(exc))
    except Exception as exc:  # a bug: still a clear line and a code of its own, never a bare traceback
        log.debug("internal error", exc_info=True)
        console.verdict(f"FAIL: INTERNAL_ERROR: {type(exc).__name__}: {exc}")
        console.info("hint: this is a bug in the harness; run again with -v for the traceback and report it")
        return int(exit_code_for(exc))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    signal.signal(signal.SIGTERM, _raise_interrupt)
    console = Console()
    commands = {
        "selftest": cmd_selftest,
        "remote-selftest": cmd_remote_selftest,
        "build-test-guest": cmd_build_test_guest,
        "bench": cmd_bench,
        "provision-media": cmd_provision_media,
        "install-win7": cmd_install_win7,
    }
    return guarded(lambda: commands[args.command](args, console), console)


def run_main(argv: Optional[List[str]] = None) -> None:
    sys.exit(main(argv))
