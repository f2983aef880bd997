"""Test-wide set-up: under pytest-xdist, each worker may get a loopback of its own.

The end-to-end tests serve the guest on the harness's default ports
(127.0.0.1:18080/18081), as a user's run does; two of them at once on one
loopback would refuse each other. With ``AERO_TEST_WORKER_NETNS=1`` (the nox
QEMU sessions set it when they run the suite on several workers, which needs
root), each xdist worker moves into a network namespace of its own before any
test runs: its own 127.0.0.1, so every worker has the default ports, its own
SSH servers and its own test hosts. What the tests download is fetched first,
by the controller, on the host's network.
"""

from __future__ import annotations

import ctypes
import os
import subprocess

CLONE_NEWNET = 0x40000000


def _own_network_namespace() -> None:
    if hasattr(os, "unshare"):  # Python 3.12+
        os.unshare(CLONE_NEWNET)
    else:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def _fetch_what_tests_download() -> None:
    """What the tests would fetch from the package registries, fetched before the workers leave
    the host's network (their namespaces have a loopback only): the harness wheels a remote run
    uploads, the installer CD's boot loader, and the sound guest where QEMU has the device."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    from harness.remote import build_wheels
    from images import testguest
    from tests.e2e.conftest import QEMU, has_virtio_sound

    build_wheels()
    cache = testguest.PackageCache(testguest.DEFAULT_CACHE)
    for package in ("isolinux", "syslinux-common"):
        cache.tree(package)
    if has_virtio_sound(QEMU):
        testguest.ensure(variant=testguest.SOUND)


def pytest_configure(config):  # type: ignore[no-untyped-def]
    if os.environ.get("AERO_TEST_WORKER_NETNS") != "1":
        return
    if os.environ.get("PYTEST_XDIST_WORKER"):
        _own_network_namespace()
    elif getattr(config.option, "numprocesses", None):  # the controller, before it starts the workers
        _fetch_what_tests_download()
