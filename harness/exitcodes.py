"""Exit codes of the harness: one enum, shared by every entry point.

0 to 3 are the codes scripts around the upstream harness already expect
(docs/guest-contract.md); the rest are ours and never collide with a verdict.
"""

from __future__ import annotations

import enum
from typing import Iterable


class ExitCode(enum.IntEnum):
    PASS = 0  # RESULT|PASS and every required test passed
    FAIL = 1  # the guest said FAIL, or a required test failed or is missing
    TIMEOUT = 2  # no verdict before the deadline
    QEMU_EXITED = 3  # QEMU exited or the VM died before a verdict
    USAGE = 4  # bad input: missing disk, bad values
    HOST_ERROR = 5  # the host cannot run it: QEMU missing, port busy
    # remote-selftest only: the SSH side, never confused with a guest's verdict
    SSH_UNREACHABLE = 10  # no TCP/SSH connection: refused, timed out, unknown name
    SSH_AUTH_FAILED = 11  # the server refused every key
    SSH_HOST_KEY = 12  # unknown host key (not accepted) or a changed one
    REMOTE_NO_PYTHON = 13  # the host lacks Python 3.9 or newer
    REMOTE_NO_QEMU = 14  # the host lacks the QEMU binary
    REMOTE_ERROR = 15  # another failure on the host: upload, install, fetching artifacts
    INTERNAL_ERROR = 70  # a bug in the harness (EX_SOFTWARE); details with -v
    INTERRUPTED = 130  # Ctrl-C or SIGTERM


# Which outcome wins when several runs are summed up (remote hosts, repeats): the
# first in this list that occurs. An interruption or a bug says the others are
# incomplete; a host or usage problem means the guest was never judged; then the
# guest's own outcomes, worst first.
SEVERITY = (
    ExitCode.INTERRUPTED,
    ExitCode.INTERNAL_ERROR,
    ExitCode.USAGE,
    ExitCode.HOST_ERROR,
    ExitCode.SSH_UNREACHABLE,
    ExitCode.SSH_AUTH_FAILED,
    ExitCode.SSH_HOST_KEY,
    ExitCode.REMOTE_NO_PYTHON,
    ExitCode.REMOTE_NO_QEMU,
    ExitCode.REMOTE_ERROR,
    ExitCode.QEMU_EXITED,
    ExitCode.TIMEOUT,
    ExitCode.FAIL,
    ExitCode.PASS,
)


def worst(codes: Iterable[int]) -> ExitCode:
    """The exit code of several runs: the most severe (PASS only when every run passed; none ran: HOST_ERROR)."""
    seen = {ExitCode(c) if c in ExitCode._value2member_map_ else ExitCode.INTERNAL_ERROR for c in codes}
    if not seen:
        return ExitCode.HOST_ERROR
    return next(code for code in SEVERITY if code in seen)


def is_guest_failure(code: int) -> bool:
    """A verdict on the guest (it said FAIL, or a required test failed): a test failure, not an error."""
    return code == ExitCode.FAIL
