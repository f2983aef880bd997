from harness.exitcodes import ExitCode
from harness.markers import parse
from harness.verdict import Requirement, Tracker, timeout_verdict, token_of, vm_gone_verdict

START = "AERO_VIRTIO_SELFTEST|START|version=1"
BLK_PASS = "AERO_VIRTIO_SELFTEST|TEST|virtio-blk|PASS|write_ok=1"
NET_PASS = "AERO_VIRTIO_SELFTEST|TEST|virtio-net|PASS|large_ok=1"
NET_FAIL = "AERO_VIRTIO_SELFTEST|TEST|virtio-net|FAIL|reason=http_get_failed"
PASS = "AERO_VIRTIO_SELFTEST|RESULT|PASS"
FAIL = "AERO_VIRTIO_SELFTEST|RESULT|FAIL"


def run(lines, required=("virtio-blk", "virtio-net"), fail_fast=True):
    tracker = Tracker(required, fail_fast=fail_fast)
    verdict = None
    for line in lines:
        marker = parse(line)
        if marker is not None:
            got = tracker.add(marker)
            verdict = verdict or got
    return verdict, tracker


def test_pass_needs_result_and_required_tests():
    verdict, _ = run([START, BLK_PASS, NET_PASS, PASS])
    assert verdict.code == ExitCode.PASS
    assert verdict.line() == "PASS: AERO_VIRTIO_SELFTEST|RESULT|PASS"


def test_no_verdict_before_result():
    verdict, tracker = run([START, BLK_PASS, NET_PASS])
    assert verdict is None and tracker.last.name == "virtio-net"


def test_missing_required_test_fails_even_on_result_pass():
    verdict, _ = run([START, BLK_PASS, PASS])
    assert verdict.code == ExitCode.FAIL and verdict.token == "MISSING_VIRTIO_NET"
    assert verdict.line().startswith("FAIL: MISSING_VIRTIO_NET: ")


def test_guest_fail_names_the_failing_required_test():
    verdict, _ = run([START, BLK_PASS, NET_FAIL, FAIL])
    assert verdict.token == "VIRTIO_NET_FAILED"
    assert "http_get_failed" in verdict.detail


def test_guest_fail_without_a_required_failure_is_selftest_failed():
    other = "AERO_VIRTIO_SELFTEST|TEST|virtio-snd|FAIL|reason=no_device"
    verdict, _ = run([START, BLK_PASS, NET_PASS, other, FAIL])
    assert verdict.token == "SELFTEST_FAILED" and "virtio-snd" in verdict.detail


def test_required_test_skipped_is_a_failure():
    skip = "AERO_VIRTIO_SELFTEST|TEST|virtio-net|SKIP|reason=flag_not_set"
    verdict, _ = run([START, BLK_PASS, skip, PASS])
    assert verdict.token == "VIRTIO_NET_SKIPPED"


def test_extra_required_test():
    verdict, _ = run([START, BLK_PASS, NET_PASS, PASS], required=("virtio-blk", "virtio-net", "virtio-input"))
    assert verdict.token == "MISSING_VIRTIO_INPUT"


def test_the_last_status_of_a_test_counts_without_fail_fast():
    verdict, _ = run([START, BLK_PASS, NET_FAIL, NET_PASS, PASS], fail_fast=False)
    assert verdict.passed


def test_a_required_failure_ends_the_run_at_once():
    tracker = Tracker(("virtio-blk", "virtio-net"))
    assert tracker.add(parse(START)) is None
    verdict = tracker.add(parse(NET_FAIL))
    assert verdict.token == "VIRTIO_NET_FAILED" and "http_get_failed" in verdict.detail


def test_a_skip_where_pass_is_required_ends_the_run_but_ready_does_not():
    tracker = Tracker(("virtio-net", Requirement("virtio-snd", ("PASS", "SKIP"))))
    assert tracker.add(parse("AERO_VIRTIO_SELFTEST|TEST|virtio-net|READY")) is None
    assert tracker.add(parse("AERO_VIRTIO_SELFTEST|TEST|virtio-snd|SKIP|device_missing")) is None
    assert tracker.add(parse("AERO_VIRTIO_SELFTEST|TEST|virtio-other|FAIL")) is None
    verdict = tracker.add(parse("AERO_VIRTIO_SELFTEST|TEST|virtio-net|SKIP|flag_not_set"))
    assert verdict.token == "VIRTIO_NET_SKIPPED"


def test_pass_or_skip_requirement_at_result():
    snd = Requirement("virtio-snd", ("PASS", "SKIP"))
    ok, _ = run([START, BLK_PASS, NET_PASS, "AERO_VIRTIO_SELFTEST|TEST|virtio-snd|SKIP", PASS],
                required=("virtio-blk", "virtio-net", snd))
    missing, _ = run([START, BLK_PASS, NET_PASS, PASS], required=("virtio-blk", "virtio-net", snd))
    assert ok.passed and missing.token == "MISSING_VIRTIO_SND"


def test_a_new_start_forgets_the_previous_boot():
    verdict, _ = run([START, BLK_PASS, NET_PASS, START, BLK_PASS, PASS])
    assert verdict.token == "MISSING_VIRTIO_NET"


def test_only_the_first_result_counts():
    verdict, tracker = run([START, BLK_PASS, NET_PASS, PASS, FAIL])
    assert verdict.passed and tracker.result.status == "PASS"


def test_unknown_result_status_is_a_failure():
    verdict, _ = run([START, BLK_PASS, NET_PASS, "AERO_VIRTIO_SELFTEST|RESULT|MAYBE"])
    assert verdict.code == ExitCode.FAIL


def test_noise_result_mid_line_is_ignored():
    verdict, _ = run([START, BLK_PASS, NET_PASS, "junk AERO_VIRTIO_SELFTEST|RESULT|FAIL", PASS])
    assert verdict.passed


def test_timeout_and_vm_gone_verdicts():
    _, tracker = run([START, BLK_PASS])
    t = timeout_verdict(600, tracker)
    assert t.code == ExitCode.TIMEOUT and t.line().startswith("FAIL: TIMEOUT: ")
    assert "virtio-blk" in t.detail
    gone = vm_gone_verdict("QEMU_EXITED", "QEMU exited with code 0", Tracker())
    assert gone.code == ExitCode.QEMU_EXITED and "no START" in gone.detail


def test_token_of():
    assert token_of("virtio-net-udp") == "VIRTIO_NET_UDP"
