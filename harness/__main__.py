"""``python -m harness``: take Ctrl-C and SIGTERM first, then load the rest."""

import faulthandler
import signal

# A stand-in handler before any import: a signal that arrives while Python loads the harness
# is recorded here and answered like any other (exit 130), not with a traceback from an import.
early: list[int] = []
for _signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_signum, lambda signum, frame: early.append(signum))

# `kill -USR1 <pid>` prints where each of the harness's threads is, on stderr: for a run that seems stuck.
faulthandler.register(signal.SIGUSR1, all_threads=True)

from harness import interrupt  # noqa: E402

interrupt.install(early)
try:
    with interrupt.held():
        from harness.cli import run_main
except KeyboardInterrupt:
    raise SystemExit(130) from None

run_main()
