"""The one exception root of the harness, every kind of error, and the one mapping
from an exception to what the user sees (exit code, token, message).

Each kind carries the exit code it maps to (see ``harness.exitcodes``) and a
hint that tells a user what to do about it.
"""

from __future__ import annotations

from typing import Optional, Tuple

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


class QemuLaunchError(HostError):
    """QEMU would not start: carries its command and its own words."""

    token = "QEMU_LAUNCH_FAILED"


class PciPreflightError(HostError):
    """QEMU's virtio functions are not what the guest's drivers bind to (checked before the guest runs)."""

    token = "QEMU_PCI_PREFLIGHT_FAILED"


class GuestBuildError(HostError):
    """The built-in test guest could not be built."""

    token = "GUEST_BUILD_FAILED"


# remote-selftest: the SSH side, never confused with a guest's verdict


class SSHUnreachableError(HarnessError):
    exit_code = ExitCode.SSH_UNREACHABLE
    token = "SSH_UNREACHABLE"


class SSHAuthError(HarnessError):
    exit_code = ExitCode.SSH_AUTH_FAILED
    token = "SSH_AUTH_FAILED"


class SSHHostKeyError(HarnessError):
    exit_code = ExitCode.SSH_HOST_KEY
    token = "SSH_HOST_KEY"


class RemoteNoPythonError(HarnessError):
    exit_code = ExitCode.REMOTE_NO_PYTHON
    token = "REMOTE_NO_PYTHON"


class RemoteNoQemuError(HarnessError):
    exit_code = ExitCode.REMOTE_NO_QEMU
    token = "REMOTE_NO_QEMU"


class RemoteError(HarnessError):
    exit_code = ExitCode.REMOTE_ERROR
    token = "REMOTE_ERROR"


def classify(exc: BaseException) -> Tuple[ExitCode, str, str]:
    """The one mapping from an exception to (exit code, token, message)."""
    if isinstance(exc, KeyboardInterrupt):
        name = getattr(exc, "name", "Ctrl-C")
        return ExitCode.INTERRUPTED, "INTERRUPTED", f"interrupted by {name}"
    if isinstance(exc, HarnessError):
        return exc.exit_code, exc.token, exc.message
    return ExitCode.INTERNAL_ERROR, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}"
