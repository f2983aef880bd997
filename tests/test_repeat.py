"""--repeat's own parts without QEMU: the runs' command lines, their tokens, the messages, the usage errors."""

import json
import sys
from pathlib import Path

import pytest

from harness import netns, options
from harness.cli import build_parser, config_from_args, given_values
from harness.config import SelftestConfig
from harness.errors import UsageError
from harness.repeat import child_argv, duration, read_token, spans, stop_message
from harness.tally import RunRecord


def values(*argv):
    return options.resolve("selftest", given_values(build_parser().parse_args(["selftest", *argv])))


def test_each_run_gets_the_selftest_options_but_not_the_repeats_own():
    given = values("--repeat", "5", "--jobs", "2", "--until-fail", "--timeout", "90", "--smp", "1",
                   "--qemu-arg=-cpu", "--qemu-arg=max", "--disk", "README.md", "--artifacts", "/tmp/x",
                   "--http-log", "/tmp/http.log", "--qemu-system", "/opt/qemu/bin/qemu-system-x86_64")
    argv = options.repeat_argv(given)
    assert argv == ["--qemu-system", "/opt/qemu/bin/qemu-system-x86_64", "--timeout", "90", "--smp", "1",
                    "--qemu-arg=-cpu", "--qemu-arg=max"]
    # Parsed again by the run, they mean the same.
    again = values(*argv)
    assert (again.timeout, again.smp, again.qemu_arg, again.repeat) == (90.0, 1, ("-cpu", "max"), 1)


def test_a_run_command_has_its_own_folder_number_and_namespace(tmp_path):
    cfg = SelftestConfig(disk=Path("README.md"), http_log=Path("logs/http.log"))
    folder = tmp_path / "run-003"
    argv = child_argv(cfg, ["--smp", "1"], 3, folder, netns.USER_NET)
    assert argv[:5] == ["unshare", "--user", "--map-root-user", "--net", "--"]
    assert argv[5:9] == [sys.executable, "-m", "harness", "selftest"]
    for pair in (["--disk", str(Path("README.md").resolve())], ["--artifacts", str(folder)], ["--run-index", "3"],
                 ["--http-log", str(folder / "http.log")], ["--smp", "1"]):
        assert argv[argv.index(pair[0]):argv.index(pair[0]) + 2] == pair
    assert "--exit-on-stdin-eof" in argv and argv[-1] == "--private-network"
    plain = child_argv(cfg, [], 3, folder, None)
    assert plain[0] == sys.executable and "--private-network" not in plain


@pytest.mark.parametrize("argv, message", [
    (["--repeat", "0"], "--repeat must be from 1 to 100000, not 0"),
    (["--repeat", "3", "--jobs", "0"], "--jobs must be at least 1, not 0"),
    (["--repeat", "3", "--dry-run"], "--dry-run shows the command of one run: give it without --repeat"),
    (["--repeat", "3", "--no-snapshot"], "--no-snapshot with runs at once"),
])
def test_repeat_usage_errors(argv, message):
    with pytest.raises(UsageError, match=message):
        config_from_args(values(*argv)).validate()


def test_no_snapshot_is_allowed_one_run_at_a_time():
    config_from_args(values("--repeat", "3", "--no-snapshot", "--jobs", "1")).validate()


def test_a_runs_token_comes_from_its_result_then_its_output(tmp_path):
    (tmp_path / "result.json").write_text(json.dumps({"token": "VIRTIO_NET_FAILED"}))
    assert read_token(tmp_path, 1) == "VIRTIO_NET_FAILED"
    (tmp_path / "result.json").unlink()
    (tmp_path / "harness.log").write_text("FAIL: USAGE: --disk x does not exist\nhint: give the path\n")
    assert read_token(tmp_path, 4) == "USAGE"
    (tmp_path / "harness.log").write_text("")
    assert read_token(tmp_path, 5) == "HOST_ERROR" and read_token(tmp_path, 0) == "PASS"
    assert read_token(tmp_path, -9) == "SIGKILL" and read_token(tmp_path, 99) == "?"


def test_messages():
    assert spans([5, 1, 2, 3, 9, 10]) == "run-001..run-003, run-005, run-009..run-010"
    record = RunRecord(3, 1, "VIRTIO_BLK_FAILED", 10.0, None)
    assert stop_message(record, 0).endswith("--until-fail starts no new run; no run is under way")
    assert stop_message(record, 1).endswith("; the run under way finishes")
    assert stop_message(record, 3).endswith("; the 3 runs under way finish")
    assert [duration(s) for s in (9.4, 75, 3725)] == ["9s", "1m15s", "1h02m"]
