"""provision.cmd and the first-logon command of autounattend.xml, run under Wine's cmd.

What runs: the media as provision-media writes it (the ISO, read back), mapped to drive D:;
the FirstLogonCommands line taken from its autounattend.xml and started with CreateProcessW
as Windows starts it; COM1 a pty whose other end these tests read; and first on PATH fake
pnputil, bcdedit, schtasks, reg and shutdown: real Windows programs (tests/wine/fake_tool.c,
built with mingw-w64) that record their command line and the argv the C runtime makes of it,
and exit with the code a test sets. The selftest on the media is that fake too, so the
scheduled task's command line can be started once more and the selftest's own argv read.

One Wine prefix serves the whole module (about 8 s to create); each run takes under a second.
Without Wine or mingw-w64 the module is skipped with a message; under CI=true it fails.
"""

from __future__ import annotations

import io
import json
import os
import pty
import shutil
import subprocess
import threading
import time
import tty
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pycdlib
import pytest

from images.provision import (
    INPUT_SERVICE_PARAMETERS,
    MARKER,
    SELFTEST_NAME,
    UNATTEND_NS,
    GuestSettings,
    autounattend_xml,
    build_media,
    provision_cmd,
    selftest_argv,
    task_line,
)
from tests.test_provision import command_line_to_argv, make_drivers

pytestmark = pytest.mark.wine

FAKE_SOURCE = Path(__file__).with_name("wine") / "fake_tool.c"
TOOLS = ("pnputil", "bcdedit", "schtasks", "reg", "shutdown")
MINGW = "x86_64-w64-mingw32-gcc"
RUN_TIMEOUT = 60.0


def _unavailable(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: these tests must run here)")
    pytest.skip(message)


def _find_wine() -> Optional[Path]:
    for name in ("wine64", "wine"):
        found = shutil.which(name)
        if found:
            return Path(found)
    debian = Path("/usr/lib/wine/wine64")  # Debian's wine64 without the wine package's wrapper
    return debian if debian.exists() else None


class SerialPort:
    """A pty that Wine's COM1 writes to; a thread collects what arrives."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)  # bytes as written: no CR added, no echo
        self.path = os.ttyname(self.slave)
        self._data = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, name="wine-com1", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self._data += chunk

    def take(self, settle: float = 0.2) -> List[str]:
        """The lines written since the last call, once nothing more has arrived for ``settle`` seconds."""
        size = -1
        while True:
            with self._lock:
                if len(self._data) == size:
                    data = bytes(self._data)
                    self._data.clear()
                    break
                size = len(self._data)
            time.sleep(settle)
        return [line.rstrip("\r") for line in data.decode("ascii", "replace").split("\n") if line.strip("\r")]

    def close(self) -> None:
        os.close(self.slave)
        os.close(self.master)
        self._thread.join(timeout=5)


@dataclass
class Run:
    code: int
    com1: List[str]
    calls: List[Dict[str, object]]  # one per fake tool started: tool, raw, argv
    log: str  # C:\aero-win7-provision.log
    stdout: str
    stderr: str

    def of(self, tool: str) -> List[Dict[str, object]]:
        return [call for call in self.calls if call["tool"] == tool]


class Wine:
    """One prefix, one persistent wineserver, COM1 on a pty, the fakes in C:\\fakes."""

    def __init__(self, root: Path, wine: Path, fake_exe: Path) -> None:
        self.root = root
        self.wine = wine
        self.fake_exe = fake_exe
        self.prefix = root / "prefix"
        self.drive_c = self.prefix / "drive_c"
        server = wine.with_name("wineserver")
        self.wineserver = server if server.exists() else Path(shutil.which("wineserver") or "wineserver")
        self.env = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "WAYLAND_DISPLAY")}
        self.env.update(WINEPREFIX=str(self.prefix), WINEDEBUG="-all", WINEARCH="win64",
                        WINEDLLOVERRIDES="mscoree,mshtml=")
        self.com1 = SerialPort()
        self.server: Optional[subprocess.Popen[bytes]] = None
        self.runs = 0

    def start(self) -> None:
        # Creates the prefix; COM1 goes to the pty (Wine's mount manager makes dosdevices/com1 from this key).
        self._wine("reg", "add", r"HKLM\Software\Wine\Ports", "/v", "COM1", "/d", self.com1.path, "/f")
        subprocess.run([str(self.wineserver), "-k"], env=self.env, timeout=30)
        subprocess.run([str(self.wineserver), "-w"], env=self.env, timeout=30)
        # One server for every run (no start-up per run); ours to stop.
        self.server = subprocess.Popen([str(self.wineserver), "-f", "-p"], env=self.env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Starts Wine's services under that server (a client that comes before the server is ready waits
        # for it); they outlive every run and hold on to the standard handles they inherit, so they get
        # /dev/null and runs write to files.
        self._wine("cmd", "/c", "ver")
        self._link("com1", self.com1.path)
        fakes = self.drive_c / "fakes"
        fakes.mkdir()
        for tool in (*TOOLS, "runline"):
            shutil.copyfile(self.fake_exe, fakes / f"{tool}.exe")

    def _wine(self, *args: str) -> None:
        subprocess.run([str(self.wine), *args], env=self.env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120, check=True)

    def _link(self, name: str, target: Optional[str]) -> None:
        link = self.prefix / "dosdevices" / name
        if link.is_symlink() or link.exists():
            link.unlink()
        if target is not None:
            link.symlink_to(target)

    def run(self, command_line: str, media: Optional[Path], fresh: bool = True, **fake_env: str) -> Run:
        """Start ``command_line`` as CreateProcessW does, with ``media`` as D: and the fakes first on PATH.

        ``fresh``: remove what an earlier run left on C: (its log, the copied selftest).
        """
        self._link("d:", str(media) if media is not None else None)
        (self.drive_c / "fake-calls.log").unlink(missing_ok=True)
        if fresh:
            (self.drive_c / "aero-win7-provision.log").unlink(missing_ok=True)
            shutil.rmtree(self.drive_c / "AeroTests", ignore_errors=True)
        (self.drive_c / "command-line.txt").write_bytes(command_line.encode("utf-8"))
        self.com1.take(settle=0.05)
        env = dict(self.env, AERO_FAKE_LOG="C:\\fake-calls.log", AERO_FAKE_PATH="C:\\fakes", **fake_env)
        self.runs += 1
        out, err = self.root / f"run-{self.runs}.out", self.root / f"run-{self.runs}.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.run([str(self.wine), "C:\\fakes\\runline.exe", "C:\\command-line.txt"], env=env,
                                  stdout=stdout, stderr=stderr, timeout=RUN_TIMEOUT)
        calls_file = self.drive_c / "fake-calls.log"
        calls = [json.loads(line) for line in calls_file.read_text("utf-8").splitlines()] if calls_file.exists() else []
        log_file = self.drive_c / "aero-win7-provision.log"
        return Run(proc.returncode, self.com1.take(), calls, log_file.read_text("ascii", "replace")
                   if log_file.exists() else "", out.read_text("utf-8", "replace"), err.read_text("utf-8", "replace"))

    def close(self) -> None:
        subprocess.run([str(self.wineserver), "-k"], env=self.env, timeout=30)
        if self.server is not None:
            try:
                self.server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        self.com1.close()


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wine]:
    binary = _find_wine()
    if binary is None:
        _unavailable("Wine is not installed: apt-get install wine64 (.ci/setup does)")
    if shutil.which(MINGW) is None:
        _unavailable(f"{MINGW} is not installed: apt-get install gcc-mingw-w64-x86-64 (.ci/setup does)")
    assert binary is not None
    root = tmp_path_factory.mktemp("wine")
    fake = root / "fake.exe"
    subprocess.run([MINGW, "-municode", "-O2", "-s", "-Wall", "-o", str(fake), str(FAKE_SOURCE)],
                   check=True, timeout=120)
    instance = Wine(root, binary, fake)
    try:
        instance.start()
        yield instance
    finally:
        instance.close()


@pytest.fixture(scope="module")
def drivers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_drivers(tmp_path_factory.mktemp("drivers") / "build output")


def media_for(wine: Wine, drivers: Path, settings: GuestSettings, name: str) -> Path:
    """The media as provision-media writes it, read back from the ISO into a folder (a name with spaces)."""
    out = wine.root / name
    if out.exists():
        return out / "media with spaces"
    iso_path = wine.root / f"{name}.iso"
    build_media(drivers, wine.fake_exe, settings, iso_path)
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        for folder, _dirs, files in iso.walk(joliet_path="/"):
            for file_name in files:
                joliet = folder.rstrip("/") + "/" + file_name
                target = out / "media with spaces" / joliet.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, joliet_path=joliet)
                target.write_bytes(buf.getvalue())
    finally:
        iso.close()
    return out / "media with spaces"


def first_logon_line(media: Path) -> str:
    root = ET.fromstring((media / "autounattend.xml").read_bytes())
    command = root.find(".//u:FirstLogonCommands/u:SynchronousCommand/u:CommandLine", {"u": UNATTEND_NS})
    assert command is not None and command.text
    return command.text


def lines(*what: str) -> List[str]:
    return [f"AERO_PROVISION|{w}" for w in what]


def success_lines(settings: GuestSettings) -> List[str]:
    return lines("START|media=D:", *(["STEP|input_compat=on"] if settings.input_compat else []),
                 *(f"STEP|inf={inf}" for inf in settings.driver_infs()), "STEP|testsigning=on",
                 "STEP|task=AeroVirtioSelftest", "DONE")


def registered_task_line(run: Run) -> str:
    """The /TR value as schtasks' C runtime parsed it."""
    (call,) = run.of("schtasks")
    argv = call["argv"]
    assert isinstance(argv, list)
    return str(argv[argv.index("/TR") + 1])


def test_first_logon_command_provisions_from_the_media(wine: Wine, drivers: Path) -> None:
    settings = GuestSettings(with_virtio_snd=True)
    media = media_for(wine, drivers, settings, "default")
    run = wine.run(first_logon_line(media), media)
    assert run.com1 == success_lines(settings), run.stderr
    assert run.code == 0
    assert [c["argv"] for c in run.of("pnputil")] == [
        ["pnputil", "-i", "-a", f"D:\\drivers\\{inf}\\{inf}.inf"] for inf in settings.driver_infs()]
    for inf in settings.driver_infs():
        assert (media / "drivers" / inf / f"{inf}.inf").is_file()
    assert [c["argv"] for c in run.of("reg")] == [
        ["reg", "add", INPUT_SERVICE_PARAMETERS, "/v", "CompatIdName", "/t", "REG_DWORD", "/d", "1", "/f"]]
    assert [c["argv"] for c in run.of("bcdedit")] == [["bcdedit", "/set", "testsigning", "on"]]
    assert [c["argv"] for c in run.of("shutdown")] == [["shutdown", "/s", "/t", "15", "/d", "p:4:1"]]
    assert [c["tool"] for c in run.calls] == ["reg", *["pnputil"] * len(settings.driver_infs()), "bcdedit",
                                              "schtasks", "shutdown"]
    copied = wine.drive_c / "AeroTests" / SELFTEST_NAME
    assert copied.read_bytes() == (media / "AeroTests" / SELFTEST_NAME).read_bytes()
    assert "provisioning done" in run.log


def test_without_the_compat_value_no_reg(wine: Wine, drivers: Path) -> None:
    settings = GuestSettings(input_compat=False, test_switches=("--test-input-events",))
    media = media_for(wine, drivers, settings, "no-compat")
    run = wine.run(first_logon_line(media), media)
    assert run.com1 == success_lines(settings)
    assert run.of("reg") == []


def test_no_media_is_a_fail_line_from_the_first_logon_command(wine: Wine) -> None:
    run = wine.run(first_logon_line(media_for_text(wine)), None)
    assert run.com1 == lines("FAIL|reason=media_not_found")
    assert run.calls == []


def media_for_text(wine: Wine) -> Path:
    """A folder holding only autounattend.xml (the first-logon line is read from it, never mapped)."""
    folder = wine.root / "autounattend-only"
    if not folder.exists():
        folder.mkdir()
        (folder / "autounattend.xml").write_bytes(autounattend_xml(GuestSettings()))
    return folder


def test_provision_cmd_without_its_media_says_so(wine: Wine) -> None:
    # provision.cmd started from elsewhere (C:\) while no drive holds the marker file.
    (wine.drive_c / "provision.cmd").write_bytes(provision_cmd(GuestSettings()).encode("ascii"))
    run = wine.run("cmd /c C:\\provision.cmd", None)
    assert run.com1 == lines("FAIL|reason=media_not_found")
    assert run.code == 1
    assert run.calls == []
    assert f"FAIL: no drive from D: to Z: holds {MARKER}" in run.log
    assert "recognize" not in run.stderr  # nothing of the echoed text ran as a command


@pytest.mark.parametrize("tool, exit_env, reason, before", [
    ("pnputil", {"AERO_FAKE_EXIT_PNPUTIL_IF": "aero_virtio_net"}, "pnputil_failed|inf=aero_virtio_net",
     ["STEP|input_compat=on", "STEP|inf=aero_virtio_blk"]),
    ("reg", {}, "reg_failed", []),
    ("bcdedit", {}, "testsigning_failed", ["STEP|input_compat=on", "STEP|inf=aero_virtio_blk",
                                           "STEP|inf=aero_virtio_net", "STEP|inf=aero_virtio_input",
                                           "STEP|inf=aero_virtio_tablet"]),
    ("schtasks", {}, "schtasks_failed", ["STEP|input_compat=on", "STEP|inf=aero_virtio_blk",
                                         "STEP|inf=aero_virtio_net", "STEP|inf=aero_virtio_input",
                                         "STEP|inf=aero_virtio_tablet", "STEP|testsigning=on"]),
])
def test_a_failing_tool_is_a_fail_line(wine: Wine, drivers: Path, tool: str, exit_env: Dict[str, str],
                                       reason: str, before: List[str]) -> None:
    media = media_for(wine, drivers, GuestSettings(), "default-settings")
    run = wine.run(first_logon_line(media), media, **{f"AERO_FAKE_EXIT_{tool.upper()}": "1"}, **exit_env)
    # What install-win7 reads is COM1. (The exit code of the first-logon command is not checked: Wine's
    # `call` turns a batch file's exit code into 1, where Windows passes it on.)
    assert run.com1 == lines("START|media=D:", *before, f"FAIL|reason={reason}")
    assert run.of("shutdown") == []


def test_copy_failure_is_a_fail_line(wine: Wine, drivers: Path) -> None:
    media = media_for(wine, drivers, GuestSettings(), "no-selftest")
    (media / "AeroTests" / SELFTEST_NAME).unlink()
    run = wine.run(first_logon_line(media), media)
    assert run.com1[-1] == "AERO_PROVISION|FAIL|reason=copy_failed"
    assert run.com1[-2] == "AERO_PROVISION|STEP|testsigning=on"
    assert run.of("schtasks") == [] and run.of("shutdown") == []


TASK_CASES = {
    "defaults": GuestSettings(),
    "drive root": GuestSettings(blk_root="D:\\", udp_port=28081),
    "spaces, trailing backslash": GuestSettings(blk_root="D:\\Aero Tests\\", http_url="http://10.0.2.2:28080/x"),
    "two trailing backslashes": GuestSettings(blk_root="E:\\dir with space\\\\"),
    "switches with values": GuestSettings(
        blk_root="F:\\x", test_switches=("--test-net-link-flap",),
        guest_switches=("expect-blk-msi", "net-timeout-sec=90", "log-file=C:\\Aero Logs\\selftest.log",
                        "disable-snd")),
}


@pytest.mark.parametrize("case", list(TASK_CASES))
def test_the_task_gives_the_selftest_exactly_the_served_arguments(wine: Wine, drivers: Path, case: str) -> None:
    settings = replace(TASK_CASES[case], input_compat=False, infs=("aero_virtio_blk",))
    media = media_for(wine, drivers, settings, "task " + case.replace(",", ""))
    run = wine.run(first_logon_line(media), media)
    assert run.com1[-1] == "AERO_PROVISION|DONE", run.com1
    (schtasks,) = run.of("schtasks")
    # The first round: schtasks' C runtime and this repository's own parser agree.
    assert schtasks["argv"] == command_line_to_argv(str(schtasks["raw"]))
    line = registered_task_line(run)
    assert line == task_line(settings)
    # The second round, as the selftest's runtime parses the task's command line (CommandLineToArgvW rules) ...
    assert command_line_to_argv(line) == selftest_argv(settings)
    # ... and as the C runtime of a real program started with it does (the copied selftest is the fake).
    again = wine.run(line, None, fresh=False)
    (selftest,) = again.of("aero-virtio-selftest")
    assert selftest["argv"] == selftest_argv(settings)
