"""The pure parts of remote-selftest: option pass-through, output prefixing, summary, exit code, unpacking."""

import io
import tarfile
import threading
from pathlib import Path

import pytest

from harness.cli import build_parser, passthrough_args
from harness.exitcodes import ExitCode, worst
from harness.remote import HostOutcome, PrefixWriter, summary_table, unpack_tar


def test_passthrough_keeps_every_selftest_option():
    args = build_parser().parse_args([
        "remote-selftest", "--host", "kvm01", "--timeout", "90", "--memory", "4096", "--accel", "kvm",
        "--require-test", "virtio-net", "--qemu-arg=-cpu", "--qemu-arg", "host", "--follow-serial",
        "--http-port", "28080",
    ])
    out = passthrough_args(args)
    assert out[out.index("--timeout") + 1] == "90"
    assert out[out.index("--memory") + 1] == "4096"
    assert out[out.index("--accel") + 1] == "kvm"
    assert out[out.index("--http-port") + 1] == "28080"
    assert "--follow-serial" in out
    assert ["--require-test", "virtio-net"] == out[out.index("--require-test"):out.index("--require-test") + 2]
    assert "--qemu-arg=-cpu" in out and "--qemu-arg=host" in out
    # Re-parsed by the remote harness, they mean the same.
    again = build_parser().parse_args(["selftest", *out])
    assert (again.timeout, again.memory, again.qemu_arg) == (90.0, 4096, ["-cpu", "host"])


def test_prefix_writer_prefixes_whole_lines_across_writes():
    target = io.StringIO()
    writer = PrefixWriter(target, "[kvm01] ", threading.Lock())
    writer.write("PASS: one\npart")
    writer.write("ial line\n")
    assert target.getvalue() == "[kvm01] PASS: one\n[kvm01] partial line\n"


def test_summary_and_worst_code():
    outcomes = [HostOutcome("kvm01", 0, "PASS", 12.3, None), HostOutcome("kvm-long-name", 3, "QEMU_EXITED", 4.0, None)]
    table = summary_table(outcomes).splitlines()
    assert table[0].split() == ["host", "exit", "verdict", "time"]
    assert table[2].split() == ["kvm-long-name", "3", "QEMU_EXITED", "4.0s"]
    assert worst([0, 3, 1]) == 3 and worst([0, 0]) == 0
    assert worst([1, 130, 2]) == ExitCode.INTERRUPTED and worst([4, 1]) == ExitCode.USAGE
    assert worst([]) == ExitCode.HOST_ERROR


def tar_of(*members) -> io.BytesIO:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for info, content in members:
            info.size = len(content) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(content) if info.isfile() else None)
    data.seek(0)
    return data


def entry(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def test_unpack_tar_writes_regular_files_inside_the_folder_only(tmp_path, caplog):
    """The artifacts come home as `tar -cf - -C dir .`; whatever the host sends stays in the folder."""
    stream = tar_of(
        (entry(".", tarfile.DIRTYPE), b""),
        (entry("./serial.log"), b"AERO_VIRTIO_SELFTEST|RESULT|PASS\r\n"),
        (entry("./sub", tarfile.DIRTYPE), b""),
        (entry("./sub/nested.txt"), b"nested"),
        (entry("../escape.txt"), b"x"),
        (entry("./a/../../escape2.txt"), b"x"),
        (entry("/tmp/absolute.txt"), b"x"),
        (entry("./link", tarfile.SYMTYPE, "/etc/passwd"), b""),
        (entry("./hard", tarfile.LNKTYPE, "./serial.log"), b""),
        (entry("./fifo", tarfile.FIFOTYPE), b""),
    )
    folder = tmp_path / "host"
    folder.mkdir()
    written = unpack_tar(stream, folder)
    assert written == ["serial.log", "sub/nested.txt"]
    assert (folder / "serial.log").read_bytes() == b"AERO_VIRTIO_SELFTEST|RESULT|PASS\r\n"
    assert (folder / "sub/nested.txt").read_bytes() == b"nested"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "host", "host/serial.log", "host/sub", "host/sub/nested.txt"]
    assert not Path("/tmp/absolute.txt").exists()
    skipped = [r.getMessage() for r in caplog.records]
    assert len(skipped) == 6 and all("not fetched" in m for m in skipped)


def test_unpack_tar_of_a_broken_stream_is_a_tar_error(tmp_path):
    data = tar_of((entry("./serial.log"), b"x" * 4096)).getvalue()
    with pytest.raises(tarfile.TarError):
        unpack_tar(io.BytesIO(data[:1000]), tmp_path)


def test_hosts_with_slots_and_a_repeat_reach_the_remote_options(tmp_path):
    from harness.cli import RUNTIME, remote_options
    from harness.console import Console
    from harness.options import resolve

    disk = tmp_path / "win7.qcow2"
    disk.write_bytes(b"QFI\xfb" + bytes(508))
    values = resolve("remote-selftest", {"host": ["kvm01:4", "kvm02"], "disk": disk, "repeat": 40,
                                         "until_fail": True})
    opts = remote_options(values, Console(), RUNTIME)
    assert (opts.hosts, opts.slots, opts.repeat, opts.until_fail) == (("kvm01", "kvm02"), (4, 1), 40, True)
    # The runs on the hosts get neither: each is one run.
    assert "--repeat" not in opts.selftest_args and "--until-fail" not in opts.selftest_args
