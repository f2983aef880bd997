"""The test guest's READY tests under plain QEMU, answered by a small QMP driver (no harness).

Provisioned through fw_cfg (``opt/aero/tests``) the way a Windows guest is
provisioned with its ``--test-*`` switches, the guest prints a test's READY line
and then watches what Linux's virtio drivers see. The driver here answers each
READY line with the host action PROTOCOL.md describes ("Host actions the guest
waits for"): ``input-send-event`` without ``device`` (stock QEMU refuses a
virtio input device's id), ``set_link`` on the NIC, ``block_resize`` on the
drive. The tests check the guest's PASS lines, and that a READY test nobody
answers ends in FAIL with its reason after the real guest's timeout.

Boots share the work: one guest runs every test a keyboard and mouse allow; the
tablet gets its own, because stock QEMU routes an untargeted button event to one
pointer only (the one activated last: with a tablet beside the mouse, the tablet),
so a mouse test and a tablet test cannot both pass on one guest.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Generator, Iterator, List, Optional, Tuple

import pytest
from qemu.qmp import ExecuteError
from qemu.qmp.legacy import QEMUMonitorProtocol

from harness.hostsvc import HostServices
from tests.e2e.conftest import QEMU

# Fixed ports below Linux's ephemeral range, apart from test_guest_plain_qemu's.
HTTP_PORT = 27780
UDP_PORT = 27781
URL = f"http://10.0.2.2:{HTTP_PORT}/aero-virtio-selftest"
MIB = 1 << 20
PREFIX = b"AERO_VIRTIO_SELFTEST|TEST|"

KBD_MOUSE = [
    "-device", "virtio-blk-pci,drive=drive0,disable-legacy=on,id=aero_virtio_blk0",
    "-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0,disable-legacy=on,id=aero_virtio_net0",
    "-device", "virtio-keyboard-pci,disable-legacy=on,id=aero_virtio_kbd0",
    "-device", "virtio-mouse-pci,disable-legacy=on,id=aero_virtio_mouse0",
]
WITH_TABLET = [*KBD_MOUSE, "-device", "virtio-tablet-pci,disable-legacy=on,id=aero_virtio_tablet0"]

Event = Dict[str, object]
# An action yields the seconds to wait before it goes on.
Action = Generator[float, None, None]


def key(qcode: str, down: bool) -> Event:
    return {"type": "key", "data": {"down": down, "key": {"type": "qcode", "data": qcode}}}


def button(name: str, down: bool) -> Event:
    return {"type": "btn", "data": {"down": down, "button": name}}


def move(kind: str, axis: str, value: int) -> Event:
    return {"type": kind, "data": {"axis": axis, "value": value}}


class HostActions:
    """What the host does after each READY line (PROTOCOL.md), over one QMP connection."""

    def __init__(self, qmp: QEMUMonitorProtocol, extended: bool = False, ignore: Tuple[str, ...] = ()) -> None:
        self.qmp = qmp
        self.extended = extended
        self.ignore = ignore
        self.sent: Dict[str, int] = {}
        # Stock QEMU's InputAxis has only x and y: no wheel or hscroll axis.
        self.wheel_axes: Optional[bool] = None

    def send(self, *events: Event) -> None:
        self.qmp.cmd("input-send-event", events=list(events))

    def input_events(self) -> Action:
        for _ in range(30 if self.extended else 20):
            self.sent["virtio-input-events"] = self.sent.get("virtio-input-events", 0) + 1
            self.send(key("a", True))
            yield 0.05
            self.send(key("a", False))
            yield 0.05
            self.move_mouse()
            yield 0.05
            for down in (True, False):
                self.send(button("left", down))
                yield 0.05
            if self.extended:
                for event in (key("shift", True), key("b", True), key("b", False), key("shift", False),
                              key("ctrl", True), key("ctrl", False), key("alt", True), key("alt", False),
                              key("f1", True), key("f1", False), button("side", True), button("side", False),
                              button("extra", True), button("extra", False)):
                    self.send(event)
                    yield 0.05
            yield 0.5

    def move_mouse(self) -> None:
        relative = [move("rel", "x", 10), move("rel", "y", 5)]
        if not self.extended:
            self.send(*relative)
            return
        if self.wheel_axes is not False:
            try:
                self.send(*relative, move("rel", "wheel", 1), move("rel", "hscroll", -2))
                self.wheel_axes = True
                return
            except ExecuteError:
                self.wheel_axes = False
        # What stock QEMU offers instead: its virtio mouse turns wheel-up into REL_WHEEL +1;
        # it has no horizontal wheel.
        self.send(*relative)
        self.send(button("wheel-up", True))
        self.send(button("wheel-up", False))

    def media_keys(self) -> Action:
        for _ in range(20):
            self.send(key("volumeup", True))
            yield 0.05
            self.send(key("volumeup", False))
            yield 0.5

    def tablet_events(self) -> Action:
        for _ in range(20):
            self.send(move("abs", "x", 0), move("abs", "y", 0))
            yield 0.05
            self.send(move("abs", "x", 10000), move("abs", "y", 20000))
            yield 0.05
            for down in (True, False):
                self.send(button("left", down))
                yield 0.05
            yield 0.5

    def link_flap(self) -> Action:
        self.qmp.cmd("set_link", name="net0", up=False)
        yield 3.0
        self.qmp.cmd("set_link", name="net0", up=True)

    def blk_resize(self, old_bytes: int) -> Action:
        new_bytes = -(-(old_bytes + 64 * MIB) // 512) * 512
        self.qmp.cmd("block_resize", device="drive0", size=new_bytes)
        yield 0.0

    def answer(self, name: str, fields: Dict[str, str]) -> Optional[Action]:
        if name in self.ignore:
            return None
        if name == "virtio-input-events":
            return self.input_events()
        if name == "virtio-input-media-keys":
            return self.media_keys()
        if name == "virtio-input-tablet-events":
            return self.tablet_events()
        if name == "virtio-net-link-flap":
            return self.link_flap()
        if name == "virtio-blk-resize":
            return self.blk_resize(int(fields["old_bytes"]))
        return None


@dataclass
class Run:
    serial: bytes
    seen: Dict[bytes, float]  # marker line -> seconds after the start when the driver read it
    requests: List[Tuple[str, str, int]]
    host: HostActions

    def markers(self) -> List[bytes]:
        return [raw.rstrip(b"\r") for raw in self.serial.split(b"\n") if raw.startswith(b"AERO_VIRTIO_SELFTEST|")]

    def the(self, name: str, status: str) -> str:
        """The one marker line of a test with this status."""
        found = [m for m in self.markers() if m.startswith(PREFIX + f"{name}|{status}".encode())]
        assert len(found) == 1, f"{name}|{status}: {found} in\n{self.serial.decode(errors='replace')}"
        return found[0].decode()


@contextlib.contextmanager
def plain_qemu(argv: List[str], log: Path) -> Iterator[Tuple[subprocess.Popen[bytes], QEMUMonitorProtocol]]:
    """QEMU with its monitor on a socket we listen on; stopped (quit, then kill) on the way out.

    QEMU connects to us rather than the other way round: a socket QEMU serves
    exists (bind) a moment before it listens, and a connect in that moment is refused.
    """
    # A short folder: a unix socket path has room for about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="aero-qmp-") as sock_dir:
        sock = str(Path(sock_dir) / "qmp.sock")
        with QEMUMonitorProtocol(sock, server=True) as qmp, open(log, "wb") as out:
            argv = [*argv, "-chardev", f"socket,id=qmp,path={sock}", "-mon", "chardev=qmp,mode=control"]
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            try:
                qmp.accept(timeout=30)
                qmp.settimeout(10)
                yield proc, qmp
            finally:
                if proc.poll() is None:
                    with contextlib.suppress(Exception):
                        qmp.cmd("quit")
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=10)


def follow(
    proc: subprocess.Popen[bytes], serial: Path, host: HostActions, timeout: float
) -> Tuple[bytes, Dict[bytes, float]]:
    """Read the guest's lines until QEMU is gone (the guest powers off), answering READY lines."""
    started = time.monotonic()
    seen: Dict[bytes, float] = {}
    running: Dict[str, Tuple[float, Action]] = {}  # test -> (when it goes on, action)
    done = 0
    while proc.poll() is None:
        assert time.monotonic() - started < timeout, f"no power-off within {timeout} s:\n{serial.read_text()}"
        data = serial.read_bytes() if serial.exists() else b""
        cut = data.rfind(b"\n") + 1
        for raw in data[done:cut].split(b"\n")[:-1]:
            line = raw.rstrip(b"\r")
            if not line.startswith(PREFIX):
                continue
            now = time.monotonic()
            seen.setdefault(line, now - started)
            name, status, *rest = line[len(PREFIX):].decode().split("|")
            if status == "READY":
                action = host.answer(name, dict(f.split("=", 1) for f in rest if "=" in f))
                if action is not None:
                    running[name] = (now, action)
            elif status in ("PASS", "FAIL", "SKIP"):
                running.pop(name, None)
        done = max(done, cut)
        for name, (due, action) in list(running.items()):
            if time.monotonic() >= due:
                try:
                    running[name] = (time.monotonic() + next(action), action)
                except StopIteration:
                    del running[name]
        time.sleep(0.02)
    return serial.read_bytes(), seen


def boot(image: Path, work: Path, tests: str, devices: List[str], extended: bool = False,
         ignore: Tuple[str, ...] = (), timeout: float = 150) -> Run:
    """Boot the guest provisioned with ``tests`` (switch names, comma-separated).

    The host answers every READY line but those of the tests in ``ignore``.
    """
    serial = work / "serial.log"
    argv = [
        QEMU, "-accel", "tcg,thread=single", "-m", "512", "-nodefaults", "-display", "none", "-no-reboot",
        "-drive", f"file={image},if=none,id=drive0,format=qcow2,snapshot=on", *devices,
        "-chardev", f"file,id=c0,path={serial}", "-serial", "chardev:c0",
        "-fw_cfg", "name=opt/aero/poweroff,string=1",
        "-fw_cfg", f"name=opt/aero/http_url,string={URL}",
        "-fw_cfg", f"name=opt/aero/udp_port,string={UDP_PORT}",
        # A comma inside a QEMU option value is written twice.
        "-fw_cfg", "name=opt/aero/tests,string=" + tests.replace(",", ",,"),
    ]
    with HostServices(HTTP_PORT, UDP_PORT, "/aero-virtio-selftest") as services:
        with plain_qemu(argv, work / "qemu.log") as (proc, qmp):
            host = HostActions(qmp, extended, ignore)
            data, seen = follow(proc, serial, host, timeout)
            assert proc.returncode == 0, (work / "qemu.log").read_text()
        requests = [(r.method, r.path, r.status) for r in services.requests]
    return Run(data, seen, requests, host)


@pytest.fixture(scope="module")
def ready(guest_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One guest with every READY test a keyboard and a mouse allow, each answered."""
    tests = "input-events,input-media-keys,blk-resize,blk-reset,net-link-flap"
    return boot(guest_image, tmp_path_factory.mktemp("ready"), tests, KBD_MOUSE)


def test_provisioned_guest_passes(ready: Run) -> None:
    assert b"|test_net_link_flap=1|" in ready.serial
    assert ready.markers()[-1] == b"AERO_VIRTIO_SELFTEST|RESULT|PASS"
    assert b"|FAIL" not in b"\n".join(ready.markers())


def test_input_events(ready: Run) -> None:
    assert ready.the("virtio-input-events", "READY") == "AERO_VIRTIO_SELFTEST|TEST|virtio-input-events|READY"
    assert re.fullmatch(
        r"AERO_VIRTIO_SELFTEST\|TEST\|virtio-input-events\|PASS\|kbd_reports=[1-9]\d*\|mouse_reports=[1-9]\d*\|"
        r"kbd_bad_reports=0\|mouse_bad_reports=0\|kbd_a_down=1\|kbd_a_up=1\|mouse_move=1\|mouse_left_down=1\|"
        r"mouse_left_up=1",
        ready.the("virtio-input-events", "PASS"),
    )
    assert ready.the("virtio-input-wheel", "SKIP").endswith("|SKIP|not_observed|wheel_total=0|hwheel_total=0")
    for sub in ("modifiers", "buttons", "wheel"):
        assert ready.the(f"virtio-input-events-{sub}", "SKIP").endswith("|SKIP|flag_not_set")


def test_input_media_keys(ready: Run) -> None:
    ready.the("virtio-input-media-keys", "READY")
    assert re.fullmatch(
        r"AERO_VIRTIO_SELFTEST\|TEST\|virtio-input-media-keys\|PASS\|reports=[1-9]\d*\|volume_up_down=1\|"
        r"volume_up_up=1",
        ready.the("virtio-input-media-keys", "PASS"),
    )


def test_blk_resize(ready: Run) -> None:
    old = 48 * MIB  # the test guest's disk
    assert ready.the("virtio-blk-resize", "READY") == f"{PREFIX.decode()}virtio-blk-resize|READY|disk=0|old_bytes={old}"
    assert re.fullmatch(
        rf"AERO_VIRTIO_SELFTEST\|TEST\|virtio-blk-resize\|PASS\|disk=0\|old_bytes={old}\|new_bytes={old + 64 * MIB}\|"
        r"elapsed_ms=\d+",
        ready.the("virtio-blk-resize", "PASS"),
    )


def test_blk_reset(ready: Run) -> None:
    # The device was reset (status 0, then acknowledged) and set up again, and I/O goes through.
    assert re.search(
        rb"virtio-blk-reset: virtio\d+ virtio status before=0x0000000f unbound=0x00000001 rebound=0x0000000f\r\n"
        rb"virtio-blk-reset: smoke IO ok\r\n",
        ready.serial,
    )
    assert ready.the("virtio-blk-reset", "PASS") == (
        "AERO_VIRTIO_SELFTEST|TEST|virtio-blk-reset|PASS|performed=1|counter_before=not_supported|"
        "counter_after=not_supported"
    )


def test_net_link_flap(ready: Run) -> None:
    assert ready.the("virtio-net-link-flap", "READY").endswith("|READY|adapter=eth0|guid=-")
    passed = ready.the("virtio-net-link-flap", "PASS")
    match = re.fullmatch(
        r"AERO_VIRTIO_SELFTEST\|TEST\|virtio-net-link-flap\|PASS\|adapter=eth0\|guid=-\|down_wait_ms=\d+\|"
        r"up_wait_ms=(\d+)\|recovery_wait_ms=\d+\|down_sec=\d+\.\d\d\|up_sec=\d+\.\d\d\|ipv4=10\.0\.2\.15\|"
        r"http_attempts=1\|recovery_attempts=1\|total_ms=\d+\|cfg_vector=0\|cfg_intr_before=\d+\|cfg_intr_down=\d+\|"
        r"cfg_intr_up=\d+\|cfg_intr_down_delta=[1-9]\d*\|cfg_intr_up_delta=[1-9]\d*",
        passed,
    )
    assert match, passed
    # The host holds the link down for 3 s.
    assert int(match.group(1)) >= 2000
    # The flap sits between the first GET and the large one, whose answer needed the link again.
    assert ready.requests == [
        ("GET", "/aero-virtio-selftest", 200),
        ("GET", "/aero-virtio-selftest", 200),
        ("GET", "/aero-virtio-selftest-large", 200),
        ("POST", "/aero-virtio-selftest-large", 200),
    ]


@pytest.fixture(scope="module")
def tablet(guest_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A guest with a tablet too, where the host answers the tablet test and ignores the media keys."""
    tests = "input-media-keys,input-tablet-events,no-such-test"
    return boot(guest_image, tmp_path_factory.mktemp("tablet"), tests, WITH_TABLET,
                ignore=("virtio-input-media-keys",))


def test_input_tablet_events(tablet: Run) -> None:
    # Linux reports the virtio tablet on QEMU's own 0..32767 scale: 10000,20000 arrive as sent.
    assert b"virtio-input-tablet-events: abs_x=0..32767 abs_y=0..32767\r\n" in tablet.serial
    tablet.the("virtio-input-tablet-events", "READY")
    assert re.fullmatch(
        r"AERO_VIRTIO_SELFTEST\|TEST\|virtio-input-tablet-events\|PASS\|tablet_reports=[1-9]\d*\|move_target=1\|"
        r"left_down=1\|left_up=1\|last_x=10000\|last_y=20000\|last_left=0",
        tablet.the("virtio-input-tablet-events", "PASS"),
    )


def test_ready_test_without_host_action_fails_after_its_timeout(tablet: Run) -> None:
    ready = tablet.the("virtio-input-media-keys", "READY").encode()
    failed = tablet.the("virtio-input-media-keys", "FAIL")
    assert failed == (
        "AERO_VIRTIO_SELFTEST|TEST|virtio-input-media-keys|FAIL|reason=timeout|err=1460|reports=0|volume_up_down=0|"
        "volume_up_up=0"
    )
    # The real guest's 10 s.
    assert 9.5 <= tablet.seen[failed.encode()] - tablet.seen[ready] <= 13
    assert tablet.markers()[-1] == b"AERO_VIRTIO_SELFTEST|RESULT|FAIL"


def test_unknown_switch_is_named_and_ignored(tablet: Run) -> None:
    assert b"aero-test-guest: unknown test switch in opt/aero/tests, ignored: no-such-test\r\n" in tablet.serial


def test_input_events_extended(guest_image: Path, tmp_path: Path) -> None:
    run = boot(guest_image, tmp_path, "input-events-extended,input-tablet-events", KBD_MOUSE, extended=True)
    # Provisioned for a tablet it does not have, a guest skips the tablet test, failing nothing.
    assert run.the("virtio-input-tablet-events", "SKIP").endswith("|SKIP|no_tablet_device")
    run.the("virtio-input-events", "READY")
    run.the("virtio-input-events", "PASS")
    assert re.fullmatch(
        r"AERO_VIRTIO_SELFTEST\|TEST\|virtio-input-events-modifiers\|PASS\|kbd_reports=[1-9]\d*\|kbd_bad_reports=0\|"
        r"shift_b=1\|ctrl=1\|alt=1\|f1=1",
        run.the("virtio-input-events-modifiers", "PASS"),
    )
    assert re.fullmatch(
        r"AERO_VIRTIO_SELFTEST\|TEST\|virtio-input-events-buttons\|PASS\|mouse_reports=[1-9]\d*\|mouse_bad_reports=0\|"
        r"side_down=1\|side_up=1\|extra_down=1\|extra_up=1",
        run.the("virtio-input-events-buttons", "PASS"),
    )
    if run.host.wheel_axes:
        run.the("virtio-input-wheel", "PASS")
        run.the("virtio-input-events-wheel", "PASS")
        assert run.markers()[-1] == b"AERO_VIRTIO_SELFTEST|RESULT|PASS"
    else:
        # This QEMU has no wheel or hscroll axis: the wheel came as wheel-up buttons, and a
        # virtio mouse has no horizontal wheel at all, so the wheel sub-test fails after 15 s.
        assert re.fullmatch(
            r"AERO_VIRTIO_SELFTEST\|TEST\|virtio-input-wheel\|FAIL\|reason=missing_axis\|wheel_total=[1-9]\d*\|"
            r"hwheel_total=0\|saw_wheel=1\|saw_hwheel=0",
            run.the("virtio-input-wheel", "FAIL"),
        )
        assert re.fullmatch(
            r"AERO_VIRTIO_SELFTEST\|TEST\|virtio-input-events-wheel\|FAIL\|reason=timeout\|err=1460\|"
            r"mouse_reports=[1-9]\d*\|mouse_bad_reports=0\|wheel_total=[1-9]\d*\|hwheel_total=0\|expected_wheel=1\|"
            r"expected_hwheel=-2\|saw_wheel=1\|saw_hwheel=0",
            run.the("virtio-input-events-wheel", "FAIL"),
        )
        assert run.markers()[-1] == b"AERO_VIRTIO_SELFTEST|RESULT|FAIL"
