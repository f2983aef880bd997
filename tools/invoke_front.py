"""The Invoke front: tasks.py's tasks, built from the option declaration (harness/options.py).

Each command becomes an Invoke task whose flags are its declared options:
typed (``--timeout=FLOAT``), repeatable ones taking a value each time, every
on/off option with its ``--no-`` form. A task hands the flags it was given,
as typed values, to ``harness.cli.run_command`` with Invoke's configuration
as settings: ``invoke.yaml`` sections named after the options' sections
(``selftest:``, ``install_win7:``, ...) and ``INVOKE_<SECTION>_<NAME>``
environment variables. A flag given always wins over a setting.

Invoke's own ``invoke`` program reports parse errors with exit code 1 and
offers no hook for them; ``adopt_running_program`` turns that program into
a ``HarnessProgram``, so that a mistyped flag or a bad value is a usage error
like any other (``FAIL: USAGE: ...``, exit 4, with the nearest option).
Only tasks.py imports this module (Invoke is a development dependency).
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from invoke.collection import Collection
from invoke.config import Config
from invoke.context import Context
from invoke.exceptions import Exit, ParseError
from invoke.parser.argument import Argument
from invoke.parser.context import ParserContext
from invoke.parser.parser import Parser
from invoke.program import Program
from invoke.tasks import Task

from harness import options
from harness.errors import UsageError

# Invoke's configuration files, from the one that wins: (the layer's attribute, its path's attribute).
FILE_LAYERS = (("_runtime", "_runtime_path"), ("_project", "_project_path"), ("_user", "_user_path"),
               ("_system", "_system_path"))


class OptionArgument(Argument):
    """An Invoke flag for a declared option; its value is None (or []) unless the flag was given."""

    def __init__(self, option: options.Option) -> None:
        kind = bool if option.kind is bool else list if option.repeatable else option.kind
        # An on/off option defaults to True here only so that Invoke also offers --no-NAME.
        dashed = option.name.replace("_", "-")
        super().__init__(names=(dashed,), attr_name=option.name if dashed != option.name else None, kind=kind,
                         default=True if option.kind is bool else None, help=option.help_text())
        self.option = option

    def __repr__(self) -> str:
        return self.option.flag

    @property
    def value(self) -> Any:
        # Not the default: the task must know what was given (a flag always wins over a setting).
        return self._value

    @value.setter
    def value(self, arg: Any) -> None:
        self.set_value(arg, cast=True)

    def set_value(self, value: Any, cast: bool = True) -> None:
        self.raw_value = value
        if self.option.kind is bool:  # the parser gives True, or False for --no-NAME
            self._value = bool(value)
            return
        try:
            one = self.option.parse(value, self.option.flag) if cast and isinstance(value, str) else value
        except UsageError as exc:
            raise OptionValueError(exc) from exc
        self._value = [*(self._value or []), one] if self.option.repeatable else one


class OptionValueError(ParseError):
    """A flag's value that is not of its type; carries the usage error to report."""

    def __init__(self, usage: UsageError) -> None:
        super().__init__(usage.message)
        self.usage = usage


class OptionContext(ParserContext):
    """A task's parser context whose help shows each option's value type (Invoke knows only STRING and INT)."""

    def help_for(self, flag: str) -> Tuple[str, str]:
        arg = self.flags.get(flag)
        if isinstance(arg, OptionArgument):
            opt = arg.option
            spec = f"--[no-]{opt.flag[2:]}" if opt.kind is bool else f"{opt.flag}={opt.value_name}"
            return spec, opt.help_text()
        return super().help_for(flag)


class OptionTask(Task[Callable[..., None]]):
    """A harness command as an Invoke task: its arguments are the command's declared options."""

    def __init__(self, cmd: options.Command) -> None:
        def body(c: Context, **given: Any) -> None:
            from harness.cli import run_command
            from tools.commands import EVERYTHING

            typed = {name: value for name, value in given.items() if value is not None and value != []}
            code = run_command(cmd.name, typed, InvokeSettings(c.config), front=EVERYTHING)
            if code:
                raise Exit(code=code)

        body.__name__ = cmd.name.replace("-", "_")
        body.__doc__ = docstring(cmd)
        super().__init__(body, name=cmd.name, positional=(), auto_shortflags=False)
        self.command = cmd

    def get_arguments(self, ignore_unknown_help: Optional[bool] = None) -> List[Argument]:
        return [OptionArgument(o) for o in options.options_for(self.command.name) if not o.internal]


def docstring(cmd: options.Command) -> str:
    sections = options.sections_for(cmd.name)
    where = ", ".join(f"invoke.yaml's {s}: section or INVOKE_{s.upper()}_<NAME>" for s in sections)
    return f"{options.summary_line(cmd)}\n\nSettings: the flags given, then {where}, then the defaults shown.\n"


def collection() -> Collection:
    """Every command as a task, and a setting (unset: None) for each option Invoke's configuration may give."""
    ns = Collection()
    for cmd in options.COMMANDS:
        ns.add_task(OptionTask(cmd))
    sections = {o.section for o in options.OPTIONS if not o.internal}
    # Invoke reads INVOKE_<SECTION>_<NAME> only for keys that exist; None keeps their text as it is.
    ns.configure({s: {o.name: None for o in options.settings_of(s)} for s in sections})
    return ns


class InvokeSettings:
    """Invoke's configuration as option settings, each with where it came from (for error messages)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.env_prefix = str(getattr(config, "_env_prefix", None) or "INVOKE_")  # with its underscore

    def _section(self, data: Any, section: str) -> Dict[str, Any]:
        part: Any = data.get(section) if hasattr(data, "get") else None
        return dict(part) if hasattr(part, "keys") else {}

    def get(self, section: str, name: str) -> Optional[Tuple[Any, str]]:
        value = self._section(self.config, section).get(name)
        if value is None:
            return None
        return value, self._where(section, name)

    def _where(self, section: str, name: str) -> str:
        for layer, path in FILE_LAYERS[:1]:
            if name in self._section(getattr(self.config, layer, {}), section):
                return f"{section}.{name} in {getattr(self.config, path, None)}"
        if name in self._section(getattr(self.config, "_env", {}), section):
            return f"{self.env_prefix}{section.upper()}_{name.upper()}"
        for layer, path in FILE_LAYERS[1:]:
            if name in self._section(getattr(self.config, layer, {}), section):
                return f"{section}.{name} in {getattr(self.config, path, None)}"
        return f"{section}.{name} in Invoke's configuration"

    def keys(self, section: str) -> Iterator[Tuple[str, str]]:
        for layer, path in FILE_LAYERS:
            for key in self._section(getattr(self.config, layer, {}), section):
                yield key, f"{section}.{key} in {getattr(self.config, path, None)}"
        prefix = f"{self.env_prefix}{section.upper()}_"
        for var in os.environ:
            if var.startswith(prefix):
                yield var[len(prefix):].lower(), var


class HarnessProgram(Program):
    """Invoke's program, with typed help for the harness's tasks and parse errors reported as usage errors."""

    def _make_parser(self) -> Parser:
        contexts = [
            OptionContext(name=name, aliases=aliases, args=self.collection[name].get_arguments(
                ignore_unknown_help=self.config.tasks.ignore_unknown_help))
            for name, aliases in self.collection.task_names.items()
        ]
        return Parser(initial=self.initial_context, contexts=contexts)

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise self._usage_exit(exc) from exc

    def parse_cleanup(self) -> None:
        try:
            super().parse_cleanup()
        except ParseError as exc:
            raise self._usage_exit(exc) from exc

    def _usage_exit(self, exc: ParseError) -> Exit:
        from harness.cli import report
        from harness.console import Console

        return Exit(code=report(self._usage_error(exc), Console()))

    def _usage_error(self, exc: ParseError) -> UsageError:
        if isinstance(exc, OptionValueError):
            return exc.usage
        needs_value = re.fullmatch(r"Flag (.*) needed value and was not given one!", str(exc))
        if needs_value:
            return UsageError(f"{needs_value.group(1)} needs a value", hint="invoke --help <task> lists its options")
        unknown = re.fullmatch(r"No idea what '(.*)' is!", str(exc))
        if unknown is None:
            return UsageError(str(exc), hint="invoke --help <task> lists its options")
        token = unknown.group(1)
        context = getattr(exc, "context", None)
        task = getattr(context, "name", None)
        if isinstance(context, ParserContext) and task in self.collection.task_names:
            return options.unknown_argument(token, context.flag_names(), f"invoke {task}")
        if token.startswith("-"):
            return options.unknown_argument(token, self.initial_context.flag_names(), "invoke")
        close = difflib.get_close_matches(token, list(self.collection.task_names), n=1)
        return UsageError(f"no task named {token!r}",
                          hint=f"did you mean {close[0]}?" if close else "invoke --list lists the tasks")


def adopt_running_program() -> None:
    """Make Invoke's own ``invoke`` program (when it is the one loading tasks.py) a HarnessProgram.

    Invoke loads tasks.py before it parses the task flags, so the rest of that
    run goes through HarnessProgram's methods. Any other program (a test's, a
    custom binary's) is left alone.
    """
    main = sys.modules.get("invoke.main")
    program = getattr(main, "program", None)
    if type(program) is Program:
        program.__class__ = HarnessProgram
