"""The harness answers the guest's READY tests over QMP, proven with real QEMU and real drivers.

The test guest, provisioned through fw_cfg (``opt/aero/tests``) as a Windows image is with
``--test-*`` switches, prints READY and then watches what Linux really sees: its evdev
nodes, the NIC's carrier, the disk's capacity. The handshakes' many cases run in seconds
against the fake QEMU in tests/test_actions.py.
"""

from __future__ import annotations

from typing import List

from tests.e2e.conftest import scenario

TCG = ["--accel", "tcg"]


def provisioned(*switches: str, omit: str = "") -> List[str]:
    settings = {"tests": ",,".join(switches)} if switches else {}
    if omit:
        settings["omit"] = omit
    return scenario("pass", **settings)


def statuses(run) -> dict:
    return {t["name"]: t["status"] for t in run.result["tests"]}


def test_every_host_action_with_its_flag(selftest):
    run = selftest(*TCG, *provisioned("input-events", "input-media-keys", "net-link-flap", "blk-resize",
                                      "blk-reset"),
                   "--with-input-events", "--with-input-media-keys", "--with-net-link-flap", "--with-blk-resize",
                   "--with-blk-reset")
    assert run.code == 0, run.stdout + run.stderr
    got = statuses(run)
    for test in ("virtio-input-events", "virtio-input-media-keys", "virtio-net-link-flap", "virtio-blk-resize",
                 "virtio-blk-reset"):
        assert got[test] == "PASS", (test, got)
    actions = [a["action"] for a in run.result["host_actions"]]
    for expected in ("virtio-input-events: sending input", "virtio-input-events: the guest answered",
                     "virtio-net-link-flap: link down", "virtio-net-link-flap: link up",
                     "virtio-blk-resize: disk grown", "virtio-blk-resize: the guest answered"):
        assert expected in actions, actions
    resize = next(a for a in run.result["host_actions"] if a["action"] == "virtio-blk-resize: disk grown")
    assert resize["new_bytes"] == resize["old_bytes"] + 64 * 2**20 and resize["command"] == "block_resize"
    assert "host: virtio-net-link-flap: link down" in run.stderr


def test_ready_is_answered_without_flags(selftest):
    run = selftest(*TCG, *provisioned("net-link-flap", "blk-resize"), "--blk-resize-delta-mib", "8")
    assert run.code == 0, run.stdout + run.stderr
    got = statuses(run)
    assert got["virtio-net-link-flap"] == got["virtio-blk-resize"] == "PASS"


def test_tablet_events(selftest):
    run = selftest(*TCG, *provisioned("input-tablet-events"), "--with-input-tablet-events")
    assert run.code == 0, run.stdout + run.stderr
    assert statuses(run)["virtio-input-tablet-events"] == "PASS"


def test_a_required_test_the_guest_never_prints_fails_20s_after_its_device(selftest):
    # The guest stops after its disk tests (scenario hang) and never prints virtio-blk-reset.
    run = selftest(*TCG, *scenario("hang", omit="virtio-blk-reset"), "--with-blk-reset", "--timeout", "300")
    assert run.code == 1 and "FAIL: MISSING_VIRTIO_BLK_RESET: " in run.stdout, run.stdout + run.stderr
    assert "within 20 s of virtio-blk" in run.stdout and "--test-blk-reset" in run.stdout
    assert run.seconds < 90  # not the 300 s timeout


def test_a_required_test_missing_at_result_names_the_guest_switch(selftest):
    run = selftest(*TCG, *provisioned(omit="virtio-net-link-flap"), "--with-net-link-flap")
    assert run.code == 1 and "FAIL: MISSING_VIRTIO_NET_LINK_FLAP: " in run.stdout, run.stdout + run.stderr
    assert "--test-net-link-flap" in run.stdout


def test_a_required_test_skipped_names_the_guest_switch(selftest):
    run = selftest(*TCG, "--with-blk-resize")
    assert run.code == 1 and "FAIL: VIRTIO_BLK_RESIZE_SKIPPED: " in run.stdout
    assert "--test-blk-resize" in run.stdout
