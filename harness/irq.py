"""Interrupt-mode checks (``--require-intx``, ``--require-msi``, ``--require-virtio-*-msix``). Pure.

The evidence is what the guest reports (docs/guest-contract.md: stock QEMU shows neither
the MSI-X state nor the revision over QMP): its ``virtio-<dev>-irq|INFO|mode=``
lines first, then the ``irq_mode=`` field of the device's TEST line; for
MSI-X, also the ``virtio-<dev>-msix`` TEST line's ``mode=``. Real Windows
guests report MSI-X as ``msi`` in the irq lines, so only the msix marker (or an
irq line that says ``msix``) proves MSI-X.
"""

from __future__ import annotations

from typing import Iterable, Optional

from harness.exitcodes import ExitCode
from harness.verdict import Tracker, Verdict, token_of


def normalise(mode: Optional[str]) -> Optional[str]:
    if not mode:
        return None
    mode = mode.strip().lower().replace("_", "-")
    return "msix" if mode in ("msix", "msi-x") else mode


FAMILY = {"intx": "intx", "msi": "msi", "msix": "msi"}


def irq_mode(tracker: Tracker, device: str) -> Optional[str]:
    """The guest's word on ``device`` (virtio-net, ...): intx, msi, msix, none; None if it said nothing."""
    diag = tracker.diags.get(f"{device}-irq")
    if diag is not None and diag.get("mode"):
        return normalise(diag.get("mode"))
    test = tracker.tests.get(device)
    if test is not None:
        return normalise(test.get("irq_mode"))
    return None


def mode_problem(tracker: Tracker, devices: Iterable[str], expected: str) -> Optional[Verdict]:
    """``expected`` is intx or msi (MSI-X counts as MSI); the first device off it fails the run."""
    for device in devices:
        got = irq_mode(tracker, device)
        if got is None or FAMILY.get(got) != expected:
            return Verdict(ExitCode.FAIL, "IRQ_MODE_MISMATCH",
                           f"{device} expected={expected} got={got or 'unknown'}"
                           + ("" if got else " (the guest printed no irq mode for it)"))
    return None


def msix_problem(tracker: Tracker, device: str) -> Optional[Verdict]:
    """The guest must say this device runs with MSI-X."""
    flag = f"--require-{device}-msix"
    marker = tracker.tests.get(f"{device}-msix")
    marker_mode = normalise(marker.get("mode")) if marker is not None else None
    line_mode = irq_mode(tracker, device)
    if "msix" in (marker_mode, line_mode):
        return None
    if marker is None and line_mode is None:
        return Verdict(ExitCode.FAIL, f"MISSING_{token_of(device)}_MSIX",
                       f"the guest reported no interrupt mode for {device} while {flag} was given")
    got = marker_mode or line_mode
    return Verdict(ExitCode.FAIL, f"{token_of(device)}_MSIX_REQUIRED",
                   f"{device} mode={got} (expected msix) while {flag} was given")
