"""The plan of a repeat: handing runs out, handing them back, stopping at the first failure, jobs, time left."""

import pytest

from harness.errors import UsageError
from harness.schedule import Schedule, default_jobs, parse_host, parse_hosts, time_left


def take_all(schedule):
    out = []
    while (index := schedule.take()) is not None:
        out.append(index)
    return out


def test_runs_go_out_in_order_and_the_schedule_ends_when_all_finished():
    s = Schedule(3)
    assert take_all(s) == [1, 2, 3] and not s.done
    for index in (2, 1, 3):
        assert s.finish(index, passed=index != 2) is False  # without until_fail nothing stops
    assert s.done and (s.passed, s.failed) == (2, 1) and s.first_failure == 2 and s.not_started() == []


def test_until_fail_starts_nothing_new_after_the_first_failure_but_lets_runs_under_way_finish():
    s = Schedule(6, until_fail=True)
    assert [s.take(), s.take()] == [1, 2]
    assert s.finish(2, passed=False) is True  # this failure stops it
    assert s.take() is None and not s.done  # run 1 is still under way
    assert s.finish(1, passed=False) is False  # a second failure stops nothing more
    assert s.done and s.first_failure == 2 and s.not_started() == [3, 4, 5, 6]


def test_a_run_handed_back_goes_out_again_first():
    s = Schedule(4)
    assert [s.take(), s.take(), s.take()] == [1, 2, 3]
    s.give_back(2)
    s.give_back(1)
    assert take_all(s) == [1, 2, 4]
    assert s.running == {1, 2, 3, 4}


def test_a_stopped_schedule_lists_the_runs_that_never_started():
    s = Schedule(5)
    s.take()
    s.take()
    s.give_back(2)
    s.stop()
    assert s.take() is None
    s.finish(1, passed=True)
    assert s.done and s.not_started() == [2, 3, 4, 5]


@pytest.mark.parametrize("runs, cores, mib, memory, smp, expected", [
    (10, 2, 23000, 2048, 2, 1),  # this machine with the defaults: one guest's CPUs fill both cores
    (10, 2, 23000, 2048, 1, 2),
    (10, 32, 64000, 4096, 4, 8),  # a 32-core KVM host: eight Windows guests at once
    (10, 32, 9000, 4096, 1, 2),  # memory is short
    (3, 32, 64000, 1024, 1, 3),  # never more than the runs
    (10, 1, 500, 2048, 4, 1),  # at least one
])
def test_default_jobs_from_cores_and_memory(runs, cores, mib, memory, smp, expected):
    assert default_jobs(runs, cores, mib, memory, smp) == expected


@pytest.mark.parametrize("spec, expected", [
    ("kvm01", ("kvm01", 1)),
    ("kvm01:4", ("kvm01", 4)),
    ("aero@kvm01:2222:2", ("aero@kvm01:2222", 2)),
])
def test_host_specs(spec, expected):
    assert parse_host(spec) == expected


@pytest.mark.parametrize("spec, message, hint", [
    ("kvm01:x", "expected HOST or HOST:SLOTS", "kvm01:4"),
    (":4", "expected HOST or HOST:SLOTS", "kvm01:4"),
    ("kvm01:0", "0 slots; a host takes 1 to 64 runs at once", "HOST:PORT:SLOTS"),
    ("aero@kvm01:2222", "2222 slots", "user@kvm01:2222:1"),
])
def test_bad_host_specs_are_usage_errors(spec, message, hint):
    with pytest.raises(UsageError) as err:
        parse_host(spec)
    assert message in err.value.message and hint in err.value.hint


def test_time_left_from_the_median_run():
    assert time_left(5, [], [], 2) is None  # nothing to go by yet
    # Runs of ~10 s; one under way for 4 s (6 s to go), one overdue; 2 jobs: the waiting runs go
    # to the free job at 0 s, 10 s, then to the other at 6 s...: 0+10, 6+10, 10+10, 16+10.
    assert time_left(4, [4.0, 12.0], [9.0, 10.0, 30.0], 2) == pytest.approx(26.0)
    assert time_left(0, [7.0], [10.0], 2) == pytest.approx(3.0)  # the last run, not shared out over the jobs
    assert time_left(0, [], [10.0], 3) == 0
    assert time_left(6, [], [10.0], 3) == pytest.approx(20.0)


def test_hosts_with_their_slots_each_host_once():
    assert parse_hosts(["kvm01:4", "kvm02"]) == (("kvm01", "kvm02"), (4, 1))
    with pytest.raises(UsageError, match="--host kvm01 is given twice") as err:
        parse_hosts(["kvm01:2", "kvm01:2"])
    assert err.value.hint == "give it once, with its slots: kvm01:N"
