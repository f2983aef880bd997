"""Device profiles, the QEMU properties they use, and the PCI preflight (pure)."""

import pytest

from harness.config import SelftestConfig
from harness.devices import (
    CONTRACT_V1,
    TRANSITIONAL,
    DeviceSet,
    PciFunction,
    attach,
    pci_functions,
    preflight_problems,
)
from harness.errors import UsageError

STOCK = {d: frozenset({"disable-legacy", "vectors"}) for d in (
    "virtio-blk-pci", "virtio-net-pci", "virtio-keyboard-pci", "virtio-mouse-pci", "virtio-tablet-pci",
    "virtio-sound-pci")}


def args(devices):
    return [d.device_arg() for d in devices]


def test_contract_v1_is_modern_only_with_the_protocol_ids():
    devices = attach(DeviceSet(), STOCK)
    assert args(devices) == [
        "virtio-blk-pci,drive=drive0,bootindex=0,id=aero_virtio_blk0,disable-legacy=on",
        "virtio-net-pci,netdev=net0,id=aero_virtio_net0,disable-legacy=on",
        "virtio-keyboard-pci,id=aero_virtio_kbd0,disable-legacy=on",
        "virtio-mouse-pci,id=aero_virtio_mouse0,disable-legacy=on",
    ]
    assert [d.hardware_id for d in devices] == [
        "PCI\\VEN_1AF4&DEV_1042", "PCI\\VEN_1AF4&DEV_1041", "PCI\\VEN_1AF4&DEV_1052", "PCI\\VEN_1AF4&DEV_1052"]


def test_revision_property_only_where_qemu_has_it():
    with_rev = dict(STOCK, **{"virtio-net-pci": STOCK["virtio-net-pci"] | {"x-pci-revision"}})
    net = [d for d in attach(DeviceSet(), with_rev) if d.role == "net"][0]
    blk = [d for d in attach(DeviceSet(), with_rev) if d.role == "blk"][0]
    assert net.device_arg().endswith(",disable-legacy=on,x-pci-revision=0x01")
    assert "x-pci-revision" not in blk.device_arg()


def test_tablet_sound_and_vectors():
    devices = attach(DeviceSet(tablet=True, sound=True, vectors=(("blk", 0), ("input", 4))), STOCK)
    by_role = {d.role: d.device_arg() for d in devices}
    assert by_role["tablet"] == "virtio-tablet-pci,id=aero_virtio_tablet0,disable-legacy=on,vectors=4"
    assert by_role["snd"] == "virtio-sound-pci,audiodev=snd0,id=aero_virtio_snd0,disable-legacy=on"
    assert by_role["blk"].endswith(",vectors=0") and by_role["kbd"].endswith(",vectors=4")
    assert "vectors" not in by_role["net"]


def test_transitional_is_the_seed_devices():
    devices = attach(DeviceSet(profile=TRANSITIONAL), STOCK)
    assert args(devices) == [
        "virtio-blk-pci,drive=drive0,bootindex=0,id=aero_virtio_blk0",
        "virtio-net-pci,netdev=net0,id=aero_virtio_net0",
    ]
    assert [d.pci_device for d in devices] == [0x1001, 0x1000]


QUERY_PCI = [{"bus": 0, "devices": [
    {"bus": 0, "slot": 0, "function": 0, "qdev_id": "", "id": {"vendor": 0x8086, "device": 0x1237,
                                                                "subsystem-vendor": 0x1af4, "subsystem": 0x1100}},
    {"bus": 0, "slot": 3, "function": 0, "qdev_id": "aero_virtio_blk0",
     "id": {"vendor": 0x1af4, "device": 0x1042, "subsystem-vendor": 0x1af4, "subsystem": 0x1100}},
    {"bus": 0, "slot": 4, "function": 0, "qdev_id": "aero_virtio_net0",
     "id": {"vendor": 0x1af4, "device": 0x1000, "subsystem-vendor": 0x1af4, "subsystem": 0x0001}},
    {"bus": 0, "slot": 5, "function": 0, "qdev_id": "bridge", "id": {"vendor": 0x1b36, "device": 1},
     "pci_bridge": {"bus": {"number": 1, "secondary": 1, "subordinate": 1}, "devices": [
         {"bus": 1, "slot": 1, "function": 0, "qdev_id": "aero_virtio_kbd0",
          "id": {"vendor": 0x1af4, "device": 0x1052, "subsystem-vendor": 0x1af4, "subsystem": 0x1234}}]}},
]}]


def test_query_pci_is_flattened_through_bridges():
    functions = pci_functions(QUERY_PCI)
    assert [f.qdev_id for f in functions] == ["", "aero_virtio_blk0", "aero_virtio_net0", "bridge", "aero_virtio_kbd0"]
    assert functions[-1].slot == "01:01.0"
    assert pci_functions({"not": "a list"}) == []


def test_preflight_names_each_mismatch():
    problems = preflight_problems(attach(DeviceSet(), STOCK), pci_functions(QUERY_PCI))
    assert len(problems) == 3
    assert problems[0].startswith("aero_virtio_net0 at 00:04.0: 1af4:1000") and "expected 1af4:1041" in problems[0]
    assert "expected subsystem 1af4:1100 or 1af4:0010" in problems[1]
    assert problems[2] == "virtio-mouse-pci (aero_virtio_mouse0) is not on the PCI bus; expected 1af4:1052"


def test_preflight_passes_on_what_stock_qemu_reports():
    functions = [PciFunction(d.qdev_id, 0x1af4, d.pci_device, 0x1af4, 0x1100) for d in attach(DeviceSet(), STOCK)]
    assert preflight_problems(attach(DeviceSet(), STOCK), functions) == []


def test_config_turns_flags_into_a_device_set():
    cfg = SelftestConfig(virtio_msix_vectors=8, virtio_net_vectors=2, with_virtio_tablet=True)
    assert cfg.profile == CONTRACT_V1
    assert dict(cfg.device_set().vectors) == {"net": 2, "blk": 8, "input": 8, "snd": 8}
    assert dict(SelftestConfig(virtio_disable_msix=True).device_set().vectors) == {
        "net": 0, "blk": 0, "input": 0, "snd": 0}


def test_config_requirements_per_profile():
    names = [r.name for r in SelftestConfig().requirements()]
    assert names == ["virtio-blk", "virtio-input", "virtio-input-bind", "virtio-net", "virtio-net-udp",
                     "virtio-snd", "virtio-snd-capture", "virtio-snd-duplex"]
    assert [r.name for r in SelftestConfig(disable_udp=True).requirements()].count("virtio-net-udp") == 0
    early = SelftestConfig(virtio_transitional=True, require_tests=("virtio-foo",)).requirements()
    assert [r.name for r in early] == ["virtio-blk", "virtio-net", "virtio-foo"]
    snd = {r.name: r.allowed for r in SelftestConfig(with_virtio_snd=True).requirements()}
    assert snd["virtio-snd-duplex"] == ("PASS",)
    assert {r.name: r.allowed for r in SelftestConfig().requirements()}["virtio-snd"] == ("PASS", "SKIP")


@pytest.mark.parametrize("settings, words", [
    (dict(virtio_transitional=True, with_virtio_snd=True), "--with-virtio-snd cannot be used with"),
    (dict(virtio_transitional=True, with_virtio_tablet=True), "--with-virtio-tablet cannot be used with"),
    (dict(virtio_disable_msix=True, virtio_net_vectors=4), "--virtio-disable-msix cannot be combined"),
    (dict(virtio_disable_msix=True, require_virtio_blk_msix=True), "--require-virtio-blk-msix"),
    (dict(require_intx=True, require_msi=True), "contradict"),
    (dict(virtio_msix_vectors=0), "--virtio-msix-vectors must be from 1 to 2048"),
    (dict(require_virtio_snd_msix=True), "needs --with-virtio-snd"),
])
def test_device_flag_conflicts_are_usage_errors(settings, words):
    with pytest.raises(UsageError, match=words.replace("-", "\\-")):
        SelftestConfig(**settings).validate()
