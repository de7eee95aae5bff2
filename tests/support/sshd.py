"""A real OpenSSH server on 127.0.0.1 for tests: a given host key, given authorized keys, a free port.

It stands in for an Azure VM or a user's SSH host. It needs root (sshd's privilege separation) and
``/usr/sbin/sshd``; ``sshd_unavailable()`` says why not when it cannot run, for a clear skip.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from labctl.keys import generate_ed25519

SSHD = "/usr/sbin/sshd"


def sshd_unavailable() -> str | None:
    if not Path(SSHD).is_file():
        return f"{SSHD} is not installed (apt-get install openssh-server)"
    if os.geteuid() != 0:
        return "sshd needs root for privilege separation; run the tests as root to include these"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class KeyPair:
    private_path: Path
    public: str  # "ssh-ed25519 AAAA... comment"

    @classmethod
    def create(cls, directory: Path, name: str) -> KeyPair:
        pair = generate_ed25519(name)
        path = directory / name
        path.write_text(pair.private_openssh)
        path.chmod(0o600)
        (directory / f"{name}.pub").write_text(pair.public_line + "\n")
        return cls(path, pair.public_line)


@dataclass
class SSHServer:
    """One sshd process; ``stop()``/``start()`` play a reboot, ``replace_host_key()`` a rebuilt machine."""

    workdir: Path
    port: int
    host_key: KeyPair
    authorized: list[str]
    user: str = "root"
    host: str = "127.0.0.1"
    extra_config: list[str] = field(default_factory=list)  # more sshd_config lines, e.g. to forbid a feature
    netns: str | None = None  # run inside this network namespace (a machine with an address of its own)
    # Directories that are the machine's own: an overlay whose writes land under workdir, never in this computer's.
    machine_dirs: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def config_path(self) -> Path:
        return self.workdir / "sshd_config"

    @property
    def log_path(self) -> Path:
        return self.workdir / "sshd.log"

    def _write_config(self) -> None:
        (self.workdir / "authorized_keys").write_text("".join(f"{k}\n" for k in self.authorized))
        self.config_path.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.host}",
                    f"HostKey {self.host_key.private_path}",
                    f"PidFile {self.workdir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}",
                    "StrictModes no",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    "AllowTcpForwarding yes",
                    "Subsystem sftp internal-sftp",
                    "LogLevel VERBOSE",
                    *self.extra_config,
                    "",
                ]
            )
        )

    def start(self, *, timeout: float = 15.0) -> SSHServer:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self._write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the process, closed with it
        inside = ["ip", "netns", "exec", self.netns] if self.netns else []  # execs sshd: the same pid
        self.proc = subprocess.Popen(
            [*inside, *self._mount_namespace(), SSHD, "-D", "-e", "-f", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() can end the sessions too
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    if sock.recv(64).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not answer on {self.host}:{self.port}: {self.log_path.read_text()[-2000:]}")

    def _mount_namespace(self) -> list[str]:
        """A prefix that runs sshd in a mount namespace of its own, like a machine of its own: the login user's
        ~/.bashrc (which bash reads for every SSH command; here a pyenv setup that costs most of a second and
        takes a lock) is empty there, and each of ``machine_dirs`` is an overlay writing under ``workdir``."""
        if shutil.which("unshare") is None:
            return []
        script = ["set -e"]
        for folder in self.machine_dirs:
            upper, work = self.machine_file(folder), self._overlay(folder) / "work"
            upper.mkdir(parents=True, exist_ok=True)
            work.mkdir(parents=True, exist_ok=True)
            options = f"lowerdir={folder},upperdir={upper},workdir={work}"
            script.append(f"mount -t overlay overlay -o {shlex.quote(options)} {shlex.quote(folder)}")
        bashrc = Path(pwd.getpwnam(self.user).pw_dir) / ".bashrc"
        if bashrc.is_file():  # after the overlays: one of them may hold it
            (self.workdir / "empty").write_text("")
            script.append(f"mount --bind {shlex.quote(str(self.workdir / 'empty'))} {shlex.quote(str(bashrc))}")
        script.append('exec "$@"')  # sshd keeps this pid
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(script), "machine"]

    def _overlay(self, folder: str) -> Path:
        return self.workdir / "machine" / folder.strip("/").replace("/", "_")

    def machine_file(self, path: str) -> Path:
        """Where a file that the machine wrote at ``path`` (under one of ``machine_dirs``) is on this computer."""
        for folder in self.machine_dirs:
            if path == folder or path.startswith(folder.rstrip("/") + "/"):
                return self._overlay(folder) / "upper" / path[len(folder.rstrip("/")) :].lstrip("/")
        raise ValueError(f"{path} is not under the machine's own directories {self.machine_dirs}")

    def stop(self) -> None:
        """Stop the server and drop every open connection, as a machine going away would."""
        if self.proc is None:
            return
        # Each connection's sshd calls setsid(), so the process group does not reach them: end them by ancestry.
        for pid in _descendants(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def replace_host_key(self) -> KeyPair:
        self.host_key = KeyPair.create(self.workdir, f"host-{time.monotonic_ns()}")
        return self.host_key


def make_server(
    workdir: Path,
    *,
    port: int | None = None,
    host_key: KeyPair | None = None,
    authorized_keys: list[str] | None = None,
    machine_dirs: tuple[str, ...] = (),
) -> tuple[SSHServer, KeyPair]:
    """A configured (not yet started) server and a client key it accepts (besides ``authorized_keys``).

    To play a VM whose keys labctl generated, pass ``host_key=KeyPair(private_path, public_line)`` and the
    lab's public key in ``authorized_keys``. The login user is the one running the tests (sshd cannot log in
    users that do not exist), so such a record's ``user`` must be ``server.user``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    client = KeyPair.create(workdir, "client")
    server = SSHServer(
        workdir=workdir,
        port=port or free_port(),
        host_key=host_key or KeyPair.create(workdir, "host"),
        authorized=[client.public, *(authorized_keys or [])],
        user=_login_user(),
        machine_dirs=machine_dirs,
    )
    return server, client


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; the fields after the last ')' do not.
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    found: list[int] = []
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def _login_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


__all__ = ["KeyPair", "SSHServer", "free_port", "make_server", "sshd_unavailable"]
