"""``python -m images``: build the test guest or the Windows provisioning media."""

import signal

early: list[int] = []
for _signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_signum, lambda signum, frame: early.append(signum))

from harness import interrupt  # noqa: E402

interrupt.install(early)
try:
    with interrupt.held():
        from harness.cli import run_main
        from images.commands import IMAGES
except KeyboardInterrupt:
    raise SystemExit(130) from None

run_main(front=IMAGES)
