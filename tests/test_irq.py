"""Interrupt-mode checks from the guest's own reports (pure)."""

from harness.irq import mode_problem, msix_problem
from harness.markers import parse
from harness.verdict import Tracker


def tracker(*lines):
    t = Tracker(())
    for line in lines:
        t.add(parse(line))
    return t


def test_irq_lines_win_over_test_fields_and_msix_counts_as_msi():
    t = tracker("virtio-blk-irq|INFO|mode=msix|messages=2",
                "AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS|irq_mode=intx",
                "AERO_VIRTIO_SELFTEST|TEST|virtio-net|PASS|irq_mode=msi|irq_message_count=3")
    assert mode_problem(t, ["virtio-blk", "virtio-net"], "msi") is None
    verdict = mode_problem(t, ["virtio-blk", "virtio-net"], "intx")
    assert verdict.token == "IRQ_MODE_MISMATCH" and verdict.detail == "virtio-blk expected=intx got=msix"


def test_unknown_mode_is_a_mismatch():
    t = tracker("virtio-net-irq|WARN|reason=device_missing", "AERO_VIRTIO_SELFTEST|TEST|virtio-net|PASS")
    verdict = mode_problem(t, ["virtio-net"], "intx")
    assert verdict.detail.startswith("virtio-net expected=intx got=unknown")


def test_msix_evidence_from_the_msix_marker_or_an_irq_line():
    windows = tracker("virtio-net-irq|INFO|mode=msi|messages=3",
                      "AERO_VIRTIO_SELFTEST|TEST|virtio-net-msix|PASS|mode=msix|messages=3")
    linux = tracker("virtio-net-irq|INFO|mode=msix|messages=3")
    assert msix_problem(windows, "virtio-net") is None and msix_problem(linux, "virtio-net") is None
    intx = tracker("virtio-blk-irq|INFO|mode=intx")
    assert msix_problem(intx, "virtio-blk").token == "VIRTIO_BLK_MSIX_REQUIRED"
    assert msix_problem(tracker(), "virtio-snd").token == "MISSING_VIRTIO_SND_MSIX"
