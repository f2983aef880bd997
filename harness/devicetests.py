"""The device tests a run can require, and how each is provisioned in the guest. Pure.

A ``--with-...`` flag (upstream's names) makes its guest test required: it
must PASS; a ``SKIP|flag_not_set`` fails with a hint naming the guest switch
the image lacks; and a test that never shows up fails ``MISSING_<TEST>`` 20 s
after its device's main test instead of waiting for the timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple


@dataclass(frozen=True)
class DeviceTest:
    option: str  # the host flag's config name: with_input_events
    tests: Tuple[str, ...]  # guest TESTs it requires
    guest_switch: str  # what the image must be provisioned with
    after: str  # the device's main test; the required ones follow it
    host_action: str  # what the host sends, for the README and --help

    @property
    def flag(self) -> str:
        return "--" + self.option.replace("_", "-")


DEVICE_TESTS = (
    DeviceTest("with_input_events", ("virtio-input-events",), "--test-input-events", "virtio-input",
               "key a, mouse motion and left button (input-send-event), every 0.5 s"),
    DeviceTest("with_input_events_extended",
               ("virtio-input-events", "virtio-input-events-modifiers", "virtio-input-events-buttons",
                "virtio-input-events-wheel"),
               "--test-input-events-extended", "virtio-input",
               "also shift+b, ctrl, alt, F1, side and extra buttons, wheel"),
    DeviceTest("with_input_wheel", ("virtio-input-wheel",), "--test-input-events-wheel", "virtio-input",
               "also wheel +1 and hscroll -2 with the mouse motion"),
    DeviceTest("with_input_media_keys", ("virtio-input-media-keys",), "--test-input-media-keys", "virtio-input",
               "the volumeup key"),
    DeviceTest("with_input_tablet_events", ("virtio-input-tablet-events",), "--test-input-tablet-events",
               "virtio-input", "tablet moves to 0,0 and 10000,20000 and a left click (attaches the tablet)"),
    DeviceTest("with_net_link_flap", ("virtio-net-link-flap",), "--test-net-link-flap", "virtio-net",
               "set_link down, 3 s, up"),
    DeviceTest("with_blk_resize", ("virtio-blk-resize",), "--test-blk-resize", "virtio-blk",
               "block_resize to the old size + --blk-resize-delta-mib"),
    DeviceTest("with_blk_reset", ("virtio-blk-reset",), "--test-blk-reset", "virtio-blk", "none (guest only)"),
    DeviceTest("with_snd_buffer_limits", ("virtio-snd-buffer-limits",), "--test-snd-buffer-limits", "virtio-snd",
               "none (guest only)"),
)
WATCHDOG_SECONDS = 20.0
