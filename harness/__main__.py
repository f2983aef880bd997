"""``python -m harness``: take Ctrl-C and SIGTERM first, then load the rest."""

import sys

from harness import interrupt

# Installed before the heavier imports, so a signal that arrives while Python loads the
# harness is answered like any other (exit 130), not with a traceback from an import.
interrupt.install()
try:
    with interrupt.held():
        from harness.cli import run_main
except KeyboardInterrupt:
    sys.exit(130)

run_main()
