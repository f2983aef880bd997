"""``python -m tools bench``: measure the harness."""

from harness.cli import run_main
from tools.commands import TOOLS

run_main(front=TOOLS)
