"""Find, or fetch, a QEMU of a given major version for the test matrix.

Standard library only: the Nox sessions import it before any virtual
environment exists. Where a QEMU N comes from, in this order:

1. a binary the user names: ``AERO_QEMU_<N>`` in the environment, or a line
   ``<N> = /path/to/qemu-system-x86_64`` under ``[qemu]`` in ``qemu-builds.ini``
   at the repository root;
2. a ``qemu-system-x86_64`` of that major version on ``PATH`` or in the usual
   install prefixes (``/usr/local/bin``, ``/opt/qemu*/bin``, ``~/.local/bin``,
   ``/usr/bin``);
3. on Debian-family hosts, the version Debian's archive carries for this
   release or its backports suite, fetched with ``apt-get download`` through a
   private apt state (no root, the host's apt sources untouched) and unpacked
   with ``dpkg -x`` into a cache. A small wrapper script beside it sets
   ``QEMU_MODULE_DIR`` and ``-L`` so that it runs from there.
"""

from __future__ import annotations

import configparser
import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILE = REPO_ROOT / "qemu-builds.ini"
BINARY = "qemu-system-x86_64"
PACKAGES = ("qemu-system-x86", "qemu-system-common", "qemu-system-data", "qemu-utils", "seabios")


class QemuBuildError(Exception):
    """A QEMU build could not be found or fetched; the message says how to supply one."""


@dataclass(frozen=True)
class QemuBuild:
    binary: str
    version: str
    origin: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


def version_of(binary: str) -> Optional[str]:
    try:
        out = subprocess.run(
            [binary, "--version"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"version (\d+\.\d+(?:\.\d+)?)", out)
    return match.group(1) if match else None


def named(major: int, config_file: Path = CONFIG_FILE) -> Optional[str]:
    """The binary a user named for this major version, if any."""
    env = os.environ.get(f"AERO_QEMU_{major}")
    if env:
        return env
    if config_file.exists():
        parser = configparser.ConfigParser()
        parser.read(config_file)
        if parser.has_option("qemu", str(major)):
            return parser.get("qemu", str(major))
    return None


def candidates() -> List[str]:
    found: List[str] = []
    on_path = shutil.which(BINARY)
    if on_path:
        found.append(on_path)
    prefixes = ["/usr/local/bin", *sorted(glob.glob("/opt/qemu*/bin")), os.path.expanduser("~/.local/bin"), "/usr/bin"]
    for prefix in prefixes:
        path = os.path.join(prefix, BINARY)
        if os.access(path, os.X_OK) and path not in found:
            found.append(path)
    return found


# --- Debian's archive -------------------------------------------------------


def debian_codename() -> Optional[str]:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return None
    fields = dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', text, re.MULTILINE))
    if fields.get("ID") != "debian":
        return None  # Ubuntu and kin: their archive is not Debian's
    return fields.get("VERSION_CODENAME") or None


def debian_mirror() -> Optional[str]:
    """The Debian archive URL this host's apt already uses."""
    texts = []
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*"))]:
        if path.endswith((".list", ".sources")):
            try:
                texts.append(Path(path).read_text())
            except OSError:
                pass
    for text in texts:
        for url in re.findall(r"(https?://\S+/debian)/?(?:\s|$)", text):
            return str(url)
    return None


class PrivateApt:
    """apt-get and apt-cache with their own sources and state under ``root``."""

    def __init__(self, root: Path, codename: str, mirror: str) -> None:
        self.root = root
        self.codename = codename
        self.mirror = mirror
        self.sources = root / "sources.list"

    def options(self) -> List[str]:
        return [
            "-o", f"Dir::Etc::SourceList={self.sources}",
            "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", f"Dir::State::Lists={self.root / 'lists'}",
            "-o", f"Dir::Cache={self.root / 'cache'}",
            "-o", "Dir::Etc::Preferences=/nonexistent",
            "-o", "Dir::Etc::PreferencesParts=/nonexistent",
            "-o", "Debug::NoLocking=1",
        ]

    def update(self) -> None:
        (self.root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (self.root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
        signed = f"[signed-by={keyring}] " if os.path.exists(keyring) else ""
        self.sources.write_text(
            "".join(
                f"deb {signed}{self.mirror} {suite} main\n"
                for suite in (self.codename, f"{self.codename}-updates", f"{self.codename}-backports")
            )
        )
        self._run(["apt-get", "update"])

    def _run(self, argv: List[str], cwd: Optional[Path] = None) -> str:
        proc = subprocess.run(
            [argv[0], *self.options(), *argv[1:]], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise QemuBuildError(f"{' '.join(argv)} failed: {proc.stderr.strip()[-400:]}")
        return proc.stdout

    def versions(self, package: str) -> List[str]:
        out = self._run(["apt-cache", "madison", package])
        return [line.split("|")[1].strip() for line in out.splitlines() if line.count("|") >= 2]

    def download(self, packages: List[str], dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        self._run(["apt-get", "download", *packages], cwd=dest)


def upstream_major(debian_version: str) -> int:
    """7 from '1:7.2+dfsg-7+deb12u18', 10 from '1:10.0.2+ds-2~bpo12+1'."""
    return int(debian_version.split(":", 1)[-1].split(".", 1)[0])


def _wrapper(tree: Path, target: str, extra: str = "") -> str:
    return (
        "#!/bin/sh\n"
        "# Runs a QEMU unpacked from Debian's .debs without installing it.\n"
        f'QEMU_MODULE_DIR="{tree}/usr/lib/x86_64-linux-gnu/qemu"\n'
        "export QEMU_MODULE_DIR\n"
        f'exec "{tree}/usr/bin/{target}" {extra}"$@"\n'
    )


def fetch_from_debian(major: int, cache: Path) -> Optional[QemuBuild]:
    """Fetch and unpack Debian's QEMU of this major version into ``cache``; None if the archive has none."""
    codename = debian_codename()
    mirror = debian_mirror()
    if codename is None or mirror is None or shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        return None
    dest = cache / str(major)
    wrapper = dest / "bin" / BINARY
    if wrapper.exists():
        version = version_of(str(wrapper))
        if version and int(version.split(".")[0]) == major:
            return QemuBuild(str(wrapper), version, f"Debian package, cached in {dest}")
    apt = PrivateApt(cache / "apt", codename, mirror)
    apt.update()
    matching = [v for v in apt.versions("qemu-system-x86") if upstream_major(v) == major]
    if not matching:
        return None
    version = matching[0]
    debs = dest / "debs"
    if debs.exists():
        shutil.rmtree(debs)
    wanted = [f"{p}={version}" for p in PACKAGES if p != "seabios"]
    # SeaBIOS comes from the same suite as QEMU (QEMU 10 needs a newer one than bookworm's).
    seabios = apt.versions("seabios")
    if seabios:
        wanted.append(f"seabios={seabios[0]}")
    apt.download(wanted, debs)
    tree = dest / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    (dest / "bin").mkdir(exist_ok=True)
    firmware = f'-L "{tree}/usr/share/seabios" -L "{tree}/usr/share/qemu" '
    wrapper.write_text(_wrapper(tree, BINARY, firmware))
    (dest / "bin" / "qemu-img").write_text(_wrapper(tree, "qemu-img"))
    for path in (dest / "bin").iterdir():
        path.chmod(0o755)
    found = version_of(str(wrapper))
    if not found:
        raise QemuBuildError(f"the QEMU unpacked into {tree} does not run; see {wrapper}")
    return QemuBuild(str(wrapper), found, f"Debian package {version}, unpacked in {dest}")


def find(major: int, cache: Path, fetch: bool = True) -> QemuBuild:
    """A QEMU whose major version is ``major``, or QemuBuildError saying how to supply one."""
    user = named(major)
    if user:
        version = version_of(user)
        if version is None:
            raise QemuBuildError(f"the QEMU named for {major} ({user}) does not run or has no version")
        if int(version.split(".")[0]) != major:
            raise QemuBuildError(f"the QEMU named for {major} ({user}) is version {version}, not {major}.x")
        return QemuBuild(user, version, "named by the user")
    seen: Dict[str, str] = {}
    for path in candidates():
        version = version_of(path)
        if version:
            seen[path] = version
            if int(version.split(".")[0]) == major:
                return QemuBuild(path, version, "found installed")
    if fetch:
        build = fetch_from_debian(major, cache)
        if build is not None:
            return build
    found = ", ".join(f"{p} ({v})" for p, v in seen.items()) or "none"
    raise QemuBuildError(
        f"no QEMU {major}.x here (installed: {found}; Debian's archive for this host has none). "
        f"Name one with AERO_QEMU_{major}=/path/to/{BINARY} or a line '{major} = /path' under [qemu] "
        f"in {CONFIG_FILE.name}"
    )
