"""Host side of the Aero virtio selftest: run a guest under QEMU and judge its COM1 markers."""

__version__ = "0.1.0"
