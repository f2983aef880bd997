"""Exit codes of the harness: one enum, shared by every entry point.

0 to 3 are the codes scripts around the upstream harness already expect
(shared/PROTOCOL.md); the rest are ours and never collide with a verdict.
"""

from __future__ import annotations

import enum


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
