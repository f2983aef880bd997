from pathlib import Path

from tools.qemu_builds import named, upstream_major


def test_upstream_major_from_debian_versions():
    assert upstream_major("1:7.2+dfsg-7+deb12u18+b3") == 7
    assert upstream_major("1:10.0.2+ds-2+deb13u1~bpo12+1") == 10
    assert upstream_major("8.2.2+ds-0ubuntu1") == 8


def test_named_from_environment_then_config_file(tmp_path, monkeypatch):
    ini = tmp_path / "qemu-builds.ini"
    ini.write_text("[qemu]\n8 = /opt/qemu-8.2/bin/qemu-system-x86_64\n")
    monkeypatch.delenv("AERO_QEMU_8", raising=False)
    assert named(8, ini) == "/opt/qemu-8.2/bin/qemu-system-x86_64"
    assert named(9, ini) is None
    monkeypatch.setenv("AERO_QEMU_8", "/elsewhere/qemu")
    assert named(8, ini) == "/elsewhere/qemu"
    assert named(8, Path("/nonexistent.ini")) == "/elsewhere/qemu"
