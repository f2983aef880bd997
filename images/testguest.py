"""Build the Linux test guest that stands in for the Windows 7 selftest image.

The image is a FAT file system on a whole disk (no partition table) with
syslinux as the BIOS boot loader, a Debian kernel and an initramfs holding
busybox, the virtio modules, ``guest/init``, which speaks the selftest
protocol on COM1, and ``guest/aero-guest-tool.c`` compiled here with
``gcc -static`` for what busybox cannot do (a UDP echo). Everything else comes
from Debian packages, fetched with ``apt-get download`` and unpacked with
``dpkg -x`` into a cache; nothing needs root, loop mounts or the host's ``/boot``.

Two variants: the default guest, on the distribution's own kernel, and the
sound guest (``build-test-guest --sound``), whose newer kernel has Linux's
virtio-snd driver (Debian 12's 6.1 has none); it is written to a file of its
own, so the default guest stays small and quick to boot.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import lzma
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from harness.errors import GuestBuildError, UsageError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
GUEST_DIR = Path(__file__).resolve().parent / "guest"
DEFAULT_OUT = REPO_ROOT / "build" / "test-guest.qcow2"
SOUND_OUT = REPO_ROOT / "build" / "test-guest-snd.qcow2"
DEFAULT_CACHE = REPO_ROOT / "build" / "cache"

# Modules the init script loads, in this order after their dependencies.
WANTED_MODULES = (
    "qemu_fw_cfg",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "vfat",
    # The virtio keyboard and mouse (Aero contract v1), with /dev/input/event* nodes.
    "virtio_input",
    "evdev",
)
# Wanted, not required: a kernel without them still makes a guest, without the
# pvpanic crash report and without the installer scenario's CDs.
OPTIONAL_MODULES = (
    # pvpanic lets a crash reach QEMU as a guest-panicked event when the
    # harness adds the device (-device pvpanic).
    "pvpanic_mmio",
    "pvpanic_pci",
    # The installer scenario reads CDs on the IDE controller.
    "isofs",
    "ata_piix",
    "sr_mod",
)
# A FAT file system large enough for the kernel, the initramfs and the
# selftest's 4 MiB scratch file; the qcow2 holds only what is used.
FAT_SIZE_KIB = 48 * 1024
SYSLINUX_CFG = """\
DEFAULT aero
PROMPT 0
TIMEOUT 0
LABEL aero
  LINUX /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0,115200 quiet loglevel=3 panic=1 no_timer_check
"""

# (tool, Debian package that provides it)
TOOLS = (
    ("apt-get", "apt"),
    ("dpkg-deb", "dpkg"),
    ("mkfs.fat", "dosfstools"),
    ("mcopy", "mtools"),
    ("syslinux", "syslinux"),
    ("qemu-img", "qemu-utils"),
    ("gcc", "gcc"),
)


@dataclass(frozen=True)
class GuestImage:
    path: Path
    manifest: Dict[str, str]


def _tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not found:
        raise GuestBuildError(
            f"'{name}' is not installed; it comes with the Debian package '{package}'",
            hint=f"apt-get install -y {package}",
        )
    return found


def _run(argv: Sequence[str], cwd: Optional[Path] = None) -> str:
    proc = subprocess.run(
        list(argv), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if proc.returncode != 0:
        raise GuestBuildError(
            f"{' '.join(argv)} failed with exit code {proc.returncode}:\n{proc.stdout.strip()}"
        )
    return proc.stdout


class PackageCache:
    """Debian packages downloaded and unpacked under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.debs = root / "debs"
        self.trees = root / "trees"

    def deb(self, package: str) -> Path:
        self.debs.mkdir(parents=True, exist_ok=True)
        found = sorted(self.debs.glob(f"{package}_*.deb"))
        if found:
            return found[-1]
        log.info("downloading %s", package)
        _run([_tool("apt-get", "apt"), "download", package], cwd=self.debs)
        found = sorted(self.debs.glob(f"{package}_*.deb"))
        if not found:
            raise GuestBuildError(f"apt-get download {package} produced no .deb")
        return found[-1]

    def tree(self, package: str) -> Path:
        deb = self.deb(package)
        dest = self.trees / deb.stem
        if not (dest / ".unpacked").exists():
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            _run([_tool("dpkg-deb", "dpkg"), "-x", str(deb), str(dest)])
            (dest / ".unpacked").touch()
        return dest

    def field(self, package: str, name: str) -> str:
        return _run([_tool("dpkg-deb", "dpkg"), "-f", str(self.deb(package)), name]).strip()


# Kernel metapackages: Debian's, then Ubuntu's (whose modules live in a
# separate linux-modules-* package).
KERNEL_METAPACKAGES = ("linux-image-amd64", "linux-image-virtual")
# The sound guest's kernel: Debian 12's 6.1 has no virtio-snd driver (CONFIG_SND_VIRTIO
# came with its 6.12, which Debian 12 carries in its security suite as linux-6.12, the same
# kernel as bookworm-backports'); Debian 13's own kernel has it.
SOUND_KERNEL_METAPACKAGES = ("linux-image-6.12-amd64", "linux-image-amd64")


@dataclass(frozen=True)
class Variant:
    """Which guest: its kernel and the modules it adds to the common ones."""

    name: str
    kernel_metapackages: Tuple[str, ...]
    modules: Tuple[str, ...]  # loaded after WANTED_MODULES
    default_out: Path


DEFAULT = Variant("default", KERNEL_METAPACKAGES, (), DEFAULT_OUT)
# virtio_snd brings snd, snd-pcm, snd-timer and soundcore as its dependencies.
SOUND = Variant("sound", SOUND_KERNEL_METAPACKAGES, ("virtio_snd",), SOUND_OUT)


def kernel_packages(cache: PackageCache, metapackages: Sequence[str] = KERNEL_METAPACKAGES) -> List[str]:
    """The versioned kernel package(s) behind the first of ``metapackages`` apt knows."""
    errors = []
    for meta in metapackages:
        try:
            depends = cache.field(meta, "Depends")
        except GuestBuildError as exc:
            errors.append(str(exc).splitlines()[-1])
            continue
        match = re.search(r"(linux-image-(?:unsigned-)?[0-9][^\s,(]*)", depends)
        if not match:
            raise GuestBuildError(f"cannot find the kernel package in {meta}'s Depends: {depends}")
        image = match.group(1)
        packages = [image]
        modules = re.search(r"(linux-modules-[0-9][^\s,(]*)", cache.field(image, "Depends"))
        if modules:
            packages.append(modules.group(1))
            # Ubuntu keeps many file system and disk modules in linux-modules-extra.
            extra = modules.group(1).replace("linux-modules-", "linux-modules-extra-", 1)
            try:
                cache.deb(extra)
                packages.append(extra)
            except GuestBuildError:
                log.info("no %s; going on without it", extra)
        return packages
    raise GuestBuildError(
        f"no kernel package found ({', '.join(metapackages)}): {'; '.join(errors)}",
        hint="run apt-get update, and check that the machine's apt sources are reachable",
    )


def module_depends(data: bytes) -> List[str]:
    """The ``depends=`` entry of a kernel module's .modinfo strings."""
    match = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", data)
    if not match or not match.group(1):
        return []
    return match.group(1).decode().split(",")


def _module_bytes(path: Path) -> bytes:
    """A module's ELF bytes; busybox insmod loads only uncompressed modules."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        proc = subprocess.run([_tool("zstd", "zstd"), "-dc", str(path)], stdout=subprocess.PIPE, check=False)
        if proc.returncode != 0:
            raise GuestBuildError(f"zstd could not decompress {path}")
        return proc.stdout
    return data


def resolve_modules(index: Dict[str, Path], wanted: Iterable[str], builtin: Iterable[str] = ()) -> List[str]:
    """Module names in load order: every module after its dependencies.

    Modules built into the kernel (``builtin``) need no loading and are left out.
    """
    order: List[str] = []
    seen: Set[str] = set(builtin)

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        if name not in index:
            raise GuestBuildError(f"kernel module {name} is not in the kernel package")
        for dep in module_depends(_module_bytes(index[name])):
            visit(dep.replace("-", "_"))
        order.append(name)

    for name in wanted:
        visit(name)
    return order


def module_index(modules_dirs: Iterable[Path]) -> Dict[str, Path]:
    index: Dict[str, Path] = {}
    for modules_dir in modules_dirs:
        for path in modules_dir.rglob("*.ko*"):
            name = path.name.split(".ko")[0].replace("-", "_")
            index[name] = path
    return index


def builtin_modules(modules_dirs: Iterable[Path]) -> List[str]:
    """Names in the kernel's modules.builtin lists (``kernel/fs/fat/vfat.ko``)."""
    names = []
    for modules_dir in modules_dirs:
        for listing in modules_dir.glob("*/modules.builtin"):
            for line in listing.read_text().splitlines():
                if line.strip():
                    names.append(Path(line.strip()).name.split(".ko")[0].replace("-", "_"))
    return names


class Cpio:
    """An initramfs archive in the 'newc' format the kernel unpacks."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        encoded = name.encode() + b"\x00"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        self.ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.buf.write(header + encoded)
        self.buf.write(b"\x00" * (-(len(header) + len(encoded)) % 4))
        self.buf.write(data)
        self.buf.write(b"\x00" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def guest_inputs_digest(variant: Variant = DEFAULT) -> str:
    """A hash of everything of ours that goes into the image."""
    h = hashlib.sha256()
    if variant != DEFAULT:  # the default guest's digest stays what it was
        h.update(repr((variant.name, variant.kernel_metapackages, variant.modules)).encode())
    for path in sorted(GUEST_DIR.iterdir()) + [Path(__file__)]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    h.update(SYSLINUX_CFG.encode())
    return h.hexdigest()[:16]


def busybox_binary(cache: PackageCache) -> Path:
    tree = cache.tree("busybox-static")
    return tree / "bin" / "busybox"


def build_guest_tool(work: Path) -> bytes:
    """guest/aero-guest-tool.c (what busybox cannot do, such as a UDP echo) as a static binary."""
    out = work / "aero-guest-tool"
    argv = [_tool("gcc", "gcc"), "-static", "-Os", "-s", "-o", str(out), str(GUEST_DIR / "aero-guest-tool.c")]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise GuestBuildError(
            f"gcc could not build the guest tool (exit code {proc.returncode}):\n{proc.stdout.strip()}",
            hint="gcc -static needs the static C library: apt-get install -y gcc libc6-dev",
        )
    return out.read_bytes()


def build_initramfs(modules: Dict[str, Path], order: List[str], busybox: Path, tool: bytes) -> bytes:
    archive = Cpio()
    for d in ("bin", "dev", "etc", "lib", "lib/modules", "media", "mnt", "proc", "sys", "tmp"):
        archive.dir(d)
    archive.file("bin/busybox", busybox.read_bytes(), 0o755)
    archive.file("bin/aero-guest-tool", tool, 0o755)
    archive.file("init", (GUEST_DIR / "init").read_bytes(), 0o755)
    archive.file("etc/udhcpc.script", (GUEST_DIR / "udhcpc.script").read_bytes(), 0o755)
    for name in order:
        archive.file(f"lib/modules/{name}.ko", _module_bytes(modules[name]))
    archive.file("etc/modules.order", ("\n".join(order) + "\n").encode())
    return gzip.compress(archive.finish(), compresslevel=9, mtime=0)


def read_manifest(out: Path) -> Optional[Dict[str, str]]:
    path = out.with_suffix(".json")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and out.exists() else None


def is_current(out: Path, variant: Variant = DEFAULT) -> bool:
    manifest = read_manifest(out)
    return manifest is not None and manifest.get("inputs") == guest_inputs_digest(variant)


def build(out: Optional[Path] = None, cache_dir: Path = DEFAULT_CACHE, variant: Variant = DEFAULT) -> GuestImage:
    """Build the test guest image (``variant``'s, at ``out`` or its default path) and return it with its manifest."""
    out = out or variant.default_out
    if out.exists() and out.is_dir():
        raise UsageError(f"--out {out} is a directory", hint="give a file name such as build/test-guest.qcow2")
    for name, package in TOOLS:
        _tool(name, package)
    started = time.monotonic()
    cache = PackageCache(cache_dir)
    kpkgs = kernel_packages(cache, variant.kernel_metapackages)
    trees = [cache.tree(p) for p in kpkgs]
    vmlinuz = sorted((trees[0] / "boot").glob("vmlinuz-*"))
    if not vmlinuz:
        raise GuestBuildError(f"no vmlinuz in {kpkgs[0]}")
    modules_dirs = [d for t in trees for d in (t / "lib" / "modules", t / "usr" / "lib" / "modules") if d.is_dir()]
    index = module_index(modules_dirs)
    builtin = builtin_modules(modules_dirs)
    optional = []
    for name in OPTIONAL_MODULES:
        try:
            resolve_modules(index, [name], builtin)
            optional.append(name)
        except GuestBuildError as exc:
            log.warning("leaving out %s: %s", name, exc)
    try:
        order = resolve_modules(index, [*WANTED_MODULES, *optional, *variant.modules], builtin)
    except GuestBuildError as exc:
        if variant.modules and any(m in str(exc) for m in variant.modules):
            raise GuestBuildError(
                f"{exc} ({' '.join(kpkgs)}): the {variant.name} guest needs a kernel that has it",
                hint=f"it takes the first of {', '.join(variant.kernel_metapackages)} that apt has "
                     "(on Debian 12: linux-image-6.12-amd64, from bookworm-security); run apt-get update",
            ) from exc
        raise
    busybox = busybox_binary(cache)

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aero-guest-", dir=out.parent) as tmp:
        work = Path(tmp)
        initrd = build_initramfs(index, order, busybox, build_guest_tool(work))
        (work / "initrd.gz").write_bytes(initrd)
        shutil.copyfile(vmlinuz[-1], work / "vmlinuz")
        (work / "syslinux.cfg").write_text(SYSLINUX_CFG)
        raw = work / "disk.img"
        _run([_tool("mkfs.fat", "dosfstools"), "-C", "-n", "AEROTEST", str(raw), str(FAT_SIZE_KIB)])
        for name in ("vmlinuz", "initrd.gz", "syslinux.cfg"):
            _run([_tool("mcopy", "mtools"), "-i", str(raw), str(work / name), f"::/{name}"])
        _run([_tool("syslinux", "syslinux"), "--install", str(raw)])
        tmp_out = work / "out.qcow2"
        _run([_tool("qemu-img", "qemu-utils"), "convert", "-c", "-f", "raw", "-O", "qcow2", str(raw), str(tmp_out)])
        tmp_out.replace(out)
    manifest = {
        "variant": variant.name,
        "kernel_package": " ".join(kpkgs),
        "kernel": vmlinuz[-1].name,
        "busybox": cache.deb("busybox-static").name,
        "modules": " ".join(order),
        "inputs": guest_inputs_digest(variant),
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": f"{time.monotonic() - started:.1f}",
        "size_bytes": str(out.stat().st_size),
    }
    out.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    return GuestImage(out, manifest)


def ensure(out: Optional[Path] = None, variant: Variant = DEFAULT) -> Path:
    """The test guest (by default the default variant's), built first when missing or out of date."""
    out = out or variant.default_out
    if not is_current(out, variant):
        log.info("building the %s test guest at %s", variant.name, out)
        build(out, variant=variant)
    return out


ISOLINUX_CFG = """\
DEFAULT install
PROMPT 0
TIMEOUT 0
LABEL install
  LINUX /isolinux/vmlinuz
  INITRD /isolinux/initrd.gz
  APPEND console=ttyS0,115200 quiet loglevel=3 panic=1 no_timer_check aero.scenario=installer
"""


def build_installer_iso(out: Path, guest: Path = DEFAULT_OUT, cache_dir: Path = DEFAULT_CACHE,
                        variant: Variant = DEFAULT) -> Path:
    """A bootable CD that plays the Windows installer for ``invoke install-win7`` tests.

    It boots (isolinux) the test guest's own kernel and initramfs with
    ``aero.scenario=installer`` and carries the test guest's disk, which the
    installer writes onto the new virtio disk.
    """
    import pycdlib

    ensure(guest, variant)
    cache = PackageCache(cache_dir)
    isolinux_bin = cache.tree("isolinux") / "usr" / "lib" / "ISOLINUX" / "isolinux.bin"
    ldlinux = cache.tree("syslinux-common") / "usr" / "lib" / "syslinux" / "modules" / "bios" / "ldlinux.c32"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aero-installer-", dir=out.parent) as tmp:
        work = Path(tmp)
        raw = work / "guest.img"
        _run([_tool("qemu-img", "qemu-utils"), "convert", "-f", "qcow2", "-O", "raw", str(guest), str(raw)])
        for name in ("vmlinuz", "initrd.gz"):
            _run([_tool("mcopy", "mtools"), "-i", str(raw), f"::/{name}", str(work / name)])
        with open(raw, "rb") as src, open(work / "guest.img.gz", "wb") as gz_file:
            with gzip.GzipFile(fileobj=gz_file, mode="wb", compresslevel=6, mtime=0) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        iso = pycdlib.PyCdlib()
        iso.new(interchange_level=1, joliet=3, rock_ridge="1.09", vol_ident="AERO_INSTALLER")
        iso.add_directory("/ISOLINUX", rr_name="isolinux", joliet_path="/isolinux")
        entries = [
            ("/ISOLINUX/ISOLINUX.BIN;1", "isolinux/isolinux.bin", isolinux_bin.read_bytes()),
            ("/ISOLINUX/LDLINUX.C32;1", "isolinux/ldlinux.c32", ldlinux.read_bytes()),
            ("/ISOLINUX/ISOLINUX.CFG;1", "isolinux/isolinux.cfg", ISOLINUX_CFG.encode()),
            ("/ISOLINUX/VMLINUZ.;1", "isolinux/vmlinuz", (work / "vmlinuz").read_bytes()),
            ("/ISOLINUX/INITRD.GZ;1", "isolinux/initrd.gz", (work / "initrd.gz").read_bytes()),
        ]
        for iso_path, name, data in entries:
            iso.add_fp(io.BytesIO(data), len(data), iso_path, rr_name=name.split("/")[-1], joliet_path="/" + name)
        image = work / "guest.img.gz"
        with open(image, "rb") as fp:
            iso.add_fp(fp, image.stat().st_size, "/GUEST.IMG;1", rr_name="guest.img.gz", joliet_path="/guest.img.gz")
            iso.add_eltorito("/ISOLINUX/ISOLINUX.BIN;1", bootcatfile="/ISOLINUX/BOOT.CAT;1", boot_load_size=4,
                             boot_info_table=True)
            partial = work / "installer.iso"
            iso.write(str(partial))
        iso.close()
        partial.replace(out)
    return out
