"""The virtio devices a run attaches, per device profile. Pure.

Two profiles (docs/guest-contract.md, "Devices"):

- ``contract-v1`` (the default): what current Aero drivers bind to: modern-only
  virtio-pci functions (``disable-legacy=on``, PCI revision 01), plus a virtio
  keyboard and mouse; a tablet and a sound device on request.
- ``transitional``: what early images (the first selftest and drivers) bind
  to: QEMU's default transitional virtio-blk and virtio-net, no input.

Each device carries the PCI identity the guest's INF matches, so the PCI
preflight checks QEMU against the same table that builds its command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Mapping, Optional, Tuple

VIRTIO_VENDOR = 0x1AF4
CONTRACT_V1 = "contract-v1"
TRANSITIONAL = "transitional"
PROFILES = (CONTRACT_V1, TRANSITIONAL)

# The ids docs/guest-contract.md names: QMP commands (set_link, input-send-event, block_resize) address these.
DRIVE_ID = "drive0"
NETDEV_ID = "net0"
AUDIODEV_ID = "snd0"


@dataclass(frozen=True)
class Device:
    role: str  # blk, net, kbd, mouse, tablet, snd
    driver: str  # QEMU's device name
    qdev_id: str
    pci_device: int  # the PCI device ID the guest's INF matches
    subsystems: Tuple[int, ...]  # PCI subsystem IDs that driver accepts (vendor is always 0x1af4)
    props: Tuple[Tuple[str, str], ...] = ()
    irq_name: str = ""  # the guest's name for it in virtio-<dev>-irq lines and irq_mode fields

    @property
    def hardware_id(self) -> str:
        return f"PCI\\VEN_{VIRTIO_VENDOR:04X}&DEV_{self.pci_device:04X}"

    def device_arg(self) -> str:
        return ",".join([self.driver, *(f"{k}={v}" for k, v in self.props)])


@dataclass(frozen=True)
class DeviceSet:
    """What a run asks for; ``attach`` turns it into devices for one QEMU."""

    profile: str = CONTRACT_V1
    tablet: bool = False
    sound: bool = False
    # MSI-X vector count per role group (blk, net, input, snd); 0 forces INTx.
    vectors: Tuple[Tuple[str, int], ...] = ()
    disk_bootindex: int = 0


# Stock QEMU gives every modern virtio function subsystem 1af4:1100; the Aero input
# INF binds that only in compat mode (CompatIdName=1), its strict entries want the
# per-kind subsystem IDs (0x0010 keyboard, 0x0011 mouse, 0x0012 tablet).
QEMU_SUBSYSTEM = 0x1100
_MODERN = {
    "blk": ("virtio-blk-pci", "aero_virtio_blk0", 0x1042, (QEMU_SUBSYSTEM,), "virtio-blk"),
    "net": ("virtio-net-pci", "aero_virtio_net0", 0x1041, (QEMU_SUBSYSTEM,), "virtio-net"),
    "kbd": ("virtio-keyboard-pci", "aero_virtio_kbd0", 0x1052, (QEMU_SUBSYSTEM, 0x0010), "virtio-input"),
    "mouse": ("virtio-mouse-pci", "aero_virtio_mouse0", 0x1052, (QEMU_SUBSYSTEM, 0x0011), "virtio-input"),
    "tablet": ("virtio-tablet-pci", "aero_virtio_tablet0", 0x1052, (QEMU_SUBSYSTEM, 0x0012), "virtio-input"),
    "snd": ("virtio-sound-pci", "aero_virtio_snd0", 0x1059, (QEMU_SUBSYSTEM,), "virtio-snd"),
}
# Transitional functions carry the legacy device IDs and the virtio device type as subsystem.
_TRANSITIONAL = {
    "blk": ("virtio-blk-pci", "aero_virtio_blk0", 0x1001, (0x0002,), "virtio-blk"),
    "net": ("virtio-net-pci", "aero_virtio_net0", 0x1000, (0x0001,), "virtio-net"),
}
VECTOR_GROUP = {"blk": "blk", "net": "net", "kbd": "input", "mouse": "input", "tablet": "input", "snd": "snd"}
# The first QEMU release with each device (a QEMU that lacks one the run needs is told so).
FIRST_QEMU = {"virtio-sound-pci": "8.2"}


def roles(wanted: DeviceSet) -> List[str]:
    if wanted.profile == TRANSITIONAL:
        return ["blk", "net"]  # early images know nothing else (a tablet or sound is refused up front)
    return ["blk", "net", "kbd", "mouse"] + (["tablet"] if wanted.tablet else []) + (["snd"] if wanted.sound else [])


def attach(wanted: DeviceSet, properties: Optional[Mapping[str, FrozenSet[str]]] = None) -> List[Device]:
    """The devices of this set, with the properties this QEMU has (``properties``: driver → names; None: assume all)."""
    vectors = dict(wanted.vectors)
    out = []
    for role in roles(wanted):
        table = _TRANSITIONAL if wanted.profile == TRANSITIONAL and role in _TRANSITIONAL else _MODERN
        driver, qdev_id, pci_device, subsystems, irq_name = table[role]
        modern = table is _MODERN and wanted.profile == CONTRACT_V1
        has = properties.get(driver, frozenset()) if properties is not None else None
        props: List[Tuple[str, str]] = []
        if role == "blk":
            props += [("drive", DRIVE_ID), ("bootindex", str(wanted.disk_bootindex))]
        elif role == "net":
            props.append(("netdev", NETDEV_ID))
        elif role == "snd":
            props.append(("audiodev", AUDIODEV_ID))
        props.append(("id", qdev_id))
        if modern:
            props.append(("disable-legacy", "on"))
            # Upstream sets the revision explicitly; stock 7.2 and 10.0 lack the property yet
            # report revision 01 for modern-only functions (docs/guest-contract.md), so only where it exists.
            if has is None or "x-pci-revision" in has:
                props.append(("x-pci-revision", "0x01"))
        group = VECTOR_GROUP[role]
        if group in vectors:
            props.append(("vectors", str(vectors[group])))
        out.append(Device(role, driver, qdev_id, pci_device, subsystems, tuple(props), irq_name))
    return out


@dataclass(frozen=True)
class PciFunction:
    """One function as QMP query-pci reports it."""

    qdev_id: str
    vendor: int
    device: int
    subsystem_vendor: int
    subsystem: int
    slot: str = ""

    def describe(self) -> str:
        return (f"{self.qdev_id or '?'} at {self.slot}: {self.vendor:04x}:{self.device:04x} "
                f"subsystem {self.subsystem_vendor:04x}:{self.subsystem:04x}")


def pci_functions(query_pci: object) -> List[PciFunction]:
    """Flatten QMP query-pci's reply (buses, and buses behind bridges)."""
    found: List[PciFunction] = []

    def walk(devices: object, bus: int) -> None:
        if not isinstance(devices, list):
            return
        for dev in devices:
            if not isinstance(dev, dict):
                continue
            ids = dev.get("id", {}) if isinstance(dev.get("id"), dict) else {}
            found.append(PciFunction(
                qdev_id=str(dev.get("qdev_id", "")),
                vendor=int(ids.get("vendor", -1)), device=int(ids.get("device", -1)),
                subsystem_vendor=int(ids.get("subsystem-vendor", -1)), subsystem=int(ids.get("subsystem", -1)),
                slot=f"{bus:02x}:{int(dev.get('slot', 0)):02x}.{int(dev.get('function', 0))}",
            ))
            bridge = dev.get("pci_bridge")
            if isinstance(bridge, dict) and isinstance(bridge.get("bus"), dict):
                walk(bridge.get("devices"), int(bridge["bus"].get("secondary", 0)))

    if isinstance(query_pci, list):
        for bus in query_pci:
            if isinstance(bus, dict):
                walk(bus.get("devices"), int(bus.get("bus", 0)))
    return found


def preflight_problems(devices: List[Device], functions: List[PciFunction]) -> List[str]:
    """What QEMU attached that differs from what the guest's drivers match; empty when all is well."""
    by_id: Dict[str, PciFunction] = {f.qdev_id: f for f in functions if f.qdev_id}
    problems = []
    for dev in devices:
        fn = by_id.get(dev.qdev_id)
        want = f"{VIRTIO_VENDOR:04x}:{dev.pci_device:04x}"
        if fn is None:
            problems.append(f"{dev.driver} ({dev.qdev_id}) is not on the PCI bus; expected {want}")
            continue
        if fn.vendor != VIRTIO_VENDOR or fn.device != dev.pci_device:
            problems.append(f"{fn.describe()}; expected {want} ({dev.hardware_id})")
        elif fn.subsystem_vendor != VIRTIO_VENDOR or fn.subsystem not in dev.subsystems:
            accepted = " or ".join(f"{VIRTIO_VENDOR:04x}:{s:04x}" for s in dev.subsystems)
            problems.append(f"{fn.describe()}; expected subsystem {accepted}")
    return problems
