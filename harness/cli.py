"""``python -m harness``: the runtime's commands, and the one place that exits.

The options of every command are declared in harness/options.py; this module
builds argparse from them and dispatches. A ``Front`` is the program around
the runtime: ``python -m harness`` itself (the runtime's commands: what a
remote host gets), ``python -m images`` (building guest images), and the
Invoke tasks (tools/invoke_front.py: every command, and the built-in test
guest as the default disk). The runtime never imports images/ or tools/:
what it needs from them, a front passes in.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, NoReturn, Optional, Sequence, Tuple

from harness import __version__, interrupt, options
from harness.config import SelftestConfig, check_disk
from harness.console import Console
from harness.errors import HarnessError, UsageError, classify
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
    code, token, message = classify(exc)
    console.verdict(f"FAIL: {token}: {message}")
    if exc.hint:
        console.info(f"hint: {exc.hint}")
    return int(code)


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


def cmd_install_win7(args: argparse.Namespace, console: Console, front: Front) -> int:
    from harness.install import InstallConfig, run_install

    cfg: InstallConfig = options.build(InstallConfig, "install-win7", args)
    return int(run_install(cfg, console))


CommandFn = Callable[[argparse.Namespace, Console, "Front"], int]


@dataclass(frozen=True)
class Front:
    """The program around the runtime: its name, its commands, and what it supplies."""

    prog: str
    description: str
    commands: Mapping[str, CommandFn]
    # The disk of a selftest run given none (the Invoke front: the built-in test guest, built on demand).
    default_disk: Optional[Callable[[Console], Path]] = None


def build_parser(front: Optional[Front] = None) -> argparse.ArgumentParser:
    front = front or RUNTIME
    parser = _ArgumentParser(prog=front.prog, description=front.description, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_ArgumentParser)
    for cmd in (c for c in options.COMMANDS if c.name in front.commands):
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


def disk_or_default(disk: Optional[Path], front: Front, console: Console) -> Path:
    if disk is not None:
        return disk
    if front.default_disk is None:
        raise UsageError(
            "no --disk given", hint="name a guest image with --disk; `invoke selftest` (or invoke.yaml's "
            "selftest.disk) runs the built-in test guest, building it first",
        )
    return front.default_disk(console)


def cmd_selftest(args: argparse.Namespace, console: Console, front: Front) -> int:
    from harness.runner import run_selftest

    _guard_session(args)
    cfg = config_from_args(args)
    cfg.validate()  # every other mistake first: building the test guest takes a while
    if cfg.repeat > 1:
        from harness.repeat import run_repeat  # a single run does without its imports (statistics, ...)

        cfg = dataclasses.replace(cfg, disk=disk_or_default(cfg.disk, front, console))
        return run_repeat(cfg, options.repeat_argv(args), console)
    if not cfg.dry_run or front.default_disk is not None:
        cfg = dataclasses.replace(cfg, disk=disk_or_default(cfg.disk, front, console))
    return int(run_selftest(cfg, console).exit_code)


def remote_options(args: argparse.Namespace, console: Console, front: Front) -> RemoteOptions:
    from harness.remote import RemoteOptions
    from harness.schedule import parse_hosts

    if not args.snapshot:
        raise UsageError("--no-snapshot is not allowed with remote-selftest: the remote base image is never written")
    if args.disk is not None and args.remote_disk is not None:
        raise UsageError("give --disk (a local image to upload) or --remote-disk (one on the host), not both")
    disk = args.disk
    if disk is None and args.remote_disk is None:
        disk = disk_or_default(None, front, console)
    if disk is not None:
        check_disk(disk)
    config_from_args(args, "remote-selftest").validate()
    hosts, slots = parse_hosts(args.host)
    opts: RemoteOptions = options.build(
        RemoteOptions, "remote-selftest", args,
        hosts=hosts, slots=slots,
        selftest_args=tuple(passthrough_args(args)),
        disk=disk,
        artifacts=args.artifacts or Path("artifacts") / time.strftime("remote-%Y%m%d-%H%M%S"),
    )
    return opts


def cmd_remote_selftest(args: argparse.Namespace, console: Console, front: Front) -> int:
    from harness.exitcodes import worst
    from harness.remote import run_remote, summary_table

    opts = remote_options(args, console, front)
    if opts.repeat > 1:
        from harness.fleet import run_fleet

        return run_fleet(opts, console)
    outcomes = run_remote(opts, console.out, console.err)
    if len(outcomes) > 1:
        console.info("")
        console.info(summary_table(outcomes))
    console.info(f"artifacts: {opts.artifacts.resolve()}/<host>/")
    return int(worst(o.code for o in outcomes))


def guarded(body: Callable[[], int], console: Console) -> int:
    """Run a command body; report any error the way a user can act on it."""
    try:
        return body()
    except KeyboardInterrupt as exc:
        interrupt.consume()
        console.info(classify(exc)[2])
        return int(ExitCode.INTERRUPTED)
    except HarnessError as exc:
        return report(exc, console)
    except Exception as exc:  # a bug: still a clear line and a code of its own, never a bare traceback
        log.debug("internal error", exc_info=True)
        code, token, message = classify(exc)
        console.verdict(f"FAIL: {token}: {message}")
        console.info("hint: this is a bug in the harness; run again with -v for the traceback and report it")
        return int(code)


def main(argv: Optional[Sequence[str]] = None, front: Optional[Front] = None) -> int:
    front = front or RUNTIME
    interrupt.install()
    try:
        with interrupt.held():
            args = build_parser(front).parse_args(argv)
    except KeyboardInterrupt:
        interrupt.consume()
        return int(ExitCode.INTERRUPTED)
    return run_command(args.command, given_values(args), verbose=args.verbose, front=front)


def run_command(
    command: str, given: Mapping[str, Any], settings: Optional[options.Settings] = None, verbose: bool = False,
    front: Optional[Front] = None,
) -> int:
    """Run one command for either front (this command line, or an Invoke task with its settings).

    ``given`` holds the options given, as typed values; ``options.resolve`` adds
    the settings and the defaults.
    """
    interrupt.install()  # again for the Invoke front, which does not come through main()
    try:
        with interrupt.held():  # a signal here is answered below, not with a traceback from logging's setup
            logging.basicConfig(
                level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
            )
            if not verbose:
                # qemu.qmp reports a QEMU that went away as ERROR; the run reports it better.
                logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)
            console = Console()
    except KeyboardInterrupt:
        interrupt.consume()
        return int(ExitCode.INTERRUPTED)
    use = front or RUNTIME
    body = use.commands[command]
    return guarded(lambda: body(options.resolve(command, given, settings), console, use), console)


RUNTIME = Front(
    prog="python -m harness",
    description="Host side of the Aero virtio selftest: run guests under QEMU and judge them.",
    commands={"selftest": cmd_selftest, "remote-selftest": cmd_remote_selftest, "install-win7": cmd_install_win7},
)


def run_main(argv: Optional[List[str]] = None, front: Optional[Front] = None) -> None:
    """The program's end: the exit code, the moment the verdict is out.

    Everything a run leaves is written and closed by its context managers
    before ``main`` returns; what remains is Python freeing every object of
    every module (30 ms and more on our machines), which no one waits for.
    """
    code = main(argv, front)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)
