"""``python -m harness``: the entry point, and the one place that exits.

The options of every command are declared in harness/options.py; this module
builds argparse from them. The Invoke tasks (harness/invoke_front.py) call
``run_command`` as ``main`` does and hand its exit code to Invoke.
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
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, NoReturn, Optional, Sequence, Tuple

from harness import __version__, options
from harness.config import SelftestConfig, check_disk, guest_http_url
from harness.console import Console
from harness.errors import HarnessError, UsageError
from harness.exitcodes import ExitCode

if TYPE_CHECKING:
    from harness.remote import RemoteOptions

log = logging.getLogger("harness")


def add_options(parser: argparse.ArgumentParser, command: str) -> None:
    """The command's options, from their declaration (harness/options.py).

    Nothing has a default here: an option not given is absent (None) and
    ``resolve`` fills in the declared default, as it does for the Invoke tasks.
    """
    for opt in options.options_for(command):
        help_text = argparse.SUPPRESS if opt.internal else opt.help_text().replace("%", "%%")
        if opt.kind is bool:
            parser.add_argument(opt.flag, dest=opt.name, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(opt.flag, dest=opt.name, type=_value_parser(opt), metavar=opt.value_name,
                                action="append" if opt.repeatable else "store", required=opt.required,
                                help=help_text)


def _value_parser(opt: options.Option) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        problem = opt.problem(text)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return opt.parse(text, opt.flag)

    return parse


def given_values(args: argparse.Namespace) -> Dict[str, Any]:
    """The options a parsed command line gave (the others are None)."""
    return {name: value for name, value in vars(args).items()
            if value is not None and name not in ("command", "verbose")}


def passthrough_args(args: argparse.Namespace) -> List[str]:
    """The selftest options of a remote-selftest run, as arguments for the run on a host."""
    return options.forwarded_argv(args)


def config_from_args(args: argparse.Namespace, command: str = "selftest") -> SelftestConfig:
    config: SelftestConfig = options.build(SelftestConfig, command, args)
    return config


def report(exc: HarnessError, console: Console) -> int:
    """Tell a user about an error they can act on; its exit code."""
    console.verdict(f"FAIL: {exc.token}: {exc.message}")
    if exc.hint:
        console.info(f"hint: {exc.hint}")
    return int(exit_code_for(exc))


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad usage like every usage error: ``FAIL: USAGE: ...``, exit 4."""

    command = ""  # set on a command's parser

    def error(self, message: str) -> NoReturn:
        message = message[len("argument "):] if message.startswith("argument ") else message
        self.fail(UsageError(message, hint=f"{self.prog} --help lists its options"))

    def fail(self, exc: UsageError) -> NoReturn:
        self.exit(report(exc, Console()))

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Tuple[Any, List[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and self.command:  # a command's parser: nothing after it takes arguments
            flags = [f for o in options.options_for(self.command) if not o.internal
                     for f in ((o.flag, o.negative_flag) if o.kind is bool else (o.flag,))]
            self.fail(options.unknown_argument(extras[0], flags, self.prog))
        return parsed, extras


def cmd_provision_media(args: argparse.Namespace, console: Console) -> int:
    try:
        from images import provision
    except ImportError as exc:
        raise UsageError("the media builder (images/) is not installed with this copy of the harness") from exc
    settings = provision.GuestSettings(
        http_url=args.http_url or guest_http_url(args.http_port, args.http_path),
        udp_port=args.udp_port,
        dns_host=args.dns_host,
        blk_root=args.blk_root,
        test_switches=tuple(s if s.startswith("--test-") else f"--test-{s}" for s in args.test_switch),
        test_signing=args.test_signing,
        infs=args.inf,
        arch=args.arch,
        admin_password=args.admin_password,
        computer_name=args.computer_name,
        product_key=args.product_key or os.environ.get("AERO_WIN7_PRODUCT_KEY") or None,
    )
    files = provision.build_media(args.drivers, args.selftest, settings, args.out)
    console.info(f"{len(files)} files; the task runs: {provision.schtasks_line(settings)}")
    console.verdict(str(args.out))
    return 0


def cmd_install_win7(args: argparse.Namespace, console: Console) -> int:
    from harness.install import InstallConfig, run_install

    cfg: InstallConfig = options.build(InstallConfig, "install-win7", args)
    return int(run_install(cfg, console))


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="python -m harness", description="Host side of the Aero virtio selftest.",
                             allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_ArgumentParser)
    for cmd in options.COMMANDS:
        command = sub.add_parser(cmd.name, help=cmd.summary, description=options.summary_line(cmd),
                                 allow_abbrev=False)
        assert isinstance(command, _ArgumentParser)
        command.command = cmd.name
        add_options(command, cmd.name)
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
    config_from_args(args, "remote-selftest").validate()
    opts: RemoteOptions = options.build(
        RemoteOptions, "remote-selftest", args,
        selftest_args=tuple(passthrough_args(args)),
        disk=disk,
        artifacts=args.artifacts or Path("artifacts") / time.strftime("remote-%Y%m%d-%H%M%S"),
    )
    return opts


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
              args.wait_seconds, args.log_mib, console.out)
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
        return report(exc, console)
    except Exception as exc:  # a bug: still a clear line and a code of its own, never a bare traceback
        log.debug("internal error", exc_info=True)
        console.verdict(f"FAIL: INTERNAL_ERROR: {type(exc).__name__}: {exc}")
        console.info("hint: this is a bug in the harness; run again with -v for the traceback and report it")
        return int(exit_code_for(exc))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(args.command, given_values(args), verbose=args.verbose)


def run_command(
    command: str, given: Mapping[str, Any], settings: Optional[options.Settings] = None, verbose: bool = False
) -> int:
    """Run one command for either front (this command line, or an Invoke task with its settings).

    ``given`` holds the options given, as typed values; ``options.resolve`` adds
    the settings and the defaults.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
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
    return guarded(lambda: commands[command](options.resolve(command, given, settings), console), console)


def run_main(argv: Optional[List[str]] = None) -> None:
    sys.exit(main(argv))
