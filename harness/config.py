"""The settings of one selftest run, checked before anything starts."""

from __future__ import annotations

import functools
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

from harness import options
from harness.devices import CONTRACT_V1, TRANSITIONAL, DeviceSet
from harness.devicetests import DEVICE_TESTS, DeviceTest
from harness.errors import UsageError
from harness.options import ACCELS as ACCELS  # their home was here: kept importable from here
from harness.options import DEFAULT_HTTP_PATH as DEFAULT_HTTP_PATH
from harness.verdict import Requirement, profile_requirements

MAX_RUNS = 100000  # of a --repeat
# The guest reaches the host's services at this address (QEMU user networking).
GUEST_HOST = "10.0.2.2"


def default_artifacts() -> Path:
    return Path("artifacts") / time.strftime("selftest-%Y%m%d-%H%M%S")


def guest_http_url(http_port: int, http_path: str) -> str:
    """The URL a guest GETs for the host's HTTP endpoint."""
    return f"http://{GUEST_HOST}:{http_port}{http_path}"


_default = functools.partial(options.default, "selftest")


@dataclass(frozen=True)
class SelftestConfig:
    """The settings of one run; the defaults are the options' (harness/options.py)."""

    disk: Optional[Path] = _default("disk")
    qemu_system: str = _default("qemu_system")
    timeout: float = _default("timeout")
    http_port: int = _default("http_port")
    udp_port: int = _default("udp_port")
    http_path: str = _default("http_path")
    memory: int = _default("memory")
    smp: int = _default("smp")
    tcg_thread: str = _default("tcg_thread")
    accel: str = _default("accel")
    snapshot: bool = _default("snapshot")
    follow_serial: bool = _default("follow_serial")
    dry_run: bool = _default("dry_run")
    require_tests: Tuple[str, ...] = _default("require_test")
    qemu_args: Tuple[str, ...] = _default("qemu_arg")
    artifacts: Path = field(default_factory=default_artifacts)
    # Devices (harness.devices): the contract-v1 profile unless virtio_transitional.
    virtio_transitional: bool = _default("virtio_transitional")
    with_virtio_tablet: bool = _default("with_virtio_tablet")
    with_virtio_snd: bool = _default("with_virtio_snd")
    virtio_msix_vectors: Optional[int] = _default("virtio_msix_vectors")
    virtio_net_vectors: Optional[int] = _default("virtio_net_vectors")
    virtio_blk_vectors: Optional[int] = _default("virtio_blk_vectors")
    virtio_input_vectors: Optional[int] = _default("virtio_input_vectors")
    virtio_snd_vectors: Optional[int] = _default("virtio_snd_vectors")
    virtio_disable_msix: bool = _default("virtio_disable_msix")
    require_intx: bool = _default("require_intx")
    require_msi: bool = _default("require_msi")
    require_virtio_net_msix: bool = _default("require_virtio_net_msix")
    require_virtio_blk_msix: bool = _default("require_virtio_blk_msix")
    require_virtio_snd_msix: bool = _default("require_virtio_snd_msix")
    require_virtio_input_msix: bool = _default("require_virtio_input_msix")
    disable_udp: bool = _default("disable_udp")
    http_log: Optional[Path] = _default("http_log")
    # Device tests that need the host (harness.devicetests): each makes its guest test required.
    with_input_events: bool = _default("with_input_events")
    with_input_events_extended: bool = _default("with_input_events_extended")
    with_input_wheel: bool = _default("with_input_wheel")
    with_input_media_keys: bool = _default("with_input_media_keys")
    with_input_tablet_events: bool = _default("with_input_tablet_events")
    with_net_link_flap: bool = _default("with_net_link_flap")
    with_blk_resize: bool = _default("with_blk_resize")
    blk_resize_delta_mib: int = _default("blk_resize_delta_mib")
    with_blk_reset: bool = _default("with_blk_reset")
    with_snd_buffer_limits: bool = _default("with_snd_buffer_limits")
    virtio_snd_wav_peak_threshold: int = _default("virtio_snd_wav_peak_threshold")
    virtio_snd_wav_rms_threshold: int = _default("virtio_snd_wav_rms_threshold")
    # Many runs (harness/repeat.py): how many, how many at once (None: as the machine allows), stop at a failure.
    repeat: int = _default("repeat")
    jobs: Optional[int] = _default("jobs")
    until_fail: bool = _default("until_fail")
    # Set by --repeat for each of its runs.
    private_network: bool = _default("private_network")
    run_index: Optional[int] = _default("run_index")

    @property
    def profile(self) -> str:
        return TRANSITIONAL if self.virtio_transitional else CONTRACT_V1

    def device_set(self) -> DeviceSet:
        vectors: Dict[str, int] = {}
        for group in ("net", "blk", "input", "snd"):
            count = getattr(self, f"virtio_{group}_vectors")
            if count is None:
                count = self.virtio_msix_vectors
            if self.virtio_disable_msix:
                count = 0
            if count is not None:
                vectors[group] = count
        return DeviceSet(
            profile=self.profile, tablet=self.with_virtio_tablet or self.with_input_tablet_events,
            sound=self.with_virtio_snd,
            vectors=tuple(sorted(vectors.items())),
        )

    def device_tests(self) -> Tuple[DeviceTest, ...]:
        """The device tests this run requires (its --with-... flags)."""
        return tuple(t for t in DEVICE_TESTS if getattr(self, t.option))

    def requirements(self) -> Tuple[Requirement, ...]:
        required = [Requirement(name, switch=t.guest_switch, flag=t.flag)
                    for t in self.device_tests() for name in t.tests]
        return profile_requirements(self.profile, self.with_virtio_snd, not self.disable_udp,
                                    [*required, *self.require_tests])

    def validate(self) -> None:
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise UsageError(f"--timeout must be a positive, finite number of seconds, not {self.timeout:g}")
        for name, port in (("--http-port", self.http_port), ("--udp-port", self.udp_port)):
            if not 1 <= port <= 65535:
                raise UsageError(f"{name} must be a port from 1 to 65535, not {port}")
        if not re.fullmatch(r"/[A-Za-z0-9._~/-]*", self.http_path):
            raise UsageError(
                f"--http-path must start with / and hold only URL-safe characters, not {self.http_path!r}",
                hint=f"the guest's default is {DEFAULT_HTTP_PATH}",
            )
        if self.memory < 64:
            raise UsageError(f"--memory is in MiB and must be at least 64, not {self.memory}")
        if not 1 <= self.smp <= 256:
            raise UsageError(f"--smp must be from 1 to 256, not {self.smp}")
        if self.accel not in ACCELS:
            raise UsageError(f"--accel must be one of {', '.join(ACCELS)}, not {self.accel!r}")
        for name in self.require_tests:
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise UsageError(f"--require-test {name!r} is not a test name such as virtio-net")
        if self.disk is not None:
            check_disk(self.disk)
        self._validate_repeat()
        if self.artifacts.exists() and not self.artifacts.is_dir():
            raise UsageError(f"--artifacts {self.artifacts} exists and is not a folder")
        self._validate_devices()

    def _validate_repeat(self) -> None:
        if not 1 <= self.repeat <= MAX_RUNS:
            raise UsageError(f"--repeat must be from 1 to {MAX_RUNS}, not {self.repeat}")
        if self.jobs is not None and self.jobs < 1:
            raise UsageError(f"--jobs must be at least 1, not {self.jobs}")
        if self.repeat > 1 and self.dry_run:
            raise UsageError("--dry-run shows the command of one run: give it without --repeat")
        if self.repeat > 1 and not self.snapshot and self.jobs != 1:
            raise UsageError("--no-snapshot with runs at once: they would all write the one image",
                             hint="add --jobs 1, or keep the default --snapshot")

    def _validate_devices(self) -> None:
        if self.virtio_transitional:
            extras = (("--with-virtio-snd", self.with_virtio_snd), ("--with-virtio-tablet", self.with_virtio_tablet))
            for flag, on in extras:
                if on:
                    raise UsageError(f"{flag} cannot be used with --virtio-transitional: early images have no driver "
                                     "for it")
        vector_flags = [f"--virtio-{g}-vectors" for g in ("net", "blk", "input", "snd")
                        if getattr(self, f"virtio_{g}_vectors") is not None]
        if self.virtio_msix_vectors is not None:
            vector_flags.insert(0, "--virtio-msix-vectors")
        for flag in vector_flags:
            value = getattr(self, flag[2:].replace("-", "_"))
            if not 1 <= value <= 2048:
                raise UsageError(f"{flag} must be from 1 to 2048, not {value}",
                                 hint="--virtio-disable-msix forces INTx")
        msix_required = [f"--require-virtio-{d}-msix" for d in ("net", "blk", "snd", "input")
                         if getattr(self, f"require_virtio_{d}_msix")]
        if self.virtio_disable_msix and (vector_flags or msix_required):
            raise UsageError(f"--virtio-disable-msix cannot be combined with {', '.join(vector_flags + msix_required)}")
        if self.require_intx and self.require_msi:
            raise UsageError("--require-intx and --require-msi contradict each other; give one")
        if not self.with_virtio_snd:
            for flag, on in (("--require-virtio-snd-msix", self.require_virtio_snd_msix),
                             ("--virtio-snd-vectors", self.virtio_snd_vectors is not None)):
                if on:
                    raise UsageError(f"{flag} needs --with-virtio-snd (there is no sound device otherwise)")
        if self.virtio_transitional:
            for test in self.device_tests():
                if test.after in ("virtio-input", "virtio-snd"):
                    raise UsageError(f"{test.flag} cannot be used with --virtio-transitional: early images have no "
                                     f"{test.after} device")
        if self.with_snd_buffer_limits and not self.with_virtio_snd:
            raise UsageError("--with-snd-buffer-limits needs --with-virtio-snd (there is no sound device otherwise)")
        if not 1 <= self.blk_resize_delta_mib <= 1024 * 1024:
            raise UsageError(f"--blk-resize-delta-mib must be from 1 to 1048576, not {self.blk_resize_delta_mib}")
        for name in ("virtio_snd_wav_peak_threshold", "virtio_snd_wav_rms_threshold"):
            if not 0 <= getattr(self, name) <= 32767:
                raise UsageError(f"--{name.replace('_', '-')} is on the 16-bit scale: from 0 to 32767")
        if self.http_log is not None and self.http_log.is_dir():
            raise UsageError(f"--http-log {self.http_log} is a folder", hint="give a file name")



def check_disk(disk: Path) -> None:
    if not disk.exists():
        raise UsageError(f"--disk {disk} does not exist", hint="give the path of a qcow2 or raw image")
    if disk.is_dir():
        raise UsageError(f"--disk {disk} is a directory, not a disk image", hint="give the image file inside it")
    try:
        with open(disk, "rb"):
            pass
    except OSError as exc:
        raise UsageError(f"--disk {disk} cannot be read: {exc.strerror}") from exc
