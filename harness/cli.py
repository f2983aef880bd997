"""``python -m harness``: the entry point, and the one place that exits.

Invoke's tasks.py and the remote runner call the same functions; only
``main`` turns an outcome or an exception into a process exit code.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Callable, List, NoReturn, Optional, Sequence

from harness import __version__
from harness.config import ACCELS, DEFAULT_HTTP_PATH, SelftestConfig, default_artifacts
from harness.console import Console
from harness.errors import HarnessError
from harness.exitcodes import ExitCode
from harness.verdict import DEFAULT_REQUIRED

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


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="python -m harness", description="Host side of the Aero virtio selftest.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_ArgumentParser)
    selftest = sub.add_parser("selftest", help="boot a guest under QEMU and judge its selftest")
    add_selftest_arguments(selftest)
    build = sub.add_parser("build-test-guest", help="build the Linux test guest image")
    build.add_argument("--out", type=Path, help="where to write it (default: build/test-guest.qcow2)")
    return parser


def cmd_selftest(args: argparse.Namespace, console: Console) -> int:
    from harness.runner import run_selftest

    return int(run_selftest(config_from_args(args), console).exit_code)


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
    return 0


def _raise_interrupt(signum: int, frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def exit_code_for(exc: BaseException) -> ExitCode:
    """The one mapping from an exception to an exit code."""
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(exc, HarnessError):
        return exc.exit_code
    return ExitCode.HOST_ERROR


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    signal.signal(signal.SIGTERM, _raise_interrupt)
    console = Console()
    commands = {"selftest": cmd_selftest, "build-test-guest": cmd_build_test_guest}
    return guarded(lambda: commands[args.command](args, console), console)


def run_main(argv: Optional[List[str]] = None) -> None:
    sys.exit(main(argv))
