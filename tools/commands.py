"""Developer commands (the Invoke tasks, ``python -m tools``), and the front that offers every command."""

from __future__ import annotations

import argparse

from harness.cli import RUNTIME, Front
from harness.console import Console
from harness.errors import UsageError
from harness.qemu import find_qemu
from images.commands import IMAGES, default_test_guest


def cmd_bench(args: argparse.Namespace, console: Console, front: Front) -> int:
    from tools.bench import DEFAULT_OUT, run_bench

    if args.pairs < 1 or args.wait_seconds <= 0:
        raise UsageError("--pairs must be at least 1 and --wait-seconds positive")
    run_bench(default_test_guest(console), find_qemu(args.qemu_system), args.out or DEFAULT_OUT, args.pairs,
              args.wait_seconds, args.log_mib, args.http_port, args.udp_port, console.out)
    return 0


TOOLS = Front(prog="python -m tools", description="Tools for developers of the harness.",
              commands={"bench": cmd_bench})

# The repository's front (tasks.py): every command, and the test guest when no --disk is given.
EVERYTHING = Front(
    prog="invoke",
    description="The Aero virtio selftest harness.",
    commands={**RUNTIME.commands, **IMAGES.commands, **TOOLS.commands},
    default_disk=default_test_guest,
)
