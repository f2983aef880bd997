"""Host actions the guest waits for: it prints ``TEST|<name>|READY`` and the host acts over QMP.

One handler per READY test (docs/guest-contract.md, "Host actions"),
each plugged into the follow loop:

| TEST | host action |
| --- | --- |
| virtio-input-events | key ``a``, relative motion, left button (resent every 0.5 s until the test ends) |
| virtio-input-media-keys | the ``volumeup`` key (resent likewise) |
| virtio-input-tablet-events | absolute moves to 0,0 and 10000,20000, left button (resent likewise) |
| virtio-net-link-flap | ``set_link`` down, 3 s, up (once) |
| virtio-blk-resize | grow the disk by ``--blk-resize-delta-mib`` (once) |

READY is a request: a handler answers it whenever its device is attached,
whether or not the run requires the test. Each step is recorded (console and
result.json). A QMP command that fails ends the run with the handler's token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from harness.devices import DRIVE_ID, Device
from harness.exitcodes import ExitCode
from harness.follow import Context, Handler
from harness.lines import Line
from harness.markers import Marker
from harness.qmp import QmpCommandError, QmpError
from harness.verdict import FINAL, Verdict, token_of

RESEND_EVERY = 0.5
WHEEL_AXES = ("wheel", "hscroll")
STEP_GAP = 0.05  # between the events of one attempt, as a person's hand would be


def key(qcode: str, down: bool) -> Dict[str, Any]:
    return {"type": "key", "data": {"down": down, "key": {"type": "qcode", "data": qcode}}}


def rel(axis: str, value: int) -> Dict[str, Any]:
    return {"type": "rel", "data": {"axis": axis, "value": value}}


def abs_(axis: str, value: int) -> Dict[str, Any]:
    return {"type": "abs", "data": {"axis": axis, "value": value}}


def button(name: str, down: bool) -> Dict[str, Any]:
    return {"type": "btn", "data": {"down": down, "button": name}}


def press(qcode: str) -> List[Tuple[str, List[Dict[str, Any]]]]:
    return [("kbd", [key(qcode, True)]), ("kbd", [key(qcode, False)])]


def click(name: str, target: str = "mouse") -> List[Tuple[str, List[Dict[str, Any]]]]:
    return [(target, [button(name, True)]), (target, [button(name, False)])]


def input_events(wheel: bool, extended: bool) -> List[Tuple[str, List[Dict[str, Any]]]]:
    """One attempt of virtio-input-events: (device role, events) per QMP command."""
    motion = [rel("x", 10), rel("y", 5)] + ([rel("wheel", 1), rel("hscroll", -2)] if wheel else [])
    steps = press("a") + [("mouse", motion)] + click("left")
    if extended:
        steps += [("kbd", [key("shift", True)])] + press("b") + [("kbd", [key("shift", False)])]
        steps += press("ctrl") + press("alt") + press("f1") + click("side") + click("extra")
    return steps


MEDIA_KEYS = press("volumeup")
TABLET = [("tablet", [abs_("x", 0), abs_("y", 0)]), ("tablet", [abs_("x", 10000), abs_("y", 20000)])] + click(
    "left", "tablet")


class ActionError(Exception):
    """A host action QEMU refused."""


class ReadyHandler(Handler):
    """Waits for ``TEST|<test>|READY``; then runs ``begin`` and ``tick`` until the test's final line."""

    test = ""
    token = ""  # the run's token when QEMU refuses the action

    def __init__(self) -> None:
        self.ready: Optional[Marker] = None
        self.finished = False

    def on_line(self, line: Line, marker: Optional[Marker], ctx: Context) -> Optional[Verdict]:
        if marker is None or marker.kind != "TEST" or marker.name != self.test:
            if marker is not None and marker.kind == "START":
                self.ready, self.finished = None, False  # the guest started over
            return None
        if marker.status == "READY" and self.ready is None and not self.finished:
            self.ready = marker
            return self._guard(ctx, lambda: self.begin(marker, ctx))
        if marker.status in FINAL and self.ready is not None and not self.finished:
            self.finished = True
            ctx.record(f"{self.test}: the guest answered", status=marker.status)
        return None

    def on_tick(self, ctx: Context) -> Optional[Verdict]:
        if self.ready is None or self.finished:
            return None
        return self._guard(ctx, lambda: self.tick(ctx))

    def next_tick(self) -> Optional[float]:
        if self.ready is None or self.finished:
            return None
        return self.due()

    def _guard(self, ctx: Context, step: Callable[[], None]) -> Optional[Verdict]:
        try:
            step()
        except (QmpError, ActionError) as exc:
            self.finished = True
            ctx.record(f"{self.test}: host action failed", error=str(exc))
            return Verdict(ExitCode.FAIL, self.token, f"{self.test}: the host could not act over QMP: {exc}")
        return None

    def begin(self, marker: Marker, ctx: Context) -> None:
        raise NotImplementedError

    def tick(self, ctx: Context) -> None:
        pass

    def due(self) -> Optional[float]:
        """When ``tick`` has its next step to take, between READY and the answer (None: no step left)."""
        return None


class InputInjection(ReadyHandler):
    """Sends a sequence of input-send-event commands, again every 0.5 s, until the test's result line."""

    def __init__(self, test: str, token: str, steps: Sequence[Tuple[str, List[Dict[str, Any]]]],
                 devices: Dict[str, str], attempts: int) -> None:
        super().__init__()
        self.test = test
        self.token = token
        self.steps = list(steps)
        self.devices = devices  # role -> QOM id
        self.attempts = attempts
        self.broadcast: Dict[str, bool] = {}  # role -> the device id was refused, send without it
        self.wheel_as_buttons = False
        self.sent_attempts = 0
        self.queue: List[Tuple[float, str, List[Dict[str, Any]]]] = []
        self.next_attempt = 0.0

    def begin(self, marker: Marker, ctx: Context) -> None:
        self.next_attempt = time.monotonic()
        self.tick(ctx)

    def tick(self, ctx: Context) -> None:
        now = time.monotonic()
        if not self.queue and self.sent_attempts < self.attempts and now >= self.next_attempt:
            self.sent_attempts += 1
            self.next_attempt = now + RESEND_EVERY
            self.queue = [(now + i * STEP_GAP, role, events) for i, (role, events) in enumerate(self.steps)]
            ctx.record(f"{self.test}: sending input", attempt=self.sent_attempts, commands=len(self.steps))
        while self.queue and self.queue[0][0] <= now:
            _, role, events = self.queue.pop(0)
            self.send(ctx, role, events)

    def due(self) -> Optional[float]:
        if self.queue:
            return self.queue[0][0]
        return self.next_attempt if self.sent_attempts < self.attempts else None

    def send(self, ctx: Context, role: str, events: List[Dict[str, Any]]) -> None:
        try:
            self._send(ctx, role, events)
        except QmpCommandError as exc:
            wheel = [e for e in events if e["type"] == "rel" and e["data"]["axis"] in WHEEL_AXES]
            if not wheel or exc.error_class == "CommandNotFound":
                raise
            # QEMU 7.2 has no wheel axes (InputAxis is x and y); its wheel is the wheel-up/-down
            # buttons, which the virtio mouse reports as REL_WHEEL. There is no horizontal wheel then.
            if not self.wheel_as_buttons:
                self.wheel_as_buttons = True
                ctx.record(f"{self.test}: QEMU has no wheel axis; the wheel goes as button wheel-up, no hscroll",
                           error=exc.desc)
            self._send(ctx, role, [e for e in events if e not in wheel])
            self._send(ctx, role, [button("wheel-up", True)])
            self._send(ctx, role, [button("wheel-up", False)])

    def _send(self, ctx: Context, role: str, events: List[Dict[str, Any]]) -> None:
        device = self.devices.get(role)
        if device and not self.broadcast.get(role):
            try:
                ctx.vm.execute("input-send-event", {"device": device, "events": events})
                return
            except QmpCommandError as exc:
                if exc.error_class == "CommandNotFound":
                    raise
                # Stock QEMU refuses a virtio input device's id ("not bound to a QemuConsole");
                # sent without a device, the events reach every input device, the virtio ones too.
                self.broadcast[role] = True
                ctx.record(f"{self.test}: QEMU refused device={device}; sending without a device", error=exc.desc)
        ctx.vm.execute("input-send-event", {"events": events})


class LinkFlap(ReadyHandler):
    test = "virtio-net-link-flap"
    token = "QMP_NET_LINK_FLAP_FAILED"
    DOWN_FOR = 3.0

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = list(names)
        self.name: Optional[str] = None
        self.up_at: Optional[float] = None

    def begin(self, marker: Marker, ctx: Context) -> None:
        errors = []
        for name in self.names:
            try:
                ctx.vm.execute("set_link", {"name": name, "up": False})
            except QmpCommandError as exc:
                errors.append(f"{name}: {exc.desc}")
                continue
            self.name = name
            self.up_at = time.monotonic() + self.DOWN_FOR
            ctx.record(f"{self.test}: link down", name=name, up_in_s=self.DOWN_FOR)
            return
        raise ActionError("set_link down was refused for every name: " + "; ".join(errors))

    def due(self) -> Optional[float]:
        return self.up_at

    def tick(self, ctx: Context) -> None:
        if self.up_at is not None and time.monotonic() >= self.up_at:
            self.up_at = None
            ctx.vm.execute("set_link", {"name": self.name, "up": True})
            ctx.record(f"{self.test}: link up", name=self.name)


@dataclass(frozen=True)
class ResizePlan:
    old_bytes: int
    new_bytes: int


def resize_plan(marker: Marker, delta_mib: int) -> ResizePlan:
    """New size: old + delta MiB, rounded up to 512 bytes (docs/guest-contract.md)."""
    text = marker.get("old_bytes")
    if text is None:
        raise ActionError(f"the READY line has no old_bytes field: {marker.short}")
    try:
        old = int(text, 0)
    except ValueError as exc:
        raise ActionError(f"the READY line's old_bytes is not a number: {text!r}") from exc
    new = old + delta_mib * 1024 * 1024
    new = (new + 511) // 512 * 512
    return ResizePlan(old, new if new > old else old + 512)


class BlockResize(ReadyHandler):
    test = "virtio-blk-resize"
    token = "QMP_BLK_RESIZE_FAILED"

    def __init__(self, delta_mib: int) -> None:
        super().__init__()
        self.delta_mib = delta_mib

    def begin(self, marker: Marker, ctx: Context) -> None:
        plan = resize_plan(marker, self.delta_mib)
        try:
            ctx.vm.execute("blockdev-resize", {"node-name": DRIVE_ID, "size": plan.new_bytes})
            used = "blockdev-resize"
        except QmpCommandError as first:
            # Stock QEMU 7.2 and 10.0 have no blockdev-resize; block_resize is the one they answer.
            try:
                ctx.vm.execute("block_resize", {"device": DRIVE_ID, "size": plan.new_bytes})
            except QmpCommandError as second:
                raise ActionError(f"blockdev-resize: {first.desc}; block_resize: {second.desc}") from second
            used = "block_resize"
        ctx.record(f"{self.test}: disk grown", old_bytes=plan.old_bytes, new_bytes=plan.new_bytes, command=used)


def ready_handlers(
    devices: Sequence[Device], extended: bool = False, wheel: bool = False, blk_resize_delta_mib: int = 64
) -> List[Handler]:
    """A handler for every READY test whose device this run attaches."""
    by_role = {d.role: d.qdev_id for d in devices}
    handlers: List[Handler] = []
    if "kbd" in by_role or "mouse" in by_role:
        attempts = 30 if extended else 20
        handlers.append(InputInjection("virtio-input-events", "QMP_INPUT_INJECT_FAILED",
                                       input_events(wheel or extended, extended), by_role, attempts))
        handlers.append(InputInjection("virtio-input-media-keys", "QMP_MEDIA_KEYS_FAILED", MEDIA_KEYS, by_role, 20))
    if "tablet" in by_role:
        handlers.append(InputInjection("virtio-input-tablet-events", "QMP_TABLET_INJECT_FAILED", TABLET, by_role, 20))
    if "net" in by_role:
        handlers.append(LinkFlap([by_role["net"], "net0"]))
    if "blk" in by_role:
        handlers.append(BlockResize(blk_resize_delta_mib))
    return handlers


class Watchdog(Handler):
    """A required test must show up soon after its device's main test: else MISSING_<TEST>, not a timeout."""

    def __init__(self, test: str, after: str, seconds: float, hint: str) -> None:
        self.test = test
        self.after = after
        self.seconds = seconds
        self.hint = hint
        self.due: Optional[float] = None
        self.seen = False

    def on_line(self, line: Line, marker: Optional[Marker], ctx: Context) -> Optional[Verdict]:
        if marker is None:
            return None
        if marker.kind == "START":
            self.due, self.seen = None, False
        elif marker.kind == "TEST" and marker.name == self.test:
            self.seen = True
        elif marker.kind == "TEST" and marker.name == self.after and marker.status in FINAL and self.due is None:
            self.due = time.monotonic() + self.seconds
        return None

    def next_tick(self) -> Optional[float]:
        return None if self.seen else self.due

    def on_tick(self, ctx: Context) -> Optional[Verdict]:
        if self.due is not None and not self.seen and time.monotonic() >= self.due:
            return Verdict(ExitCode.FAIL, f"MISSING_{token_of(self.test)}",
                           f"the guest did not report {self.test} within {self.seconds:g} s of {self.after} "
                           f"({self.hint})")
        return None
