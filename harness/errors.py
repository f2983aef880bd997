"""The one exception root of the harness, and its kinds.

Each kind carries the exit code it maps to (see ``harness.exitcodes``) and a
hint that tells a user what to do about it.
"""

from __future__ import annotations

from typing import Optional

from harness.exitcodes import ExitCode


class HarnessError(Exception):
    """Any error the harness reports to a user instead of a traceback."""

    exit_code: ExitCode = ExitCode.HOST_ERROR
    token: str = "HOST_ERROR"

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(HarnessError):
    """Bad input from the user: a missing disk, a bad value."""

    exit_code = ExitCode.USAGE
    token = "USAGE"


class HostError(HarnessError):
    """The host cannot run the job: QEMU missing, a port busy, a folder unwritable."""

    exit_code = ExitCode.HOST_ERROR
    token = "HOST_ERROR"
