"""Provisioning media: the ISO read back, provision.cmd, the schtasks quoting, the selftest's switches,
autounattend.xml. tests/test_provision_wine.py runs provision.cmd itself."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import List

import pycdlib
import pytest

from harness import options
from harness.errors import UsageError
from images.provision import (
    DEFAULT_INFS,
    DRIVE_LETTERS,
    INPUT_SERVICE_PARAMETERS,
    MARKER,
    SELFTEST_SWITCHES,
    TASK_LINE_MAX,
    UNATTEND_NS,
    WCM_NS,
    GuestSettings,
    autounattend_xml,
    build_media,
    driver_paths,
    find_infs,
    first_logon_command,
    parse_switch,
    provision_cmd,
    quote_arg,
    schtasks_line,
    selftest_argv,
    task_line,
)

NS = {"u": UNATTEND_NS}
ROOT = Path(__file__).resolve().parent.parent


def command_line_to_argv(line: str) -> List[str]:
    """The MS C runtime's rules (CommandLineToArgvW), written from its documentation for these tests."""
    args: List[str] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            break
        arg, quoted = [], False
        while i < n and (quoted or line[i] not in " \t"):
            if line[i] == "\\":
                j = i
                while j < n and line[j] == "\\":
                    j += 1
                count = j - i
                if j < n and line[j] == '"':
                    arg.append("\\" * (count // 2))
                    if count % 2:
                        arg.append('"')
                        j += 1
                    i = j
                else:
                    arg.append("\\" * count)
                    i = j
            elif line[i] == '"':
                if quoted and i + 1 < n and line[i + 1] == '"':
                    arg.append('"')
                    i += 2
                    continue
                quoted = not quoted
                i += 1
            else:
                arg.append(line[i])
                i += 1
        args.append("".join(arg))
    return args


def task_argv(settings: GuestSettings) -> List[str]:
    """What the selftest receives: the /TR value parsed by schtasks, then parsed again at boot."""
    words = command_line_to_argv(schtasks_line(settings))
    return command_line_to_argv(words[words.index("/TR") + 1])


def test_schtasks_line_is_the_protocols_for_defaults():
    assert schtasks_line(GuestSettings()) == (
        'schtasks /Create /F /TN "AeroVirtioSelftest" /SC ONSTART /RU SYSTEM /TR "\\"C:\\AeroTests\\'
        'aero-virtio-selftest.exe\\" --http-url \\"http://10.0.2.2:18080/aero-virtio-selftest\\" '
        '--dns-host \\"host.lan\\""'
    )


@pytest.mark.parametrize("blk_root", ["D:\\", "D:\\Aero Tests\\", "E:\\dir with space\\sub", "F:\\ends\\\\"])
def test_trailing_backslashes_and_spaces_survive_two_parsings(blk_root):
    settings = GuestSettings(http_url="http://10.0.2.2:28080/custom/path", udp_port=28081, blk_root=blk_root,
                             test_switches=("--test-net-link-flap", "--test-blk-resize"))
    assert task_argv(settings) == [
        "C:\\AeroTests\\aero-virtio-selftest.exe", "--http-url", "http://10.0.2.2:28080/custom/path",
        "--dns-host", "host.lan", "--udp-port", "28081", "--blk-root", blk_root,
        "--test-net-link-flap", "--test-blk-resize",
    ]


def test_quote_arg_round_trips():
    for value in ["plain", "with space", 'a"quote', "trail\\", "C:\\x\\", "\\\\server\\share\\", ""]:
        assert command_line_to_argv(quote_arg(value)) == [value]


@pytest.mark.parametrize("field, value", [("http_url", "http://x/a&b"), ("dns_host", "a|b"),
                                          ("blk_root", 'D:\\"'), ("http_url", "http://x/%PATH%")])
def test_values_cmd_would_interpret_are_refused(field, value):
    with pytest.raises(UsageError, match="cmd.exe would interpret"):
        GuestSettings(**{field: value}).validate()


def test_bad_switch_is_refused():
    with pytest.raises(UsageError, match="--test-NAME"):
        GuestSettings(test_switches=("--reboot",)).validate()


def test_guest_switches_reach_the_task_in_order():
    settings = GuestSettings(test_switches=("--test-blk-resize",),
                             guest_switches=("expect-blk-msi", "--require-net-msix", "net-timeout-sec=90",
                                             "log-file=C:\\Aero Logs\\selftest.log"))
    settings.validate()
    assert task_argv(settings) == selftest_argv(settings)
    assert selftest_argv(settings)[5:] == ["--test-blk-resize", "--expect-blk-msi", "--require-net-msix",
                                           "--net-timeout-sec", "90", "--log-file", "C:\\Aero Logs\\selftest.log"]
    assert task_line(settings).endswith(' --net-timeout-sec "90" --log-file "C:\\Aero Logs\\selftest.log"')


def test_every_switch_of_the_selftest_can_be_provisioned():
    for name, kind in SELFTEST_SWITCHES.items():
        value = None if kind == "flag" else "5"
        spec = name if value is None else f"{name}={value}"
        assert parse_switch(spec) == parse_switch("--" + spec) == (name, value)
        settings = GuestSettings(guest_switches=(spec,))
        settings.validate()
        assert selftest_argv(settings)[5:] == [f"--{name}"] + ([value] if value else [])


@pytest.mark.parametrize("spec, message, hint", [
    ("expct-blk-msi", "the selftest has no switch --expct-blk-msi", "did you mean expect-blk-msi?"),
    ("--test-input-event", "no switch --test-input-event", "did you mean test-input-events?"),
    ("reboot", "no switch --reboot", "--no-check-guest-switches"),
    ("net-timeout-sec", "--net-timeout-sec takes a value", "net-timeout-sec=VALUE"),
    ("net-timeout-sec=", "--net-timeout-sec takes a value", "net-timeout-sec=VALUE"),
    ("net-timeout-sec=soon", "takes a whole number, not 'soon'", None),
    ("io-size-mib=4294967296", "takes a whole number", None),
    ("expect-blk-msi=1", "is a flag of the selftest and takes no value", "expect-blk-msi"),
    ("http-url=http://x", "set by provision-media's --http-url", "--http-port"),
    ("udp-port=1", "--udp-port is set by provision-media's --udp-port", None),
    ("blk-root=D:\\", "--blk-root is set by", None),
    ("Expect-Blk-Msi", "is not a selftest switch", "lower case"),
    ("log-file=C:\\a&b", "cmd.exe would interpret", None),
])
def test_switch_mistakes_are_usage_errors(spec, message, hint):
    with pytest.raises(UsageError, match=re.escape(message)) as raised:
        GuestSettings(guest_switches=(spec,)).validate()
    if hint:
        assert hint in raised.value.hint


def test_a_switch_newer_than_the_list_passes_unchecked():
    settings = GuestSettings(test_switches=("--test-future",), guest_switches=("future-flag", "future-value=3"),
                             check_guest_switches=False)
    settings.validate()
    assert selftest_argv(settings)[5:] == ["--test-future", "--future-flag", "--future-value", "3"]
    with pytest.raises(UsageError, match="no switch --test-future"):
        GuestSettings(test_switches=("--test-future",)).validate()
    with pytest.raises(UsageError, match="is not a selftest switch"):  # the form is still checked
        GuestSettings(guest_switches=("Future",), check_guest_switches=False).validate()


@pytest.mark.parametrize("switches, message", [
    (("disable-snd", "test-snd-capture"), "refuses --disable-snd with --test-snd-capture"),
    (("require-snd", "disable-snd"), "refuses --disable-snd with --require-snd"),
    (("disable-snd-capture", "require-non-silence"), "refuses --disable-snd-capture with --require-non-silence"),
    (("expect-blk-msi", "--expect-blk-msi"), "--expect-blk-msi is given twice"),
    (("net-timeout-sec=1", "net-timeout-sec=2"), "--net-timeout-sec is given twice"),
])
def test_switches_the_selftest_refuses_together(switches, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        GuestSettings(guest_switches=switches).validate()


def test_a_task_line_longer_than_schtasks_takes_is_refused():
    settings = GuestSettings(guest_switches=("log-file=C:\\" + "x" * 150 + ".log",))
    assert len(task_line(settings)) > TASK_LINE_MAX
    with pytest.raises(UsageError, match=f"schtasks takes at most {TASK_LINE_MAX}"):
        settings.validate()


def test_default_allow_list_sound_on_request_and_winpe_drivers():
    assert DEFAULT_INFS == ("aero_virtio_blk", "aero_virtio_net", "aero_virtio_input", "aero_virtio_tablet")
    assert GuestSettings().driver_infs() == DEFAULT_INFS
    with_sound = GuestSettings(with_virtio_snd=True)
    assert with_sound.driver_infs() == (*DEFAULT_INFS, "aero_virtio_snd")
    assert "aero_virtio_snd.inf" in provision_cmd(with_sound)
    assert GuestSettings(infs=("aero_virtio_snd",), with_virtio_snd=True).driver_infs() == ("aero_virtio_snd",)
    # Windows PE is offered storage and network only; PnP installs the rest at first logon.
    assert {path.split("\\")[2] for path in driver_paths(with_sound)} == {"aero_virtio_blk", "aero_virtio_net"}
    with pytest.raises(UsageError, match="--with-virtio-snd installs the sound driver"):
        GuestSettings(with_virtio_snd=True, guest_switches=("disable-snd",)).validate()


def test_input_compat_value_is_written_before_the_input_driver_by_default():
    text = provision_cmd(GuestSettings())
    reg = f'reg add "{INPUT_SERVICE_PARAMETERS}" /v CompatIdName /t REG_DWORD /d 1 /f'
    assert INPUT_SERVICE_PARAMETERS == "HKLM\\System\\CurrentControlSet\\Services\\aero_virtio_input\\Parameters"
    assert reg in text
    assert text.index(reg) < text.index("aero_virtio_input.inf")
    assert "echo AERO_PROVISION^|STEP^|input_compat=on> COM1" in text
    assert "CompatIdName" not in provision_cmd(GuestSettings(input_compat=False))


@pytest.mark.parametrize("settings", [GuestSettings(), GuestSettings(with_virtio_snd=True, test_signing=False)])
def test_no_parenthesis_inside_a_block(settings):
    """cmd.exe ends a ( ... ) block at the first ), also one in echoed text (the media-not-found bug)."""
    depth = 0
    for line in provision_cmd(settings).splitlines():
        if line.endswith(" ("):
            depth += 1
        elif line == ")":
            depth -= 1
        elif depth:
            assert "(" not in line and ")" not in line, line
    assert depth == 0


def test_every_fail_line_ends_where_its_echo_does():
    # Text between "> COM1" and a following "&" would be echoed too (a trailing space on COM1).
    for line in provision_cmd(GuestSettings()).splitlines():
        if "> COM1" in line:
            assert line.endswith("> COM1"), line


@pytest.mark.parametrize("settings, key, value", [
    (GuestSettings(edition="Windows 7 PROFESSIONAL"), "/IMAGE/NAME", "Windows 7 PROFESSIONAL"),
    (GuestSettings(image_index=4), "/IMAGE/INDEX", "4"),
])
def test_edition_or_image_index_picks_the_image(settings, key, value):
    settings.validate()
    os_image = ET.fromstring(autounattend_xml(settings)).find(".//u:ImageInstall/u:OSImage", NS)
    assert [child.tag.split("}")[1] for child in os_image][:2] == ["InstallFrom", "InstallTo"]
    metadata = os_image.find("u:InstallFrom/u:MetaData", NS)
    assert metadata.get(f"{{{WCM_NS}}}action") == "add"
    assert (metadata.find("u:Key", NS).text, metadata.find("u:Value", NS).text) == (key, value)


def test_without_edition_setup_chooses():
    assert ET.fromstring(autounattend_xml(GuestSettings())).find(".//u:InstallFrom", NS) is None
    with pytest.raises(UsageError, match="not both"):
        GuestSettings(edition="Windows 7 ULTIMATE", image_index=1).validate()
    with pytest.raises(UsageError, match="counts from 1"):
        GuestSettings(image_index=0).validate()
    with pytest.raises(UsageError, match="is not an edition name"):
        GuestSettings(edition=" ").validate()


def test_guest_settings_take_their_defaults_from_the_declaration():
    for name, attr in (("guest_switch", "guest_switches"), ("check_guest_switches", "check_guest_switches"),
                       ("with_virtio_snd", "with_virtio_snd"), ("virtio_input_compat_id_name", "input_compat"),
                       ("edition", "edition"), ("image_index", "image_index"), ("inf", "infs")):
        assert getattr(GuestSettings(), attr) == options.default("provision_media", name)


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "images", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_provision_media_command_line(tmp_path):
    drivers = make_drivers(tmp_path / "drivers")
    selftest = tmp_path / "selftest.exe"
    selftest.write_bytes(b"MZ")
    common = ["provision-media", "--drivers", str(drivers), "--selftest", str(selftest)]
    proc = harness(*common, "--out", str(tmp_path / "p.iso"), "--guest-switch", "expect-blk-msi",
                   "--guest-switch=--net-timeout-sec=60", "--with-virtio-snd", "--no-virtio-input-compat-id-name",
                   "--edition", "Windows 7 PROFESSIONAL")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    iso = pycdlib.PyCdlib()
    iso.open(str(tmp_path / "p.iso"))
    try:
        record = json.loads(read(iso, "/provision.json"))
        assert "CompatIdName" not in read(iso, "/provision.cmd").decode()
        assert b"/IMAGE/NAME" in read(iso, "/autounattend.xml")
    finally:
        iso.close()
    assert record["selftest_argv"][5:] == ["--expect-blk-msi", "--net-timeout-sec", "60"]
    assert record["driver_infs"][-1] == "aero_virtio_snd"
    proc = harness(*common, "--out", str(tmp_path / "q.iso"), "--guest-switch", "expct-blk-msi")
    assert proc.returncode == 4
    assert proc.stdout.startswith("FAIL: USAGE: the selftest has no switch --expct-blk-msi")
    assert "did you mean expect-blk-msi?" in proc.stderr
    assert not (tmp_path / "q.iso").exists()


ALL_INFS = (*DEFAULT_INFS, "aero_virtio_snd")


def make_drivers(root: Path, names=ALL_INFS) -> Path:
    for name in names:
        package = root / f"{name} pkg" / "amd64"
        package.mkdir(parents=True)
        (package / f"{name}.inf").write_text(f"[Version]\r\n; {name}\r\n")
        (package / f"{name}.sys").write_bytes(b"MZ" + name.encode())
        (package / f"{name}.cat").write_bytes(b"cat")
    return root


def test_missing_and_doubled_infs_are_named(tmp_path):
    drivers = make_drivers(tmp_path / "d", names=("aero_virtio_blk",))
    with pytest.raises(UsageError, match="no aero_virtio_net.inf under"):
        find_infs(drivers, ["aero_virtio_blk", "aero_virtio_net"])
    (drivers / "copy").mkdir()
    (drivers / "copy" / "AERO_VIRTIO_BLK.INF").write_text("again")
    with pytest.raises(UsageError, match="more than one INF of the same name: aero_virtio_blk.inf"):
        find_infs(drivers, ["aero_virtio_blk"])


@pytest.fixture
def media(tmp_path):
    drivers = make_drivers(tmp_path / "drivers")
    selftest = tmp_path / "aero-virtio-selftest.exe"
    selftest.write_bytes(b"MZ selftest")
    settings = GuestSettings(product_key="AAAAA-BBBBB-CCCCC-DDDDD-EEEEE", blk_root="D:\\")
    out = tmp_path / "provision.iso"
    files = build_media(drivers, selftest, settings, out)
    iso = pycdlib.PyCdlib()
    iso.open(str(out))
    yield iso, files, settings
    iso.close()


def read(iso, path: str) -> bytes:
    buf = io.BytesIO()
    iso.get_file_from_iso_fp(buf, joliet_path=path)
    return buf.getvalue()


def joliet_files(iso) -> set:
    names = set()
    for root, _dirs, files in iso.walk(joliet_path="/"):
        for name in files:
            names.add((root.rstrip("/") + "/" + name).lstrip("/"))
    return names


def test_iso_holds_every_file_under_its_long_name(media):
    iso, files, _ = media
    assert joliet_files(iso) == {f.path for f in files}
    for item in files:
        assert read(iso, "/" + item.path) == item.data
    expected = {MARKER, "provision.cmd", "autounattend.xml", "provision.json", "AeroTests/aero-virtio-selftest.exe",
                "drivers/aero_virtio_blk/aero_virtio_blk.inf", "drivers/aero_virtio_blk/aero_virtio_blk.sys",
                "drivers/aero_virtio_net/aero_virtio_net.cat"}
    assert expected <= joliet_files(iso)


def test_product_key_is_only_in_autounattend(media):
    iso, files, settings = media
    for item in files:
        if item.path != "autounattend.xml":
            assert settings.product_key.encode() not in item.data, item.path
    assert "product_key" not in json.loads(read(iso, "/provision.json"))
    assert "AAAAA" not in repr(settings)


def test_provision_cmd(media):
    iso, _, settings = media
    text = read(iso, "/provision.cmd").decode("ascii")
    assert "\r\n" in text
    assert 'set "LOG=C:\\aero-win7-provision.log"' in text
    assert f'if exist "%%D:\\{MARKER}" set "MEDIA=%%D:"' in text
    for inf in settings.infs:
        assert f'pnputil -i -a "%MEDIA%\\drivers\\{inf}\\{inf}.inf"' in text
    assert "bcdedit /set testsigning on" in text
    assert 'copy /y "%MEDIA%\\AeroTests\\aero-virtio-selftest.exe" "C:\\AeroTests\\aero-virtio-selftest.exe"' in text
    assert schtasks_line(settings) + ' >> "%LOG%" 2>&1' in text.splitlines()
    assert "echo AERO_PROVISION^|DONE> COM1" in text
    assert "bcdedit" not in provision_cmd(GuestSettings(test_signing=False))


def test_autounattend(media):
    iso, _, _ = media
    root = ET.fromstring(read(iso, "/autounattend.xml"))
    passes = {s.get("pass"): s for s in root.findall("u:settings", NS)}
    assert set(passes) == {"windowsPE", "specialize", "oobeSystem"}
    pe = {c.get("name"): c for c in passes["windowsPE"].findall("u:component", NS)}
    assert {"Microsoft-Windows-PnpCustomizationsWinPE", "Microsoft-Windows-Setup",
            "Microsoft-Windows-International-Core-WinPE"} <= set(pe)
    paths = [p.text for p in pe["Microsoft-Windows-PnpCustomizationsWinPE"].iterfind(".//u:Path", NS)]
    assert paths and all(p[0] in DRIVE_LETTERS and p[1:3] == ":\\" for p in paths)
    on_media = joliet_files(iso)
    for path in paths:
        folder = path[3:].replace("\\", "/")
        assert any(name.startswith(folder + "/") and name.endswith(".inf") for name in on_media), path
    setup = pe["Microsoft-Windows-Setup"]
    assert setup.find(".//u:Disk/u:WillWipeDisk", NS).text == "true"
    assert setup.find(".//u:ProductKey/u:Key", NS).text == "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE"
    shell = passes["oobeSystem"].find("u:component", NS)
    assert shell.find("u:OOBE/u:SkipMachineOOBE", NS).text == "true"
    assert shell.find("u:AutoLogon/u:LogonCount", NS).text == "1"
    command = shell.find(".//u:FirstLogonCommands/u:SynchronousCommand/u:CommandLine", NS).text
    assert command == first_logon_command()
    assert MARKER in command and "provision.cmd" in command
    assert {MARKER, "provision.cmd"} <= on_media
