"""What a person at a terminal sees: the live status line while the guest runs."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys

import pytest

from tests.e2e.conftest import QEMU, ROOT

# Host-side plumbing, the same on every QEMU: the nox matrix runs it in its first QEMU session only.
pytestmark = pytest.mark.host_side


def test_live_status_line_on_a_terminal(tmp_path, guest_image):
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "selftest", "--accel", "tcg", "--qemu-system", QEMU,
         "--disk", str(guest_image), "--artifacts", str(tmp_path / "a")],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
    )
    os.close(slave)
    screen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not data:
                break
            screen += data
        elif proc.poll() is not None:
            break
    os.close(master)
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, out
    text = screen.decode(errors="replace")
    assert "\r\x1b[K[" in text, text
    assert "s / 600s] waiting for the guest's START" in text
    # The last marker by its test name, never a cut CONFIG line.
    assert "s / 600s] last: virtio-" in text and "CONFIG|" not in text
    # The verdict goes to stdout, clean of status-line control codes.
    assert out.strip() == "PASS: AERO_VIRTIO_SELFTEST|RESULT|PASS"
