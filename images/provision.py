"""Provisioning media for a Windows 7 test image: drivers, the selftest, provision.cmd
and autounattend.xml on one ISO (built in Python with pycdlib, Joliet names for Windows).

The text generators are pure; ``build_media`` collects the files and writes the ISO.
See docs/guest-contract.md, "Provisioning a Windows image".
"""

from __future__ import annotations

import difflib
import io
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional, Sequence, Set, Tuple

from harness.config import guest_http_url
from harness.errors import UsageError
from harness.options import default

MARKER = "AERO_PROVISION.TAG"
TASK_NAME = "AeroVirtioSelftest"
SELFTEST_DIR = "C:\\AeroTests"
SELFTEST_NAME = "aero-virtio-selftest.exe"
LOG_PATH = "C:\\aero-win7-provision.log"
DEFAULT_INFS: Tuple[str, ...] = default("provision_media", "inf")
DEFAULT_UDP_PORT: int = default("selftest", "udp_port")
# Drive letters a CD can get in WinPE and in the installed system.
DRIVE_LETTERS = "DEFGHIJKLMNOPQRSTUVWXYZ"
# Serial lines provisioning writes on COM1; install-win7 follows them.
SERIAL_PREFIX = "AERO_PROVISION|"
UNATTEND_NS = "urn:schemas-microsoft-com:unattend"
WCM_NS = "http://schemas.microsoft.com/WMIConfig/2002/State"
# Characters that cmd.exe would act on inside provision.cmd; refused rather than escaped.
CMD_SPECIAL = set('&|<>^%!"\r\n')
# schtasks refuses a /TR value (the task's command line) longer than this.
TASK_LINE_MAX = 261
SOUND_INF = "aero_virtio_snd"
# Drivers PnP installs at first logon (provision.cmd); Windows PE is offered the others (storage, network).
NOT_IN_WINPE = ("aero_virtio_input", "aero_virtio_tablet", SOUND_INF)
INPUT_SERVICE_PARAMETERS = "HKLM\\System\\CurrentControlSet\\Services\\aero_virtio_input\\Parameters"


# --- the selftest's switches -------------------------------------------------

FLAG = "flag"
NUMBER = "number"  # a whole number, as the selftest's ParseU32 reads it (decimal, 0 to 2**32-1)
TEXT = "text"
# Every switch aero-virtio-selftest.exe takes (its wmain, usage text and Options), with the kind of
# value it reads after it. The selftest exits 2 on any other argument, so a typo here would leave
# the image without a selftest: hence the check. Aliases are listed as the selftest accepts them.
SELFTEST_SWITCHES: Dict[str, str] = {
    "expect-blk-msi": FLAG, "test-blk-resize": FLAG, "test-blk-reset": FLAG,
    "test-net-link-flap": FLAG, "require-net-msix": FLAG,
    "disable-snd": FLAG, "disable-snd-capture": FLAG, "require-snd": FLAG, "test-snd": FLAG,
    "require-snd-msix": FLAG, "require-snd-capture": FLAG, "test-snd-capture": FLAG,
    "test-snd-buffer-limits": FLAG, "require-non-silence": FLAG, "allow-virtio-snd-transitional": FLAG,
    "test-input-events": FLAG, "test-input-events-extended": FLAG, "test-input-events-modifiers": FLAG,
    "test-input-events-buttons": FLAG, "test-input-events-wheel": FLAG, "test-input-tablet-events": FLAG,
    "test-tablet-events": FLAG, "test-input-media-keys": FLAG, "test-input-led": FLAG, "test-input-leds": FLAG,
    "require-input-msix": FLAG,
    "net-timeout-sec": NUMBER, "io-size-mib": NUMBER, "io-chunk-kib": NUMBER, "log-file": TEXT,
}
# Switches provision-media sets from its own options, so that host and guest cannot disagree.
OWN_SWITCHES: Dict[str, str] = {
    "http-url": "--http-url (or --http-port and --http-path)", "udp-port": "--udp-port", "dns-host": "--dns-host",
    "blk-root": "--blk-root",
}
# Combinations the selftest refuses (it exits 2): the first switch with any of the others.
SWITCH_CONFLICTS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("disable-snd", ("require-snd", "test-snd", "require-snd-msix", "require-snd-capture", "test-snd-capture",
                     "test-snd-buffer-limits", "require-non-silence")),
    ("disable-snd-capture", ("require-snd-capture", "test-snd-capture", "require-non-silence")),
)


def parse_switch(spec: str, checked: bool = True) -> Tuple[str, Optional[str]]:
    """A switch as given (``expect-blk-msi``, ``--net-timeout-sec=60``): its name and value.

    ``checked``: a name the selftest does not know is a usage error (with the
    nearest one); otherwise it is passed on as given.
    """
    text = spec[2:] if spec.startswith("--") else spec
    name, has_value, value = text.partition("=")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise UsageError(f"{spec!r} is not a selftest switch", hint="give NAME or NAME=VALUE, such as expect-blk-msi "
                         "or net-timeout-sec=60 (the selftest's switches are lower case)")
    if name in OWN_SWITCHES:
        raise UsageError(f"--{name} is set by provision-media's {OWN_SWITCHES[name]}, not as a switch",
                         hint=f"use {OWN_SWITCHES[name]}")
    kind = SELFTEST_SWITCHES.get(name)
    if kind is None:
        if checked:
            close = difflib.get_close_matches(name, list(SELFTEST_SWITCHES), n=1)
            hint = (f"did you mean {close[0]}?" if close else f"its switches: {', '.join(SELFTEST_SWITCHES)}")
            raise UsageError(f"the selftest has no switch --{name} (it would exit at every boot without testing)",
                             hint=hint + "; for a selftest newer than this harness, --no-check-guest-switches")
        kind = TEXT if has_value else FLAG
    if kind == FLAG and has_value:
        raise UsageError(f"--{name} is a flag of the selftest and takes no value", hint=f"give it as {name}")
    if kind != FLAG:
        if not has_value or not value:
            raise UsageError(f"--{name} takes a value", hint=f"give it as {name}=VALUE")
        if kind == NUMBER and not (re.fullmatch(r"[0-9]+", value) and int(value) < 2**32):
            raise UsageError(f"--{name} takes a whole number, not {value!r}")
        bad = sorted(set(value) & CMD_SPECIAL)
        if bad:
            raise UsageError(f"--{name} {value!r} holds {''.join(bad)!r}, which cmd.exe would interpret",
                             hint="use a value without & | < > ^ % ! or quotes")
        return name, value
    return name, None


@dataclass(frozen=True)
class GuestSettings:
    """What the guest's scheduled task is given: the same settings the harness serves.

    The defaults are the options' (harness/options.py).
    """

    http_url: str = guest_http_url(default("selftest", "http_port"), default("selftest", "http_path"))
    udp_port: int = DEFAULT_UDP_PORT
    dns_host: str = default("provision_media", "dns_host")
    blk_root: Optional[str] = default("provision_media", "blk_root")
    test_switches: Tuple[str, ...] = default("provision_media", "test_switch")  # each --test-NAME
    guest_switches: Tuple[str, ...] = default("provision_media", "guest_switch")  # each NAME or NAME=VALUE
    check_guest_switches: bool = default("provision_media", "check_guest_switches")
    test_signing: bool = default("provision_media", "test_signing")
    infs: Tuple[str, ...] = DEFAULT_INFS
    with_virtio_snd: bool = default("provision_media", "with_virtio_snd")
    input_compat: bool = default("provision_media", "virtio_input_compat_id_name")
    edition: Optional[str] = default("provision_media", "edition")
    image_index: Optional[int] = default("provision_media", "image_index")
    arch: str = default("provision_media", "arch")
    admin_password: str = default("provision_media", "admin_password")
    computer_name: str = default("provision_media", "computer_name")
    product_key: Optional[str] = field(default=default("provision_media", "product_key"), repr=False)

    def driver_infs(self) -> Tuple[str, ...]:
        """The allow-list, with the sound driver when --with-virtio-snd asks for it."""
        if self.with_virtio_snd and SOUND_INF not in self.infs:
            return (*self.infs, SOUND_INF)
        return self.infs

    def switches(self) -> List[Tuple[str, Optional[str]]]:
        """The selftest switches beyond the URL, ports and folders: (name, value or None), in order given."""
        return [parse_switch(spec, self.check_guest_switches) for spec in (*self.test_switches, *self.guest_switches)]

    def validate(self) -> None:
        for name, value in (("--http-url", self.http_url), ("--dns-host", self.dns_host),
                            ("--blk-root", self.blk_root or ""), ("--admin-password", self.admin_password)):
            bad = sorted(set(value) & CMD_SPECIAL)
            if bad:
                raise UsageError(f"{name} {value!r} holds {''.join(bad)!r}, which cmd.exe would interpret",
                                 hint="use a value without & | < > ^ % ! or quotes")
        if not re.fullmatch(r"http://[^/\s]+(/\S*)?", self.http_url):
            raise UsageError(f"--http-url {self.http_url!r} is not an http:// URL")
        if not 1 <= self.udp_port <= 65535:
            raise UsageError(f"--udp-port must be a port from 1 to 65535, not {self.udp_port}")
        for switch in self.test_switches:
            if not re.fullmatch(r"--test-[a-z0-9][a-z0-9-]*", switch):
                raise UsageError(f"{switch!r} is not a selftest switch of the form --test-NAME")
        self._check_switches()
        for inf in self.driver_infs():
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", inf):
                raise UsageError(f"INF name {inf!r} should be a bare name such as aero_virtio_blk")
        if self.edition is not None and self.image_index is not None:
            raise UsageError("give --edition or --image-index, not both")
        if self.edition is not None and not (self.edition.strip() and self.edition.isprintable()):
            raise UsageError(f"--edition {self.edition!r} is not an edition name such as 'Windows 7 PROFESSIONAL'")
        if self.image_index is not None and self.image_index < 1:
            raise UsageError(f"--image-index counts from 1, not {self.image_index}")
        if self.arch not in ("amd64", "x86"):
            raise UsageError(f"--arch must be amd64 or x86, not {self.arch}")
        if not re.fullmatch(r"[A-Za-z0-9-]{1,15}", self.computer_name):
            raise UsageError("--computer-name must be 1 to 15 letters, digits or dashes")
        line = task_line(self)
        if len(line) > TASK_LINE_MAX:
            raise UsageError(f"the task's command line is {len(line)} characters long; schtasks takes at most "
                             f"{TASK_LINE_MAX}: {line}", hint="give fewer switches, or a shorter --http-path or "
                             "--blk-root")

    def _check_switches(self) -> None:
        switches = self.switches()
        names = [name for name, _ in switches]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise UsageError(f"the selftest switch --{twice[0]} is given twice")
        for first, others in SWITCH_CONFLICTS:
            clash = [name for name in others if name in names]
            if first in names and clash:
                raise UsageError(f"the selftest refuses --{first} with --{clash[0]} (it would exit at every boot)")
        if self.with_virtio_snd and "disable-snd" in names:
            raise UsageError("--with-virtio-snd installs the sound driver for runs that test sound, and the "
                             "switch disable-snd makes the selftest skip those tests", hint="give one of them")


# --- Windows command-line quoting -------------------------------------------


def quote_arg(arg: str) -> str:
    """One argument, quoted so that CommandLineToArgvW (and the MS C runtime) gives it back.

    Backslashes are literal except before a quote: those are doubled, and so
    are the ones at the end, before the closing quote.
    """
    out = ['"']
    backslashes = 0
    for ch in arg:
        if ch == "\\":
            backslashes += 1
            continue
        if ch == '"':
            out.append("\\" * (2 * backslashes + 1) + '"')
        else:
            out.append("\\" * backslashes + ch)
        backslashes = 0
    out.append("\\" * (2 * backslashes) + '"')
    return "".join(out)


def _task_words(settings: GuestSettings) -> List[Tuple[str, bool]]:
    """The selftest's arguments, each marked True when it is a switch (bare) rather than a value (quoted)."""
    words = [(f"{SELFTEST_DIR}\\{SELFTEST_NAME}", False), ("--http-url", True), (settings.http_url, False),
             ("--dns-host", True), (settings.dns_host, False)]
    if settings.udp_port != DEFAULT_UDP_PORT:
        words += [("--udp-port", True), (str(settings.udp_port), False)]
    if settings.blk_root is not None:
        words += [("--blk-root", True), (settings.blk_root, False)]
    for name, value in settings.switches():
        words.append((f"--{name}", True))
        if value is not None:
            words.append((value, False))
    return words


def selftest_argv(settings: GuestSettings) -> List[str]:
    """The arguments the selftest gets at every boot (its argv, program first)."""
    return [word for word, _ in _task_words(settings)]


def task_line(settings: GuestSettings) -> str:
    """The task's command line (schtasks' /TR value): switches bare, the program and values quoted."""
    return " ".join(word if switch else quote_arg(word) for word, switch in _task_words(settings))


def schtasks_line(settings: GuestSettings) -> str:
    """The schtasks command that registers the selftest to run at every boot as SYSTEM.

    The task's command line is parsed twice: once by schtasks (the /TR value)
    and once by the selftest when the task starts, so it is quoted twice.
    """
    return f'schtasks /Create /F /TN "{TASK_NAME}" /SC ONSTART /RU SYSTEM /TR {quote_arg(task_line(settings))}'


# --- provision.cmd ----------------------------------------------------------


def _say(what: str) -> str:
    """A line that writes ``AERO_PROVISION|<what>`` to COM1; ``what`` has its | escaped as ^|."""
    # The line ends right after "COM1": text between the echo and a following & would be echoed too.
    return f"echo {SERIAL_PREFIX[:-1]}^|{what}> COM1"


def _fail_if(condition: str, reason: str, log: str) -> List[str]:
    """A block that, when ``condition`` holds, logs, writes FAIL with ``reason`` to COM1 and ends the script.

    Inside a parenthesised block cmd.exe ends the block at the first ) it meets,
    also in echoed text: the texts here must hold none.
    """
    body = [f'echo [%DATE% %TIME%] FAIL: {log}>> "%LOG%"', _say(f"FAIL^|reason={reason}"), "exit /b 1"]
    for text in body:
        if set(text) & set("()"):
            raise ValueError(f"a parenthesis inside a cmd.exe block: {text}")
    return [f"{condition} (", *("  " + text for text in body), ")"]


def provision_cmd(settings: GuestSettings) -> str:
    """The script FirstLogonCommands runs once, from the provisioning media."""
    lines = [
        "@echo off",
        "rem Aero virtio selftest provisioning; written by `invoke provision-media`.",
        "setlocal EnableExtensions",
        f'set "LOG={LOG_PATH}"',
        'echo [%DATE% %TIME%] provisioning starts>> "%LOG%"',
        "mode COM1: BAUD=115200 PARITY=N DATA=8 STOP=1 >nul 2>&1",
        'set "MEDIA="',
        f"for %%D in ({' '.join(DRIVE_LETTERS)}) do if exist \"%%D:\\{MARKER}\" set \"MEDIA=%%D:\"",
        *_fail_if("if not defined MEDIA", "media_not_found",
                  f"no drive from D: to Z: holds {MARKER}, the provisioning media's marker"),
        'echo [%DATE% %TIME%] media: %MEDIA%>> "%LOG%"',
        _say("START^|media=%MEDIA%"),
    ]
    if settings.input_compat:
        # Before the input driver is installed, so that its first start already reads it.
        lines += [
            'echo [%DATE% %TIME%] input driver compat mode: CompatIdName=1>> "%LOG%"',
            f'reg add "{INPUT_SERVICE_PARAMETERS}" /v CompatIdName /t REG_DWORD /d 1 /f >> "%LOG%" 2>&1',
            *_fail_if("if errorlevel 1", "reg_failed", "reg add CompatIdName"),
            _say("STEP^|input_compat=on"),
        ]
    for inf in settings.driver_infs():
        lines += [
            f'echo [%DATE% %TIME%] installing {inf}.inf>> "%LOG%"',
            f'pnputil -i -a "%MEDIA%\\drivers\\{inf}\\{inf}.inf" >> "%LOG%" 2>&1',
            *_fail_if("if errorlevel 1", f"pnputil_failed^|inf={inf}", f"pnputil {inf}.inf"),
            _say(f"STEP^|inf={inf}"),
        ]
    if settings.test_signing:
        lines += [
            'bcdedit /set testsigning on >> "%LOG%" 2>&1',
            *_fail_if("if errorlevel 1", "testsigning_failed", "bcdedit /set testsigning on"),
            _say("STEP^|testsigning=on"),
        ]
    lines += [
        f'if not exist "{SELFTEST_DIR}" mkdir "{SELFTEST_DIR}"',
        f'copy /y "%MEDIA%\\AeroTests\\{SELFTEST_NAME}" "{SELFTEST_DIR}\\{SELFTEST_NAME}" >> "%LOG%" 2>&1',
        *_fail_if("if errorlevel 1", "copy_failed", f"copy {SELFTEST_NAME}"),
        f'{schtasks_line(settings)} >> "%LOG%" 2>&1',
        *_fail_if("if errorlevel 1", "schtasks_failed", f"schtasks /Create {TASK_NAME}"),
        _say("STEP^|task=" + TASK_NAME),
        'echo [%DATE% %TIME%] provisioning done>> "%LOG%"',
        _say("DONE"),
        # A clean shutdown: the selftest task runs from the next boot on (with test signing active).
        "shutdown /s /t 15 /d p:4:1",
        "exit /b 0",
    ]
    return "\r\n".join(lines) + "\r\n"


# --- autounattend.xml -------------------------------------------------------


def _component(parent: ET.Element, name: str, arch: str) -> ET.Element:
    return ET.SubElement(parent, "component", {
        "name": name, "processorArchitecture": arch, "publicKeyToken": "31bf3856ad364e35",
        "language": "neutral", "versionScope": "nonSxS",
    })


def _text(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = text
    return element


def _added(parent: ET.Element, tag: str, key: Optional[str] = None) -> ET.Element:
    attrs = {f"{{{WCM_NS}}}action": "add"}
    if key is not None:
        attrs[f"{{{WCM_NS}}}keyValue"] = key
    return ET.SubElement(parent, tag, attrs)


def driver_paths(settings: GuestSettings) -> List[str]:
    """Where WinPE looks for the storage and network drivers: every drive letter the CD may have.

    The input, tablet and sound drivers are left to provision.cmd: Setup does not need them.
    """
    infs = [inf for inf in settings.driver_infs() if inf.lower() not in NOT_IN_WINPE]
    return [f"{letter}:\\drivers\\{inf}" for inf in infs for letter in DRIVE_LETTERS[:8]]


def autounattend_xml(settings: GuestSettings) -> bytes:
    ET.register_namespace("", UNATTEND_NS)
    ET.register_namespace("wcm", WCM_NS)
    arch = settings.arch
    # Tags are written bare and qualified with the unattend namespace at the end.
    root = ET.Element("unattend")
    pe = ET.SubElement(root, "settings", {"pass": "windowsPE"})
    intl = _component(pe, "Microsoft-Windows-International-Core-WinPE", arch)
    _text(ET.SubElement(intl, "SetupUILanguage"), "UILanguage", "en-US")
    for tag in ("InputLocale", "SystemLocale", "UILanguage", "UserLocale"):
        _text(intl, tag, "en-US")
    pnp = _component(pe, "Microsoft-Windows-PnpCustomizationsWinPE", arch)
    paths = ET.SubElement(pnp, "DriverPaths")
    for index, path in enumerate(driver_paths(settings), start=1):
        entry = _added(paths, "PathAndCredentials", str(index))
        _text(entry, "Path", path)
    setup = _component(pe, "Microsoft-Windows-Setup", arch)
    disk_config = ET.SubElement(setup, "DiskConfiguration")
    disk = _added(disk_config, "Disk")
    _text(disk, "DiskID", "0")
    _text(disk, "WillWipeDisk", "true")
    create = _added(ET.SubElement(disk, "CreatePartitions"), "CreatePartition")
    for tag, value in (("Order", "1"), ("Type", "Primary"), ("Extend", "true")):
        _text(create, tag, value)
    modify = _added(ET.SubElement(disk, "ModifyPartitions"), "ModifyPartition")
    for tag, value in (("Order", "1"), ("PartitionID", "1"), ("Format", "NTFS"), ("Label", "Windows"),
                       ("Letter", "C"), ("Active", "true")):
        _text(modify, tag, value)
    _text(disk_config, "WillShowUI", "OnError")
    image = ET.SubElement(setup, "ImageInstall")
    os_image = ET.SubElement(image, "OSImage")
    if settings.edition is not None or settings.image_index is not None:
        # Which image of install.wim: without it a multi-edition ISO stops at the edition picker.
        metadata = _added(ET.SubElement(os_image, "InstallFrom"), "MetaData")
        if settings.edition is not None:
            _text(metadata, "Key", "/IMAGE/NAME")
            _text(metadata, "Value", settings.edition)
        else:
            _text(metadata, "Key", "/IMAGE/INDEX")
            _text(metadata, "Value", str(settings.image_index))
    install_to = ET.SubElement(os_image, "InstallTo")
    _text(install_to, "DiskID", "0")
    _text(install_to, "PartitionID", "1")
    _text(os_image, "WillShowUI", "OnError")
    user = ET.SubElement(setup, "UserData")
    _text(user, "AcceptEula", "true")
    _text(user, "FullName", "Aero")
    _text(user, "Organization", "Aero")
    if settings.product_key:
        key = ET.SubElement(user, "ProductKey")
        _text(key, "Key", settings.product_key)
        _text(key, "WillShowUI", "OnError")

    specialize = ET.SubElement(root, "settings", {"pass": "specialize"})
    shell = _component(specialize, "Microsoft-Windows-Shell-Setup", arch)
    _text(shell, "ComputerName", settings.computer_name)

    oobe_pass = ET.SubElement(root, "settings", {"pass": "oobeSystem"})
    shell = _component(oobe_pass, "Microsoft-Windows-Shell-Setup", arch)
    oobe = ET.SubElement(shell, "OOBE")
    for tag, value in (("HideEULAPage", "true"), ("NetworkLocation", "Work"), ("ProtectYourPC", "3"),
                       ("SkipMachineOOBE", "true"), ("SkipUserOOBE", "true")):
        _text(oobe, tag, value)
    accounts = ET.SubElement(shell, "UserAccounts")
    local = _added(ET.SubElement(accounts, "LocalAccounts"), "LocalAccount")
    password = ET.SubElement(local, "Password")
    _text(password, "Value", settings.admin_password)
    _text(password, "PlainText", "true")
    for tag, value in (("Group", "Administrators"), ("Name", "aero"), ("DisplayName", "Aero")):
        _text(local, tag, value)
    logon = ET.SubElement(shell, "AutoLogon")
    logon_password = ET.SubElement(logon, "Password")
    _text(logon_password, "Value", settings.admin_password)
    _text(logon_password, "PlainText", "true")
    for tag, value in (("Enabled", "true"), ("LogonCount", "1"), ("Username", "aero")):
        _text(logon, tag, value)
    commands = ET.SubElement(shell, "FirstLogonCommands")
    command = _added(commands, "SynchronousCommand")
    _text(command, "Order", "1")
    _text(command, "CommandLine", first_logon_command())
    _text(command, "Description", "Aero virtio selftest provisioning")
    _text(command, "RequiresUserInput", "false")

    for element in root.iter():
        element.tag = f"{{{UNATTEND_NS}}}{element.tag}"
    ET.indent(root)
    buf = io.BytesIO()
    ET.ElementTree(root).write(buf, encoding="utf-8", xml_declaration=True)
    return buf.getvalue()


def first_logon_command() -> str:
    """Find the media by its marker file and run provision.cmd from it; say so on COM1 when no drive has it.

    ``exit /b`` outside a batch file ends this cmd.exe, so the FAIL line runs only when no drive
    matched. The body of the for loop is in parentheses: Wine's cmd skips an unwrapped
    ``do if ... (...)`` without a word, and Windows' reads both forms alike.
    """
    letters = " ".join(DRIVE_LETTERS)
    return (f"cmd /q /c (for %i in ({letters}) do (if exist %i:\\{MARKER} (call %i:\\provision.cmd & exit /b)))"
            f" & {_say('FAIL^|reason=media_not_found')}")


# --- the media --------------------------------------------------------------


def find_infs(drivers: Path, wanted: Sequence[str]) -> Dict[str, Path]:
    """Each allow-listed INF, found once under ``drivers``: missing or doubled ones are errors."""
    if not drivers.is_dir():
        raise UsageError(f"--drivers {drivers} is not a folder")
    found: Dict[str, List[Path]] = {name.lower(): [] for name in wanted}
    for path in drivers.rglob("*"):
        if path.is_file() and path.suffix.lower() == ".inf" and path.stem.lower() in found:
            found[path.stem.lower()].append(path)
    missing = [name for name in wanted if not found[name.lower()]]
    if missing:
        raise UsageError(f"no {', '.join(m + '.inf' for m in missing)} under {drivers}",
                         hint="point --drivers at the driver build output, or change the allow-list with --inf")
    doubled = {name: paths for name, paths in found.items() if len(paths) > 1}
    if doubled:
        details = "; ".join(f"{name}.inf at {', '.join(str(p) for p in paths)}" for name, paths in doubled.items())
        raise UsageError(f"more than one INF of the same name: {details}",
                         hint="keep one build per driver in the folder given to --drivers")
    return {name: found[name.lower()][0] for name in wanted}


@dataclass(frozen=True)
class MediaFile:
    path: str  # inside the media, with / separators
    data: bytes


def media_files(drivers: Path, selftest: Path, settings: GuestSettings) -> List[MediaFile]:
    settings.validate()
    if not selftest.is_file():
        raise UsageError(f"--selftest {selftest} is not a file")
    files = [
        MediaFile(MARKER, b"Aero virtio selftest provisioning media\r\n"),
        MediaFile("provision.cmd", provision_cmd(settings).encode("ascii")),
        MediaFile("autounattend.xml", autounattend_xml(settings)),
        MediaFile(f"AeroTests/{SELFTEST_NAME}", selftest.read_bytes()),
    ]
    public = asdict(settings)
    public.pop("product_key")
    public["driver_infs"] = list(settings.driver_infs())
    public["selftest_argv"] = selftest_argv(settings)
    public["schtasks"] = schtasks_line(settings)
    files.append(MediaFile("provision.json", (json.dumps(public, indent=2) + "\n").encode()))
    for name, inf in find_infs(drivers, settings.driver_infs()).items():
        package = inf.parent
        for path in sorted(package.rglob("*")):
            if path.is_file():
                rel = path.relative_to(package).as_posix()
                if path == inf:
                    rel = f"{name}.inf"
                files.append(MediaFile(f"drivers/{name}/{rel}", path.read_bytes()))
    return files


def _iso_name(name: str, taken: Set[str], is_dir: bool) -> str:
    """An ISO 9660 level-1 name (8.3, upper case), unique in its folder; Joliet keeps the real one."""
    stem, _, ext = name.upper().rpartition(".") if "." in name and not is_dir else (name.upper(), "", "")
    clean = re.sub(r"[^A-Z0-9_]", "_", stem)[:8] or "_"
    ext = re.sub(r"[^A-Z0-9_]", "_", ext)[:3]
    candidate = clean
    counter = 1
    while (candidate + ("." + ext if ext else "")) in taken:
        suffix = f"_{counter}"
        candidate = clean[: 8 - len(suffix)] + suffix
        counter += 1
    full = candidate + ("." + ext if ext else "")
    taken.add(full)
    return full


def write_iso(files: Sequence[MediaFile], out: Path, volume: str = "AERO_PROVISION") -> None:
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, joliet=3, vol_ident=volume)
    dirs: Dict[str, str] = {"": "/"}  # joliet folder -> iso folder
    taken: Dict[str, Set[str]] = {"/": set()}
    for item in files:
        parts = PurePosixPath(item.path).parts
        for depth in range(1, len(parts)):
            joliet_dir = "/".join(parts[:depth])
            if joliet_dir not in dirs:
                parent = dirs["/".join(parts[: depth - 1])]
                iso_dir = parent.rstrip("/") + "/" + _iso_name(parts[depth - 1], taken.setdefault(parent, set()), True)
                iso.add_directory(iso_dir, joliet_path="/" + joliet_dir)
                dirs[joliet_dir] = iso_dir
                taken[iso_dir] = set()
        parent = dirs["/".join(parts[:-1])]
        for part in parts:
            if len(part) > 64:
                raise UsageError(f"{item.path}: the name {part!r} is longer than the 64 characters Joliet allows")
        iso_path = parent.rstrip("/") + "/" + _iso_name(parts[-1], taken.setdefault(parent, set()), False) + ";1"
        iso.add_fp(io.BytesIO(item.data), len(item.data), iso_path, joliet_path="/" + item.path)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    iso.write(str(partial))
    iso.close()
    partial.replace(out)


def build_media(drivers: Path, selftest: Path, settings: GuestSettings, out: Path) -> List[MediaFile]:
    files = media_files(drivers, selftest, settings)
    write_iso(files, out)
    return files
