"""install-win7 end to end, with the test guest playing the Windows installer.

The installer CD boots the test guest's kernel with aero.scenario=installer; it
finds the provisioning media by its marker file, checks provision.cmd and
autounattend.xml, writes a bootable test guest onto the new disk, reports
AERO_PROVISION|DONE on COM1 and powers off, as provision.cmd's shutdown does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import QEMU, ROOT, HarnessRun, communicate, qemu_pids, sha256


def harness(*args: str, artifacts: Path = Path("/nonexistent"), timeout: float = 300) -> subprocess.CompletedProcess:
    front = "images" if args[0] in ("provision-media", "build-test-guest") else "harness"
    argv = [sys.executable, "-m", front, *args]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    out, err = communicate(proc, timeout, artifacts)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@pytest.fixture(scope="module")
def isos(guest_image, tmp_path_factory):
    from images.testguest import build_installer_iso

    root = tmp_path_factory.mktemp("install")
    drivers = root / "drivers"
    for name in ("aero_virtio_blk", "aero_virtio_net", "aero_virtio_input", "aero_virtio_tablet"):
        (drivers / name).mkdir(parents=True)
        (drivers / name / f"{name}.inf").write_text("[Version]\r\n")
        (drivers / name / f"{name}.sys").write_bytes(b"MZ")
    selftest = root / "aero-virtio-selftest.exe"
    selftest.write_bytes(b"MZ")
    media = root / "provision.iso"
    proc = harness("provision-media", "--drivers", str(drivers), "--selftest", str(selftest), "--out", str(media))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return build_installer_iso(root / "installer.iso", guest_image), media


def install(isos, out: Path, artifacts: Path, *extra: str) -> subprocess.CompletedProcess:
    installer, media = isos
    return harness("install-win7", "--iso", str(installer), "--media", str(media), "--out", str(out),
                   "--accel", "tcg", "--qemu-system", QEMU, "--artifacts", str(artifacts), *extra,
                   artifacts=artifacts)


def test_install_then_selftest_passes(isos, tmp_path):
    out = tmp_path / "win7.qcow2"
    out.write_bytes(b"an old image")
    proc = install(isos, out, tmp_path / "inst", "--force")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == f"PASS: provisioned image at {out}"
    report = json.loads((tmp_path / "inst" / "install.json").read_text())
    assert report["provision_lines"][0].startswith("AERO_PROVISION|START|media=")
    assert "AERO_PROVISION|STEP|inf=aero_virtio_blk" in report["provision_lines"]
    assert report["provision_lines"][-1] == "AERO_PROVISION|DONE"
    assert not out.with_name(out.name + ".partial").exists()
    assert qemu_pids(str(tmp_path / "inst")) == []
    before = sha256(out)
    run = HarnessRun(["--disk", str(out), "--accel", "tcg"], tmp_path / "selftest").finish()
    assert run.code == 0, run.stdout + run.stderr
    assert sha256(out) == before


def test_existing_image_is_not_overwritten_without_force(isos, tmp_path):
    out = tmp_path / "win7.qcow2"
    out.write_bytes(b"keep me")
    proc = install(isos, out, tmp_path / "inst")
    assert proc.returncode == 4 and "--out" in proc.stdout and "--force" in proc.stderr
    assert out.read_bytes() == b"keep me"


def test_media_without_marker_is_a_provisioning_failure(isos, tmp_path):
    installer, _ = isos
    out = tmp_path / "win7.qcow2"
    proc = install((installer, installer), out, tmp_path / "inst")
    assert proc.returncode == 1 and "FAIL: PROVISION_FAILED: FAIL|reason=media_not_found" in proc.stdout
    assert not out.exists()


def test_timeout_leaves_a_screenshot_and_no_image(isos, tmp_path):
    out = tmp_path / "win7.qcow2"
    proc = install(isos, out, tmp_path / "inst", "--timeout", "3")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "FAIL: TIMEOUT: provisioning did not report DONE within 3 s" in proc.stdout
    assert (tmp_path / "inst" / "screen-timeout.png").exists()
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()
    assert qemu_pids(str(tmp_path / "inst")) == []


def test_an_iso_that_does_not_boot_fails_at_once(isos, tmp_path):
    _, media = isos
    out = tmp_path / "win7.qcow2"
    proc = install((media, media), out, tmp_path / "inst")  # the provisioning media has no boot record
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "FAIL: NO_BOOTABLE_DEVICE: the firmware found no bootable device on the installer CD" in proc.stdout
    assert "--iso" in proc.stdout
    assert (tmp_path / "inst" / "screen-no-boot.png").exists()
    assert json.loads((tmp_path / "inst" / "install.json").read_text())["token"] == "NO_BOOTABLE_DEVICE"
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()
    assert qemu_pids(str(tmp_path / "inst")) == []


@pytest.mark.fake
def test_a_qemu_that_fails_at_start_still_leaves_install_json(isos, tmp_path):
    from tests.fakeqemu import FAKE_QEMU, script_env

    installer, media = isos
    env = script_env(tmp_path, exit_at_start={"code": 1, "message": "could not open the disk"})
    argv = [sys.executable, "-m", "harness", "install-win7", "--iso", str(installer), "--media", str(media),
            "--out", str(tmp_path / "win7.qcow2"), "--accel", "tcg", "--qemu-system", str(FAKE_QEMU),
            "--artifacts", str(tmp_path / "inst")]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 5 and "FAIL: QEMU_LAUNCH_FAILED: " in proc.stdout, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "inst" / "install.json").read_text())
    assert report["token"] == "QEMU_LAUNCH_FAILED" and "could not open the disk" in report["detail"]
    assert not (tmp_path / "win7.qcow2").exists() and not (tmp_path / "win7.qcow2.partial").exists()
