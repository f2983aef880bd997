"""The image-building commands (``python -m images``, and the Invoke tasks), and the test guest
as the default disk of the Invoke front.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from harness.cli import Front
from harness.config import guest_http_url
from harness.console import Console
from images import provision, testguest


def default_test_guest(console: Console) -> Path:
    """The built-in test guest, built first when missing or out of date."""
    if not testguest.is_current(testguest.DEFAULT_OUT):
        console.info(f"building the test guest at {testguest.DEFAULT_OUT} (once)...")
    return testguest.ensure()


def cmd_build_test_guest(args: argparse.Namespace, console: Console, front: Front) -> int:
    variant = testguest.SOUND if args.sound else testguest.DEFAULT
    image = testguest.build(args.out, variant=variant)
    console.info(
        f"built in {image.manifest['build_seconds']} s, {int(image.manifest['size_bytes']) / 2**20:.1f} MiB, "
        f"kernel {image.manifest['kernel']}"
    )
    console.verdict(str(image.path))
    if args.installer_iso:
        console.verdict(str(testguest.build_installer_iso(args.installer_iso, image.path, variant=variant)))
    return 0


def cmd_provision_media(args: argparse.Namespace, console: Console, front: Front) -> int:
    settings = provision.GuestSettings(
        http_url=args.http_url or guest_http_url(args.http_port, args.http_path),
        udp_port=args.udp_port,
        dns_host=args.dns_host,
        blk_root=args.blk_root,
        test_switches=tuple(s if s.startswith("--test-") else f"--test-{s}" for s in args.test_switch),
        guest_switches=args.guest_switch,
        check_guest_switches=args.check_guest_switches,
        test_signing=args.test_signing,
        infs=args.inf,
        with_virtio_snd=args.with_virtio_snd,
        input_compat=args.virtio_input_compat_id_name,
        edition=args.edition,
        image_index=args.image_index,
        arch=args.arch,
        admin_password=args.admin_password,
        computer_name=args.computer_name,
        product_key=args.product_key or os.environ.get("AERO_WIN7_PRODUCT_KEY") or None,
    )
    files = provision.build_media(args.drivers, args.selftest, settings, args.out)
    console.info(f"{len(files)} files; the task runs: {provision.schtasks_line(settings)}")
    console.verdict(str(args.out))
    return 0


IMAGES = Front(
    prog="python -m images",
    description="Build guest images for the Aero virtio selftest: the Linux test guest, Windows provisioning media.",
    commands={"build-test-guest": cmd_build_test_guest, "provision-media": cmd_provision_media},
)
