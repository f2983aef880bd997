"""``python -m images``: build the test guest or the Windows provisioning media."""

import sys

from harness import interrupt

interrupt.install()
try:
    with interrupt.held():
        from harness.cli import run_main
        from images.commands import IMAGES
except KeyboardInterrupt:
    sys.exit(130)

run_main(front=IMAGES)
