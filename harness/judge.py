"""The selftest's judge: guest markers in, the run's verdict out.

It plugs into the follow loop; the rules themselves are the pure functions
of ``harness.verdict``.
"""

from __future__ import annotations

import re
import time
from typing import Callable, Dict, List, Optional, Sequence

from harness.accel import KvmBootError
from harness.console import Console
from harness.exitcodes import ExitCode
from harness.follow import Context, Judge
from harness.lines import Line
from harness.markers import Marker
from harness.verdict import RequirementLike, Tracker, Verdict, timeout_verdict, vm_gone_verdict

# VM run states that end a run before the guest's verdict, with their tokens.
DEAD_STATES = {
    "internal-error": ("VM_INTERNAL_ERROR", "the VM stopped with a hypervisor internal error"),
    "guest-panicked": ("GUEST_PANICKED", "the guest panicked"),
    "io-error": ("VM_IO_ERROR", "the VM stopped on a disk I/O error"),
    "shutdown": ("GUEST_SHUTDOWN", "the guest powered off"),
}


def config_mismatch(config: Marker, http_port: int, http_path: str, udp_port: Optional[int]) -> Optional[Verdict]:
    """A guest whose baked-in URL or UDP port the host does not serve cannot pass: say so at once.

    ``udp_port`` None: the UDP echo is off (--disable-udp), so the guest's port does not matter.
    """
    udp = config.get("udp_port")
    if udp_port is not None and udp and udp.isdigit() and int(udp) != udp_port:
        return Verdict(ExitCode.FAIL, "UDP_PORT_MISMATCH",
                       f"the guest's CONFIG says udp_port={udp} but the host echoes on {udp_port}; run with "
                       f"--udp-port {udp}, or provision the image with --udp-port {udp_port} (invoke provision-media)")
    url = config.get("http_url")
    match = re.match(r"https?://[^/:]+(?::(\d+))?(/[^?#]*)?", url or "")
    if url and match:
        port = int(match.group(1) or 80)
        path = match.group(2) or "/"
        if port != http_port or path != http_path:
            return Verdict(ExitCode.FAIL, "HTTP_URL_MISMATCH",
                           f"the guest's CONFIG says http_url={url} but the host serves port {http_port} path "
                           f"{http_path}; run with --http-port {port} --http-path {path}, or provision the image "
                           f"with --http-port {http_port} --http-path {http_path} (invoke provision-media)")
    return None


class SelftestJudge(Judge):
    def __init__(
        self,
        required: Sequence[RequirementLike],
        console: Console,
        check_config: Callable[[Marker], Optional[Verdict]] = lambda marker: None,
        checks_at_pass: Sequence[Callable[[Tracker], Optional[Verdict]]] = (),
        follow_serial: bool = False,
        may_fall_back: bool = False,
        started: Optional[float] = None,
    ) -> None:
        self.tracker = Tracker(required)
        self.console = console
        self.check_config = check_config
        self.checks_at_pass = checks_at_pass
        self.follow_serial = follow_serial
        self.may_fall_back = may_fall_back
        self.started = time.monotonic() if started is None else started  # timings count from here
        self.timings: Dict[str, float] = {}
        self.notes: List[str] = []

    def _mark(self, name: str) -> None:
        self.timings.setdefault(name, time.monotonic() - self.started)

    def on_line(self, line: Line, marker: Optional[Marker], ctx: Context) -> Optional[Verdict]:
        if self.follow_serial:
            self.console.serial(line.text)
        if marker is None:
            return None
        if marker.kind == "RESULT" and not line.ended:
            # QEMU stopped in the middle of the line: no complete verdict was given.
            self.notes.append(f"an unfinished RESULT line was ignored: {marker.short[:100]}")
            return None
        self._mark("first_marker")
        verdict = self.tracker.add(marker)
        if verdict is None and marker.kind == "CONFIG" and self.tracker.result is None:
            verdict = self.check_config(marker)
        if verdict is not None and verdict.passed:
            for check in self.checks_at_pass:
                verdict = check(self.tracker) or verdict
                if not verdict.passed:
                    break
        if verdict is not None:
            self._mark("result_seen")
        return verdict

    def on_exit(self, returncode: Optional[int]) -> Verdict:
        if returncode == 0:
            # QEMU runs with -no-reboot: a clean exit is the guest powering off or rebooting.
            what = "the guest powered off or rebooted (QEMU runs with -no-reboot, so QEMU exited with code 0)"
        else:
            what = f"QEMU exited with code {returncode}"
        return vm_gone_verdict("QEMU_EXITED", what, self.tracker)

    def on_state(self, state: str) -> Optional[Verdict]:
        if state not in DEAD_STATES:
            return None
        if state == "internal-error" and self.may_fall_back and self.tracker.last is None:
            raise KvmBootError()
        token, what = DEAD_STATES[state]
        return vm_gone_verdict(token, what, self.tracker)

    def on_timeout(self, seconds: float) -> Verdict:
        return timeout_verdict(seconds, self.tracker)

    def status(self) -> str:
        last = self.tracker.last
        return f"last: {last.label}" if last else "waiting for the guest's START"
