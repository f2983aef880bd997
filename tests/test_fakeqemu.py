"""The fake qemu-system-x86_64 (tests/fakeqemu): a real program speaking real QMP.

Each test starts the fake with the command line harness.qemu_argv builds and talks to
it with the real qemu.qmp client (the legacy synchronous one and the async QMPClient),
so a harness test that uses the fake can trust what it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from qemu.qmp import ExecuteError, QMPClient
from qemu.qmp.legacy import QEMUMonitorProtocol

from harness.qemu_argv import QemuSpec, build_argv
from tests.fakeqemu import FAKE_QEMU, records, script_env

pytestmark = pytest.mark.fake

ROOT = Path(__file__).resolve().parents[1]
HTTP_PORT, UDP_PORT = 27480, 27481
LINE = "AERO_VIRTIO_SELFTEST|"


@dataclass
class Fake:
    proc: subprocess.Popen[bytes]
    qmp_socket: Path
    serial: Path
    env: Dict[str, str]

    def wait_socket(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.qmp_socket.exists():
            assert self.proc.poll() is None, f"the fake exited with {self.proc.returncode}"
            assert time.monotonic() < deadline, "no QMP socket"
            time.sleep(0.01)

    def serial_bytes(self) -> bytes:
        return self.serial.read_bytes() if self.serial.exists() else b""

    def wait_serial(self, needle: bytes, timeout: float = 2.0) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.serial_bytes():
            assert time.monotonic() < deadline, f"{needle!r} never reached the serial log: {self.serial_bytes()!r}"
            time.sleep(0.01)
        return self.serial_bytes()

    def wait_exit(self, timeout: float = 2.0) -> int:
        return self.proc.wait(timeout=timeout)

    def alive_after(self, seconds: float) -> bool:
        time.sleep(seconds)
        return self.proc.poll() is None

    def stderr(self) -> str:
        assert self.proc.stderr is not None and self.proc.poll() is not None
        return self.proc.stderr.read().decode()

    @property
    def commands(self) -> List[str]:
        return [r["command"] for r in records(self.env["FAKE_QEMU_RECORD"])]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # A Unix socket path must stay under 108 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="fq-") as tmp:
        yield Path(tmp)


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(b"\0" * 65536)
    return path


@contextlib.contextmanager
def fake(tmp_path: Path, short_dir: Path, disk: Path, *extra: str, **script: Any) -> Iterator[Fake]:
    """The fake, started as the harness starts QEMU; never left running."""
    env = script_env(tmp_path, **script)
    qmp_socket, serial = short_dir / "qmp.sock", tmp_path / "serial.log"
    if qmp_socket.exists():  # left by a fake killed earlier in the test, as QEMU leaves it; the harness does this too
        qmp_socket.unlink()
    argv = build_argv(QemuSpec(
        qemu=str(FAKE_QEMU), disk=str(disk), disk_format="raw", serial_log=str(serial), qmp_socket=str(qmp_socket),
        extra=tuple(extra),
    ))
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield Fake(proc, qmp_socket, serial, env)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)
        assert proc.stderr is not None
        proc.stderr.close()


def run_fake(tmp_path: Path, *args: str, **script: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FAKE_QEMU), *args], env=script_env(tmp_path, **script), capture_output=True,
                          text=True, timeout=10)


@contextlib.contextmanager
def legacy(vm: Fake) -> Iterator[QEMUMonitorProtocol]:
    """The synchronous client, connected and negotiated."""
    vm.wait_socket()
    qmp = QEMUMonitorProtocol(str(vm.qmp_socket))
    qmp.settimeout(2.0)
    try:
        qmp.connect()
        yield qmp
    finally:
        with contextlib.suppress(EOFError):  # qemu.qmp re-raises the EOF of a QEMU that has exited
            qmp.close()


def events_until(qmp: QEMUMonitorProtocol, last: str) -> List[Any]:
    """(name, data) of each event up to ``last``; the legacy client reads only while it is called."""
    events = []
    while not events or events[-1][0] != last:
        event = qmp.pull_event(wait=2.0)
        events.append((event["event"], event.get("data")))
    return events


def async_qmp(vm: Fake, body: Any) -> Any:
    """Run ``body(client)`` with a connected QMPClient."""
    vm.wait_socket()

    async def go() -> Any:
        client = QMPClient("test")
        await asyncio.wait_for(client.connect(str(vm.qmp_socket)), 2.0)
        try:
            return await asyncio.wait_for(body(client), 5.0)
        finally:
            with contextlib.suppress(EOFError):  # a QEMU that has exited
                await client.disconnect()

    return asyncio.run(go())


def steps(*texts: str, after: float = 0.02) -> List[Dict[str, Any]]:
    return [{"after": after, "write": text} for text in texts]


# --- probes and the command line ------------------------------------------------------


def test_version_and_help_probes(tmp_path: Path) -> None:
    version = run_fake(tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.startswith("QEMU emulator version 7.2.22 (fake)\n")
    assert run_fake(tmp_path, "-version", version="10.0.2").stdout.startswith("QEMU emulator version 10.0.2 ")

    assert "\n-action panic=pause|shutdown|exit-failure|none\n" in run_fake(tmp_path, "-help").stdout
    assert "\n-action" not in run_fake(tmp_path, "-help", version="5.2.0").stdout  # -action came with 6.0


def test_device_probes_answer_in_qemus_format(tmp_path: Path) -> None:
    devices = run_fake(tmp_path, "-device", "help").stdout
    assert 'name "virtio-net-pci", bus PCI, alias "virtio-net"\n' in devices
    assert 'name "virtio-keyboard-pci", bus PCI, alias "virtio-keyboard"\n' in devices
    assert "virtio-sound-pci" not in devices  # QEMU 8.2 and later
    assert 'name "virtio-sound-pci", bus PCI' in run_fake(tmp_path, "-device", "help", version="8.2.0").stdout

    props = run_fake(tmp_path, "-device", "virtio-net-pci,help")
    assert props.returncode == 0 and props.stdout.startswith("virtio-net-pci options:\n")
    assert '  disable-legacy=<OnOffAuto> - on/off/auto (default: "auto")\n' in props.stdout
    assert "  vectors=<uint32>       -  (default: 4294967295)\n" in props.stdout
    assert "x-pci-revision" not in props.stdout  # neither 7.2 nor 10.0 has it
    extended = run_fake(tmp_path, "-device", "virtio-net-pci,help", properties={"virtio-net-pci": ["x-pci-revision"]})
    assert "  x-pci-revision=<str>\n" in extended.stdout

    # Like QEMU 7.2: an unknown device's help is a message on stderr, and exit code 0.
    missing = run_fake(tmp_path, "-device", "virtio-sound-pci,help")
    assert (missing.returncode, missing.stdout) == (0, "")
    assert missing.stderr == "qemu-system-x86_64: -device virtio-sound-pci,help: Device 'virtio-sound-pci' not found\n"


def test_command_lines_qemu_refuses(tmp_path: Path, short_dir: Path, disk: Path) -> None:
    cases = {
        ("-device", "virtio-sound-pci"): "'virtio-sound-pci' is not a valid device model name",
        ("-device", "virtio-net-pci,netdev=net0,x-pci-revision=0x01"):
            "Property 'virtio-net-pci.x-pci-revision' not found",
        ("-device", "virtio-blk-pci,drive=nosuch"): "Property 'virtio-blk-device.drive' can't find value 'nosuch'",
        ("-drive", "file=/nonexistent/x.img,if=none,id=d9"): "Could not open '/nonexistent/x.img'",
    }
    for extra, message in cases.items():
        with fake(tmp_path, short_dir, disk, *extra) as vm:
            assert vm.wait_exit() == 1
            assert message in vm.stderr()
            assert not vm.qmp_socket.exists()


# --- QMP --------------------------------------------------------------------------------


def test_greeting_capabilities_and_errors(tmp_path: Path, short_dir: Path, disk: Path) -> None:
    with fake(tmp_path, short_dir, disk) as vm:
        vm.wait_socket()
        # The file object keeps the socket open: both must close before the next client is served.
        with socket.socket(socket.AF_UNIX) as raw, contextlib.closing(raw.makefile("rb")) as reader:
            raw.settimeout(2.0)
            raw.connect(str(vm.qmp_socket))
            greeting = reader.readline()
            assert greeting.endswith(b"}\r\n")
            assert json.loads(greeting) == {"QMP": {
                "version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "fake"},
                "capabilities": ["oob"],
            }}
            # Two messages in one write, then one split over two writes: QEMU needs no newline.
            raw.sendall(b'{"execute": "query-status", "id": 1}{"execute": "qmp_capabilities", "id": "a"}')
            assert json.loads(reader.readline()) == {"id": 1, "error": {
                "class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}
            assert json.loads(reader.readline()) == {"return": {}, "id": "a"}
            raw.sendall(b'{"execute": "query-st')
            time.sleep(0.05)
            raw.sendall(b'atus", "arguments": {"x": 1}}')
            assert json.loads(reader.readline())["error"] == {
                "class": "GenericError", "desc": "Parameter 'x' is unexpected"}
            raw.sendall(b'{"execute": "qmp_capabilities"}\n')
            assert json.loads(reader.readline())["error"]["class"] == "CommandNotFound"
        # One client at a time, as QEMU: the next one is greeted once the first has gone.
        with legacy(vm) as qmp:
            assert qmp.cmd("query-status") == {"status": "prelaunch", "singlestep": False, "running": False}
            assert qmp.cmd("query-version")["qemu"] == {"micro": 22, "minor": 2, "major": 7}
            for missing in ("nosuch", "blockdev-resize"):
                with pytest.raises(ExecuteError) as err:
                    qmp.cmd(missing)
                assert err.value.error_class == "CommandNotFound"
            reply = qmp.cmd_obj({"execute": "set_link", "arguments": {"name": "net0"}})
            assert reply == {"error": {"class": "GenericError", "desc": "Parameter 'up' is missing"}}
        assert vm.commands[:4] == ["query-status", "qmp_capabilities", "query-status", "qmp_capabilities"]


def test_cont_runs_the_scripted_guest_then_it_powers_off(tmp_path: Path, short_dir: Path, disk: Path) -> None:
    text = ["booting\r\n", "junk \u0000\u00ff\r\r\n", LINE + "RESULT|PASS\r\n"]
    with fake(tmp_path, short_dir, disk, serial=steps(*text), then="shutdown") as vm:

        async def body(client: QMPClient) -> List[str]:
            assert await client.execute("query-status") == {"status": "prelaunch", "singlestep": False,
                                                           "running": False}
            await asyncio.sleep(0.2)
            assert vm.serial_bytes() == b""  # a paused guest says nothing
            await client.execute("cont")
            assert (await client.execute("query-status"))["status"] == "running"
            names = []
            async for event in client.events:
                names.append(event["event"])
                assert set(event["timestamp"]) == {"seconds", "microseconds"}
                if event["event"] == "SHUTDOWN":
                    assert event["data"] == {"guest": True, "reason": "guest-shutdown"}
                    break
            return names

        assert async_qmp(vm, body) == ["RESUME", "SHUTDOWN"]
        assert vm.wait_exit() == 0
        assert vm.serial_bytes() == "".join(text).encode("latin-1")
        assert not vm.qmp_socket.exists()  # QEMU removes its socket on exit
        log = records(vm.env["FAKE_QEMU_RECORD"])
        assert [r["command"] for r in log] == ["qmp_capabilities", "query-status", "cont", "query-status"]
        assert log[0]["arguments"] == {"enable": ["oob"]} and log[2]["t"] >= log[1]["t"] + 0.2


def test_query_pci_shapes_for_transitional_and_modern_devices(tmp_path: Path, short_dir: Path, disk: Path) -> None:
    extra = [
        "-drive", f"file={disk},if=none,id=d1,format=raw", "-device", "virtio-blk-pci,drive=d1,id=tblk",
        "-netdev", "user,id=n1", "-device", "virtio-net-pci,netdev=n1,id=tnet",
        "-drive", f"file={disk},if=none,id=d2,format=raw",
        "-device", "virtio-blk-pci,drive=d2,id=mblk,disable-legacy=on",
        "-netdev", "user,id=n2", "-device", "virtio-net-pci,netdev=n2,id=mnet,disable-legacy=on,vectors=0",
        "-device", "virtio-tablet-pci,id=tab",
    ]
    override = {"mnet": {"id": {"device": 0x1000}}}
    with fake(tmp_path, short_dir, disk, *extra, pci_override=override) as vm:
        with legacy(vm) as qmp:
            before = {d["qdev_id"]: d for d in qmp.cmd("query-pci")[0]["devices"]}
            qmp.cmd("cont")
            reply = qmp.cmd("query-pci")
    assert len(reply) == 1 and reply[0]["bus"] == 0
    devices = {d["qdev_id"]: d for d in reply[0]["devices"] if d["qdev_id"]}
    ids = {name: (d["id"]["vendor"], d["id"]["device"], d["id"]["subsystem-vendor"], d["id"]["subsystem"])
           for name, d in devices.items()}
    assert ids["tblk"] == (0x1AF4, 0x1001, 0x1AF4, 2)
    assert ids["tnet"] == (0x1AF4, 0x1000, 0x1AF4, 1)
    assert ids["mblk"] == (0x1AF4, 0x1042, 0x1AF4, 0x1100)
    assert ids["mnet"] == (0x1AF4, 0x1000, 0x1AF4, 0x1100)  # pci_override: a wrong device ID
    assert ids["tab"] == (0x1AF4, 0x1052, 0x1AF4, 0x1100)  # virtio-input is modern-only anyway
    net = devices["tnet"]
    assert set(net) == {"irq_pin", "bus", "qdev_id", "irq", "slot", "class_info", "id", "function", "regions"}
    assert "revision" not in net["id"]
    assert net["class_info"] == {"class": 0x0200, "desc": "Ethernet controller"}
    assert devices["tab"]["class_info"] == {"class": 0x0980}  # QEMU has no description for it
    bars = {name: [(r["bar"], r["type"]) for r in d["regions"]] for name, d in devices.items()}
    assert bars["tnet"] == [(0, "io"), (1, "memory"), (4, "memory"), (6, "memory")]
    assert bars["mblk"] == [(1, "memory"), (4, "memory")]  # no legacy I/O BAR
    assert bars["mnet"] == [(4, "memory"), (6, "memory")]  # vectors=0: no MSI-X BAR
    assert all(r["address"] == -1 for d in before.values() for r in d["regions"] if r["type"] == "io")
    assert net["regions"][0]["address"] >= 0xC000 and net["irq"] in (10, 11)
    addresses = [(d["slot"], d["function"]) for d in reply[0]["devices"]]
    assert len(addresses) == len(set(addresses))


def test_reactions_let_the_guest_see_host_actions(tmp_path: Path, short_dir: Path, disk: Path) -> None:
    key_a = {"type": "key", "data": {"down": True, "key": {"type": "qcode", "data": "a"}}}
    reactions = [
        {"command": "input-send-event", "match": {"events": [{"data": {"key": {"data": "a"}}}]},
         "write": LINE + "TEST|virtio-input-events|PASS\r\n"},
        {"command": "set_link", "match": {"up": False}, "write": "link down\r\n", "once": True},
        {"command": "block_resize", "match": {"device": "drive0"}, "write": "resized\r\n", "after": 0.1},
    ]
    with fake(tmp_path, short_dir, disk, reactions=reactions) as vm:

        async def body(client: QMPClient) -> None:
            with pytest.raises(ExecuteError, match="VM not running"):
                await client.execute("input-send-event", {"events": [key_a]})
            await client.execute("cont")
            with pytest.raises(ExecuteError, match="is not bound to a QemuConsole"):
                await client.execute("input-send-event", {"device": "aero_virtio_kbd0", "events": [key_a]})
            await client.execute("input-send-event", {"events": [key_a]})
            with pytest.raises(ExecuteError) as err:
                await client.execute("set_link", {"name": "nosuch", "up": False})
            assert err.value.error_class == "DeviceNotFound"
            for up in (False, True, False):
                await client.execute("set_link", {"name": "net0", "up": up})
            with pytest.raises(ExecuteError) as err:
                await client.execute("blockdev-resize", {"node-name": "drive0", "size": 1 << 20})
            assert err.value.error_class == "CommandNotFound"
            await client.execute("block_resize", {"device": "drive0", "size": 1 << 20})

        async_qmp(vm, body)
        expected = LINE + "TEST|virtio-input-events|PASS\r\nlink down\r\nresized\r\n"
        assert vm.wait_serial(b"resized\r\n") == expected.encode()


def test_qmp_that_hangs_or_drops_and_sigterm(tmp_path: Path, short_dir: Path, disk: Path) -> None:
    with fake(tmp_path, short_dir, disk, qmp="none") as vm:
        assert vm.alive_after(0.5) and not vm.qmp_socket.exists()
    with fake(tmp_path, short_dir, disk, qmp="close") as vm:
        vm.wait_socket()
        with socket.socket(socket.AF_UNIX) as raw:
            raw.settimeout(2.0)
            raw.connect(str(vm.qmp_socket))
            assert raw.recv(4096).startswith(b'{"QMP": ')
            raw.sendall(b'{"execute": "qmp_capabilities"}')
            assert raw.recv(4096) == b""  # closed without an answer
    with fake(tmp_path, short_dir, disk, qmp="silent") as vm:
        vm.wait_socket()
        client = QMPClient("test")
        with pytest.raises(asyncio.TimeoutError):
            asyncio.run(asyncio.wait_for(client.connect(str(vm.qmp_socket)), 0.5))
        assert vm.proc.poll() is None
        vm.proc.send_signal(signal.SIGTERM)
        assert vm.wait_exit() == 0
        assert "qemu-system-x86_64: terminating on signal 15" in vm.stderr()
        assert not vm.qmp_socket.exists()


def test_exit_at_start_and_a_slow_start(tmp_path: Path, short_dir: Path, disk: Path) -> None:
    message = "-drive file=x: Failed to get shared \"write\" lock"
    with fake(tmp_path, short_dir, disk, exit_at_start={"code": 1, "message": message}) as vm:
        assert vm.wait_exit() == 1
        assert vm.stderr() == f"qemu-system-x86_64: {message}\n"
        assert not vm.qmp_socket.exists()
    with fake(tmp_path, short_dir, disk, exit_at_start={"code": 1, "message": message, "after_socket": True}) as vm:
        vm.wait_socket()
        assert vm.wait_exit() == 1
    with fake(tmp_path, short_dir, disk, start_delay=0.6) as vm:
        time.sleep(0.4)
        assert not vm.qmp_socket.exists() and vm.proc.poll() is None
        vm.wait_socket(timeout=1.0)


def test_quit_and_sigterm_ignored_only_sigkill_stops_it(tmp_path: Path, short_dir: Path, disk: Path) -> None:
    with fake(tmp_path, short_dir, disk, on_quit="ignore", on_sigterm="ignore") as vm:
        with legacy(vm) as qmp:
            assert qmp.cmd("quit") == {}
            assert vm.alive_after(0.3)
            vm.proc.terminate()
            assert vm.alive_after(0.3)
        vm.proc.kill()
        assert vm.wait_exit() == -signal.SIGKILL
    with fake(tmp_path, short_dir, disk) as vm:
        with legacy(vm) as qmp:
            assert qmp.cmd("quit") == {}
            assert events_until(qmp, "SHUTDOWN") == [("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})]
        assert vm.wait_exit() == 0


@pytest.mark.parametrize("then, state, code", [
    ("panic", "guest-panicked", None),  # with pvpanic and -action panic=pause, as the harness runs it
    ("internal-error", "internal-error", None),
    ("exit", None, 3),
    ("reset", None, 0),  # -no-reboot
])
def test_how_the_guest_ends(tmp_path: Path, short_dir: Path, disk: Path, then: str, state: Optional[str],
                            code: Optional[int]) -> None:
    extra = ("-device", "pvpanic", "-action", "panic=pause")
    with fake(tmp_path, short_dir, disk, *extra, serial=steps("bye\r\n"), then=then, exit_code=3) as vm:
        with legacy(vm) as qmp:
            qmp.cmd("cont")
            vm.wait_serial(b"bye\r\n")
            if state is not None:
                time.sleep(0.1)
                assert qmp.cmd("query-status")["status"] == state
                with pytest.raises(ExecuteError, match="Resetting the Virtual Machine is required"):
                    qmp.cmd("cont")
                assert events_until(qmp, "STOP")[0] == ("RESUME", None)
        if code is not None:
            assert vm.wait_exit() == code


def test_firmware_console_and_acpi_powerdown(tmp_path: Path, short_dir: Path, disk: Path) -> None:
    firmware = tmp_path / "firmware.log"
    extra = ("-chardev", f"file,id=fw,path={firmware}", "-device", "isa-debugcon,iobase=0x402,chardev=fw")
    with fake(tmp_path, short_dir, disk, *extra, firmware="No bootable device.\n", on_powerdown="shutdown") as vm:
        with legacy(vm) as qmp:
            assert firmware.read_bytes() == b""  # SeaBIOS has not run yet
            qmp.cmd("cont")
            qmp.cmd("system_powerdown")
            assert vm.wait_exit() == 0
            events = events_until(qmp, "SHUTDOWN")
        assert firmware.read_bytes() == b"No bootable device.\n"
        shutdown = ("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"})
        assert events == [("RESUME", None), ("POWERDOWN", None), shutdown]


def test_screendump_writes_png_or_ppm(tmp_path: Path, short_dir: Path, disk: Path) -> None:
    with fake(tmp_path, short_dir, disk) as vm:
        with legacy(vm) as qmp:
            qmp.cmd("screendump", filename=str(tmp_path / "screen.png"), format="png")
            qmp.cmd("screendump", filename=str(tmp_path / "screen.ppm"))
    png = (tmp_path / "screen.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == (720, 400)
    assert (tmp_path / "screen.ppm").read_bytes().startswith(b"P6\n720 400\n255\n")
    with fake(tmp_path, short_dir, disk, version="7.0.0") as vm:  # PNG came with 7.1
        with legacy(vm) as qmp:
            with pytest.raises(ExecuteError, match="Parameter 'format' is unexpected"):
                qmp.cmd("screendump", filename=str(tmp_path / "old.png"), format="png")


# --- the real harness against the fake --------------------------------------------------


def test_harness_selftest_passes_against_the_fake(tmp_path: Path) -> None:
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1M"], check=True)
    guest = steps(
        LINE + "START|version=1\r\n",
        LINE + f"CONFIG|http_url=http://10.0.2.2:{HTTP_PORT}/aero-virtio-selftest|udp_port={UDP_PORT}\r\n",
        LINE + "TEST|virtio-blk|PASS\r\n",
        LINE + "TEST|virtio-net|PASS\r\n",
        LINE + "RESULT|PASS\r\n",
    )
    env = script_env(tmp_path, serial=guest)
    artifacts = tmp_path / "artifacts"
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "selftest", "--qemu-system", str(FAKE_QEMU), "--disk", str(disk),
         "--accel", "tcg", "--timeout", "20", "--http-port", str(HTTP_PORT), "--udp-port", str(UDP_PORT),
         "--artifacts", str(artifacts),
         # An early image: START, CONFIG, virtio-blk, virtio-net, RESULT on transitional devices.
         "--virtio-transitional"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS: AERO_VIRTIO_SELFTEST|RESULT|PASS" in proc.stdout
    commands = [r["command"] for r in records(env["FAKE_QEMU_RECORD"])]
    assert commands[0] == "qmp_capabilities" and "cont" in commands and commands[-1] == "quit"
    assert json.loads((artifacts / "result.json").read_text())["exit_code"] == 0
    assert os.path.getsize(artifacts / "serial.log") > 0
