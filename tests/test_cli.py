"""Bad input: a clear message and exit code 4, never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def harness(*args, cwd=ROOT, module="harness"):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--disk", "/nonexistent/win7.qcow2"], "--disk /nonexistent/win7.qcow2 does not exist"),
        (["--disk", "/tmp"], "is a directory"),
        (["--timeout", "0"], "--timeout must be a positive, finite number"),
        (["--timeout", "inf"], "--timeout must be a positive, finite number"),
        (["--http-port", "70000"], "--http-port must be a port from 1 to 65535"),
        (["--memory", "8"], "--memory is in MiB"),
        (["--smp", "0"], "--smp must be"),
        (["--http-path", "no-slash"], "--http-path must start with /"),
        (["--require-test", "bad name"], "--require-test"),
        (["--qemu-system", "/nonexistent/qemu", "--disk", "README.md"], "does not exist or is not executable"),
    ],
)
def test_usage_errors(args, message):
    proc = harness("selftest", *args)
    assert proc.returncode == 4, proc.stderr + proc.stdout
    assert message in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_option_is_a_usage_error():
    proc = harness("selftest", "--no-such-option")
    assert proc.returncode == 4 and "FAIL: USAGE: unknown option --no-such-option" in proc.stdout


def test_qemu_not_installed_is_a_host_error():
    proc = harness("selftest", "--qemu-system", "qemu-system-nonexistent-arch", "--disk", "README.md")
    assert proc.returncode == 5
    assert "qemu-system-nonexistent-arch is not installed" in proc.stdout
    assert "apt-get install" in proc.stderr


def test_empty_disk_is_a_usage_error(tmp_path):
    disk = tmp_path / "empty.img"
    disk.write_bytes(b"")
    proc = harness("selftest", "--disk", str(disk), "--artifacts", str(tmp_path / "a"))
    assert proc.returncode == 4 and "is an empty disk image" in proc.stdout


def test_corrupt_qcow2_is_a_usage_error(tmp_path):
    disk = tmp_path / "broken.qcow2"
    disk.write_bytes(b"QFI\xfb" + b"\xff" * 508)
    proc = harness("selftest", "--disk", str(disk), "--artifacts", str(tmp_path / "a"))
    assert proc.returncode == 4 and "is not a disk image QEMU can read" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_unknown_option_suggests_the_nearest():
    proc = harness("selftest", "--timout", "5")
    assert proc.returncode == 4
    assert proc.stdout == "FAIL: USAGE: unknown option --timout for python -m harness selftest\n"
    assert "hint: did you mean --timeout?" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--memory", "lots"], "FAIL: USAGE: --memory: 'lots' is not a whole number"),
    (["--accel", "kmv"], "FAIL: USAGE: --accel: 'kmv' is not one of auto, kvm, tcg, hvf, whpx, xen, nvmm "
                         "(did you mean kvm?)"),
    (["extra"], "FAIL: USAGE: python -m harness selftest takes no argument 'extra'"),
])
def test_bad_values_are_usage_errors(args, message):
    proc = harness("selftest", *args)
    assert proc.returncode == 4 and proc.stdout == message + "\n"
    assert "error:" not in proc.stderr


def test_missing_required_option_is_a_usage_error():
    proc = harness("provision-media", "--selftest", "x.exe", module="images")
    assert proc.returncode == 4 and "FAIL: USAGE: the following arguments are required: --drivers" in proc.stdout


def test_python_m_harness_has_no_default_disk():
    """The runtime never builds guests: `invoke selftest` is the front that supplies the test guest."""
    proc = harness("selftest", "--accel", "tcg")
    assert proc.returncode == 4 and proc.stdout == "FAIL: USAGE: no --disk given\n"
    assert "invoke selftest" in proc.stderr


def test_a_file_that_is_not_a_disk_image_is_refused_up_front(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a disk\n" * 100)
    proc = harness("selftest", "--disk", str(text), "--artifacts", str(tmp_path / "a"))
    assert proc.returncode == 4 and "is not a bootable disk image" in proc.stdout and "55 AA" in proc.stdout


def test_an_overlay_whose_backing_file_is_gone_is_a_usage_error(tmp_path):
    base, overlay = tmp_path / "base.qcow2", tmp_path / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(overlay)],
                   check=True)
    base.unlink()
    proc = harness("selftest", "--disk", str(overlay), "--artifacts", str(tmp_path / "a"))
    assert proc.returncode == 4 and "FAIL: USAGE: " in proc.stdout
    assert f"backing file {base} is missing" in proc.stderr


@pytest.mark.parametrize("binary", ["/bin/true", "qemu-img"])
def test_a_qemu_system_that_is_not_qemu_says_so(tmp_path, binary):
    proc = harness("selftest", "--qemu-system", binary, "--disk", "README.md", "--artifacts", str(tmp_path / "a"))
    assert proc.returncode == 4 and "is not a QEMU system emulator" in proc.stdout, proc.stdout + proc.stderr
    assert "GPL" not in proc.stdout and "--qemu-system" in proc.stderr
