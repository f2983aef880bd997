"""A real OpenSSH server for the remote tests, with throw-away keys.

``SSHServer`` runs Debian's ``/usr/sbin/sshd`` on a given address, optionally
inside a network namespace (a test "host" with its own loopback, so two hosts
can each serve 18080 to their own guest). ``SSHWorld`` holds the client side:
a user key, an ssh_config with host aliases and a known_hosts file.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional

SSHD = "/usr/sbin/sshd"


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SSHServer:
    def __init__(self, root: Path, authorized_key: Path, address: str = "127.0.0.1", port: Optional[int] = None,
                 netns: Optional[str] = None, sftp: bool = True,
                 env: Optional[Dict[str, str]] = None) -> None:
        self.root = root
        self.address = address
        self.port = port or free_port()
        self.netns = netns
        root.mkdir(parents=True, exist_ok=True)
        self.host_key = root / "host_ed25519"
        keygen(self.host_key)
        shutil.copyfile(authorized_key, root / "authorized_keys")
        self.config = root / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\n"
            f"ListenAddress {address}\n"
            f"HostKey {self.host_key}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\n"
            f"PidFile {root / 'sshd.pid'}\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
            + ("Subsystem sftp internal-sftp\n" if sftp else "")  # without it: sshd's compiled-in default
            # Sessions' environment, such as HOME (a fresh host) or PATH (the host's own tools).
            + ("SetEnv " + " ".join(f"{k}={v}" for k, v in env.items()) + "\n" if env else "")
            + "LogLevel VERBOSE\n"
        )
        self.proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def host_key_line(self) -> str:
        """The known_hosts line for this server."""
        kind, b64 = (self.host_key.with_suffix(".pub").read_text().split()[:2])
        name = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{name} {kind} {b64}\n"

    def start(self) -> SSHServer:
        try:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        except OSError:
            pass  # not root: the system's sshd package or service made it, or sshd says what is missing
        argv: List[str] = [SSHD, "-D", "-e", "-f", str(self.config)]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        log = open(self.root / "sshd.log", "ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()}")
            if self._listening():
                return self
            time.sleep(0.1)
        raise RuntimeError("sshd did not start listening")

    def _listening(self) -> bool:
        if self.netns:
            out = subprocess.run(["ip", "netns", "exec", self.netns, "ss", "-ltn"], capture_output=True, text=True)
            return f"{self.address}:{self.port}" in out.stdout
        try:
            with socket.create_connection((self.address, self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class NetnsHost:
    """A test host: a network namespace joined to this one by a veth pair."""

    def __init__(self, name: str, index: int) -> None:
        self.name = name
        self.outer = f"{name}-o"
        self.inner = f"{name}-i"
        self.host_addr = f"10.231.{index}.1"
        self.addr = f"10.231.{index}.2"

    def __enter__(self) -> NetnsHost:
        self._cleanup()
        steps = [
            ["ip", "netns", "add", self.name],
            ["ip", "link", "add", self.outer, "type", "veth", "peer", "name", self.inner],
            ["ip", "link", "set", self.inner, "netns", self.name],
            ["ip", "addr", "add", f"{self.host_addr}/30", "dev", self.outer],
            ["ip", "link", "set", self.outer, "up"],
            ["ip", "netns", "exec", self.name, "ip", "addr", "add", f"{self.addr}/30", "dev", self.inner],
            ["ip", "netns", "exec", self.name, "ip", "link", "set", self.inner, "up"],
            ["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"],
        ]
        for step in steps:
            subprocess.run(step, check=True, capture_output=True)
        return self

    def _cleanup(self) -> None:
        subprocess.run(["ip", "link", "del", self.outer], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def __exit__(self, *exc: object) -> None:
        self._cleanup()


@contextmanager
def ssh_hosts_in_namespaces(world: SSHWorld, root: Path, prefix: str, first_index: int) -> Iterator[None]:
    """kvm-a and kvm-b in ``world``: an sshd each, in a network namespace each (``<prefix>a``, ``<prefix>b``)."""
    with NetnsHost(f"{prefix}a", first_index) as host_a, NetnsHost(f"{prefix}b", first_index + 1) as host_b:
        servers = []
        try:
            for name, host in (("kvm-a", host_a), ("kvm-b", host_b)):
                srv = SSHServer(root / name, world.user_key.with_suffix(".pub"), address=host.addr, port=22,
                                netns=host.name).start()
                servers.append(srv)
                world.alias(name, srv)
            yield
        finally:
            for srv in servers:
                srv.stop()


def can_make_netns() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


class SSHWorld:
    """The client side: a user key, an ssh_config with aliases, a known_hosts file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.user_key = root / "id_ed25519"
        keygen(self.user_key)
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text("")
        self.ssh_config = root / "ssh_config"
        self.ssh_config.write_text("")

    def alias(self, name: str, server: SSHServer, key: Optional[Path] = None, known: bool = True) -> None:
        with open(self.ssh_config, "a") as f:
            f.write(
                f"Host {name}\n  HostName {server.address}\n  Port {server.port}\n"
                f"  User {pwd.getpwuid(os.getuid()).pw_name}\n  IdentityFile {key or self.user_key}\n"
                f"  IdentitiesOnly yes\n  UserKnownHostsFile {self.known_hosts}\n"
            )
        if known:
            with open(self.known_hosts, "a") as f:
                f.write(server.host_key_line)
