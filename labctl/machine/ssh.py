"""A machine reached over SSH with paramiko: key auth, the pinned host key, streamed commands, SFTP, tunnels.

The host key is checked against the one labctl pinned, never against ``~/.ssh/known_hosts`` at connect time and
never auto-accepted. A transport that died (a dropped Wi-Fi, a VM that rebooted) is re-opened on the next call.
Docker on the machine is reached through this same verified connection: a private Unix socket on this computer
whose every connection becomes ``docker system dial-stdio`` on the machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko

from labctl.errors import LabctlError
from labctl.hostkeys import HostKeyMismatch, key_line, known_hosts_name, normalize, to_pkey
from labctl.machine.base import Command, CommandFailed, CommandResult, LineFn, LineSplitter, as_shell
from labctl.machine.relay import Relay, bind_loopback
from labctl.machine.streamlocal import open_unix_channel
from labctl.ui import Reporter

if TYPE_CHECKING:
    import docker

log = logging.getLogger("labctl.machine")
# Paramiko logs refusals it recovers from (a session over the limit) as errors; they reach the terminal only
# with --verbose, which configures logging.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

# Errors that mean "not (yet) reachable": worth another try while a machine boots or a network recovers.
_TRANSIENT = (OSError, EOFError, paramiko.SSHException)
DOCKER_SOCKET = "/var/run/docker.sock"
# How long a refused key is retried while waiting (a new VM's user may appear just after sshd starts).
AUTH_GRACE = 20.0


class SSHMachine:
    kind = "ssh"
    needs_tunnel = True

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        key_path: str | Path,
        host_key: str,
        *,
        ui: Reporter | None = None,
        connect_timeout: float = 15.0,
        reconnect_wait: float = 60.0,
        via: SSHMachine | None = None,
        mark: bool = True,
        own_via: bool = False,
    ) -> None:
        self.host = host
        # A machine without a public address (a worker node) is reached through another one (the head node): its
        # SSH port is a channel of the head's connection, and its own host key is checked at the end of it.
        self.via = via
        self.own_via = own_via  # close ``via`` with this machine (it was opened for this machine alone)
        self.port = port
        self.user = user
        self.key_path = Path(key_path).expanduser()
        self.host_key = normalize(host_key)
        self.ui = ui
        self.connect_timeout = connect_timeout
        self.reconnect_wait = reconnect_wait
        # Each connection marks itself as labctl's (idle.SSH_MARK_COMMAND), so the idle agent does not take it for
        # someone working there; `open` leaves its tunnel unmarked, so the lab stays up while it is attached.
        self.mark = mark
        self.auth_grace = AUTH_GRACE
        self._client: paramiko.SSHClient | None = None
        self._overflow: list[paramiko.SSHClient] = []
        self._lock = threading.RLock()
        self._docker: docker.DockerClient | None = None
        self._docker_relay: Relay | None = None
        self._docker_dir: str | None = None

    def describe(self) -> str:
        where = f"{self.user}@{self.host}:{self.port}"
        return f"{where} (through {self.via.describe()})" if self.via is not None else where

    # ------------------------------------------------------------------------------------------ connection

    def _load_key(self) -> paramiko.PKey | None:
        try:
            return paramiko.PKey.from_path(self.key_path)
        except FileNotFoundError:
            raise LabctlError(
                f"The SSH key {self.key_path} does not exist.",
                hint="Give the lab's private key with --ssh-key, or run 'labctl up' again to recreate the lab.",
            ) from None
        except paramiko.PasswordRequiredException:
            return None  # encrypted: the ssh-agent may hold it
        except (paramiko.SSHException, OSError, ValueError) as exc:
            raise LabctlError(
                f"The SSH key {self.key_path} could not be read ({exc}).",
                hint="Use an OpenSSH private key (ed25519 or RSA) whose .pub sits beside it.",
            ) from None

    def _connect_once(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        pinned = to_pkey(self.host_key)
        client.get_host_keys().add(known_hosts_name(self.host, self.port), pinned.get_name(), pinned)
        pkey = self._load_key()
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                pkey=pkey,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                look_for_keys=False,
                allow_agent=pkey is None,
                sock=self._jump(),
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyMismatch(self.describe(), self.host_key, key_line(exc.key)) from None
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(30)
            if self.mark:
                _mark(transport, self.connect_timeout)
        return client

    def _jump(self) -> paramiko.Channel | None:
        """A direct-tcpip channel through ``via`` to this machine's SSH port; None for a machine reached directly.

        A refusal (the head cannot reach the worker yet) is an SSHException, retried like any transient failure.
        """
        if self.via is None:
            return None
        transport = self.via._transport()
        return transport.open_channel(
            "direct-tcpip", (self.host, self.port), ("127.0.0.1", 0), timeout=self.connect_timeout
        )

    def connect(self, wait: float = 0.0) -> SSHMachine:
        """Connect now; with ``wait`` > 0 keep trying (with backoff) for that many seconds, e.g. while a VM boots."""
        with self._lock:
            self._drop()
            started = time.monotonic()
            deadline = started + wait
            delay, attempt = 1.0, 0
            # Progress goes out as plain lines, never as a step: this may run inside a caller's step (a
            # reconnect in the middle of a build), and steps do not nest on a live terminal display.
            while True:
                attempt += 1
                try:
                    self._client = self._connect_once()
                    if attempt > 1 and self.ui is not None:
                        self.ui.info(f"  SSH on {self.describe()} answered after {time.monotonic() - started:.0f}s.")
                    return self
                except paramiko.AuthenticationException as exc:
                    error: Exception = exc
                    final = LabctlError(
                        f"{self.describe()} refused the SSH key {self.key_path} ({exc}).",
                        hint=f"Check that the matching public key is in ~{self.user}/.ssh/authorized_keys on "
                        "the machine and that the user name is right.",
                    )
                    # A booting VM may answer before its user exists; a wrong key should not cost minutes.
                    if time.monotonic() - started > self.auth_grace:
                        raise final from None
                except _TRANSIENT as exc:
                    error = exc
                    final = LabctlError(
                        f"Could not reach SSH on {self.describe()} ({_reason(exc)}).",
                        hint="Check that the machine runs, that the address and port are right and that a "
                        "firewall lets you in (for an Azure lab: 'labctl status'; your IP may have changed).",
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    if wait > 0:
                        final.message = f"Gave up after {wait:.0f}s: {final.message}"
                    raise final from None
                pause = min(delay, left)
                if self.ui is not None:
                    self.ui.info(
                        f"  SSH on {self.describe()} not ready yet ({_reason(error)}); retrying in {pause:.0f}s"
                    )
                time.sleep(pause)
                delay = min(delay * 2, 10.0)

    def _overflow_session(self) -> paramiko.Channel:
        with self._lock:
            for client in list(self._overflow):
                transport = client.get_transport()
                if transport is None or not transport.is_active():
                    self._overflow.remove(client)
                    continue
                try:
                    return transport.open_session(timeout=self.connect_timeout)
                except paramiko.SSHException:
                    continue
            log.info("opening an extra SSH connection to %s (session limit reached)", self.describe())
            client = self._connect_once()
            self._overflow.append(client)
            transport = client.get_transport()
            assert transport is not None
            return transport.open_session(timeout=self.connect_timeout)

    def _drop(self) -> None:
        for client in [self._client, *self._overflow]:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        self._client = None
        self._overflow = []

    def reconnect(self) -> None:
        """A fresh connection, e.g. after the bootstrap added the user to a group (groups apply per login)."""
        self.connect(wait=self.reconnect_wait)

    def _transport(self) -> paramiko.Transport:
        with self._lock:
            transport = self._client.get_transport() if self._client is not None else None
            if transport is None or not transport.is_active():
                if self._client is not None:
                    log.info("SSH connection to %s was lost; reconnecting", self.describe())
                self.connect(wait=self.reconnect_wait)
                assert self._client is not None
                transport = self._client.get_transport()
                assert transport is not None
            return transport

    def _open_session(self) -> paramiko.Channel:
        transport = self._transport()
        try:
            return transport.open_session(timeout=self.connect_timeout)
        except _TRANSIENT as exc:
            # A refusal from a live server (sshd's MaxSessions, 10 by default): carry this session on an
            # extra connection instead of disturbing the others. Paramiko may hand the refusal to another
            # thread opening at the same moment, leaving this one a bare "Unable to open channel".
            refused = isinstance(exc, paramiko.ChannelException) or "Unable to open channel" in str(exc)
            if refused and transport.is_active():
                return self._overflow_session()
            # The transport looked alive but was not (the peer vanished without a FIN): start over once.
            with self._lock:
                self._drop()
            return self._transport().open_session(timeout=self.connect_timeout)

    # ------------------------------------------------------------------------------------------ commands

    def run(
        self,
        command: Command,
        *,
        on_line: LineFn | None = None,
        check: bool = True,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        text = as_shell(command)
        channel = self._open_session()
        splitter = LineSplitter(on_line)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            channel.set_combine_stderr(True)
            channel.exec_command(text)
            if stdin is not None:
                channel.sendall(stdin.encode() if isinstance(stdin, str) else stdin)
            channel.shutdown_write()
            channel.settimeout(0.5)
            # The deadline is checked on every pass, not only when a read times out: a command that keeps
            # printing never lets recv time out, and would otherwise run past its timeout forever.
            while True:
                self._check_deadline(deadline, text, timeout)
                try:
                    data = channel.recv(32768)
                except TimeoutError:
                    if not channel.get_transport() or not channel.get_transport().is_active():
                        break
                    continue
                if not data:
                    break
                splitter.feed(data)
            # OpenSSH sends the exit status just after the end of output; a channel closed without one means
            # the connection went away mid-command.
            while not channel.status_event.wait(0.5):
                self._check_deadline(deadline, text, timeout)
                transport = channel.get_transport()
                if transport is None or not transport.is_active():
                    break
            code = channel.exit_status if channel.exit_status_ready() else -1
        finally:
            channel.close()
        result = CommandResult(code, splitter.close())
        if code == -1:
            raise LabctlError(
                f"The SSH connection to {self.describe()} was lost while running '{text[:80]}'.",
                hint="Run the same labctl command again; it picks up where it stopped.",
            )
        if check and code != 0:
            raise CommandFailed(self.describe(), text, result)
        return result

    def _check_deadline(self, deadline: float | None, text: str, timeout: float | None) -> None:
        """Stop a command that has run past its timeout; closing its channel (by the caller) ends it too."""
        if deadline is not None and time.monotonic() > deadline:
            raise LabctlError(
                f"'{text[:80]}' did not finish on {self.describe()} within {timeout:g}s.",
                hint="The machine may be overloaded or the command stuck; try again, or look with 'labctl ssh'.",
            )

    # ------------------------------------------------------------------------------------------ files

    @contextmanager
    def _sftp(self) -> Iterator[paramiko.SFTPClient]:
        sftp = paramiko.SFTPClient.from_transport(self._transport())
        if sftp is None:
            raise LabctlError(f"{self.describe()} refused an SFTP session.", hint="Is the sftp subsystem enabled?")
        try:
            yield sftp
        finally:
            sftp.close()

    @staticmethod
    def _makedirs(sftp: paramiko.SFTPClient, path: str) -> None:
        parts: list[str] = []
        while path not in ("", "/", "."):
            try:
                if stat.S_ISDIR(sftp.stat(path).st_mode or 0):
                    break
            except FileNotFoundError:
                pass
            parts.append(path)
            path = posixpath.dirname(path)
        for part in reversed(parts):
            sftp.mkdir(part)

    def put(self, local: Path, remote: str) -> None:
        local = Path(local)
        remote = _remote_path(remote)
        with self._sftp() as sftp:
            if local.is_dir():
                for root, dirs, files in os.walk(local):
                    rel = Path(root).relative_to(local)
                    target = remote if str(rel) == "." else posixpath.join(remote, rel.as_posix())
                    self._makedirs(sftp, target)
                    dirs.sort()
                    for name in sorted(files):
                        src = Path(root) / name
                        sftp.put(str(src), posixpath.join(target, name))
                        sftp.chmod(posixpath.join(target, name), stat.S_IMODE(src.stat().st_mode))
            else:
                parent = posixpath.dirname(remote)
                if parent:
                    self._makedirs(sftp, parent)
                sftp.put(str(local), remote)
                sftp.chmod(remote, stat.S_IMODE(local.stat().st_mode))

    def get(self, remote: str, local: Path) -> None:
        local = Path(local)
        remote = _remote_path(remote)
        with self._sftp() as sftp:
            try:
                attrs = sftp.stat(remote)
            except FileNotFoundError:
                raise LabctlError(f"{remote} does not exist on {self.describe()}.") from None
            if stat.S_ISDIR(attrs.st_mode or 0):
                self._get_tree(sftp, remote, local)
            else:
                local.parent.mkdir(parents=True, exist_ok=True)
                sftp.get(remote, str(local))

    def _get_tree(self, sftp: paramiko.SFTPClient, remote: str, local: Path) -> None:
        local.mkdir(parents=True, exist_ok=True)
        for entry in sftp.listdir_attr(remote):
            src = posixpath.join(remote, entry.filename)
            if stat.S_ISDIR(entry.st_mode or 0):
                self._get_tree(sftp, src, local / entry.filename)
            elif stat.S_ISREG(entry.st_mode or 0):
                sftp.get(src, str(local / entry.filename))
                os.chmod(local / entry.filename, stat.S_IMODE(entry.st_mode or 0o644))

    # ------------------------------------------------------------------------------------------ tunnels

    @contextmanager
    def forward(self, remote_port: int, local_port: int = 0, remote_host: str = "127.0.0.1") -> Iterator[int]:
        listener = bind_loopback(local_port)
        port = listener.getsockname()[1]

        def open_peer(conn: socket.socket) -> paramiko.Channel:
            return self._transport().open_channel(
                "direct-tcpip", (remote_host, remote_port), conn.getpeername(), timeout=self.connect_timeout
            )

        relay = Relay(listener, open_peer, f"forward-{port}").start()
        try:
            yield port
        finally:
            relay.stop()

    # ------------------------------------------------------------------------------------------ docker

    def docker(self) -> docker.DockerClient:
        """The machine's Docker engine, reached through this verified SSH connection (not the SDK's ssh://)."""
        if self._docker is not None:
            return self._docker
        import docker as docker_sdk

        probe = self.run("docker version --format '{{.Server.Version}}'", check=False, timeout=60)
        if not probe.ok:
            raise LabctlError(
                f"Docker on {self.describe()} does not answer for {self.user}: {probe.output.strip()[-300:]}",
                hint="Run 'labctl up' again (it installs and starts Docker and adds the user to the docker group).",
            )
        listener, base_url = self._docker_listener()

        # A channel straight to the engine's socket when sshd allows it (fast, no process on the machine);
        # else 'docker system dial-stdio' in a session, which works wherever the docker CLI does.
        direct = self._probe_unix_channel(DOCKER_SOCKET)

        def open_peer(conn: socket.socket) -> paramiko.Channel:
            if direct:
                return open_unix_channel(self._transport(), DOCKER_SOCKET, self.connect_timeout)
            channel = self._open_session()
            channel.exec_command("docker system dial-stdio")
            return channel

        self._docker_relay = Relay(listener, open_peer, "docker").start()
        # The SDK keeps one idle connection per URL it called (for up to num_pools URLs), and each is a channel
        # here: a small num_pools bounds them.
        client = docker_sdk.DockerClient(base_url=base_url, timeout=600, num_pools=8)
        if not direct:
            # Each connection is then an SSH session, and sshd allows only ten per connection: one request per
            # connection keeps their number small.
            client.api.headers["Connection"] = "close"
        self._docker = client
        return client

    def _docker_listener(self) -> tuple[socket.socket, str]:
        """Where the local Docker SDK meets the relay: a Unix socket in a directory only this user can enter.

        Windows' Python has no Unix sockets, so there it is a port on this computer's loopback, which other
        users logged in to the same computer could also reach while the command runs.
        """
        if sys.platform == "win32":
            listener = bind_loopback(0)
            return listener, f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        self._docker_dir = tempfile.mkdtemp(prefix="labctl-docker-")  # mode 0700
        path = os.path.join(self._docker_dir, "docker.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(16)
        return listener, f"unix://{path}"

    def _probe_unix_channel(self, path: str) -> bool:
        try:
            channel = open_unix_channel(self._transport(), path, self.connect_timeout)
        except (paramiko.SSHException, AttributeError) as exc:  # refused, or a paramiko without these internals
            log.info("no direct channel to %s on %s (%s); using docker system dial-stdio", path, self.describe(), exc)
            return False
        channel.close()
        return True

    def close(self) -> None:
        if self._docker is not None:
            with contextlib.suppress(Exception):
                self._docker.close()
            self._docker = None
        if self._docker_relay is not None:
            self._docker_relay.stop()
            self._docker_relay = None
        if self._docker_dir is not None:
            shutil.rmtree(self._docker_dir, ignore_errors=True)
            self._docker_dir = None
        with self._lock:
            self._drop()
        if self.via is not None and self.own_via:
            self.via.close()

    def __enter__(self) -> SSHMachine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _mark(transport: paramiko.Transport, timeout: float) -> None:
    """Run the idle agent's mark (a constant command) on this connection; a machine without it only counts it."""
    from labctl.idle import SSH_MARK_COMMAND

    try:
        channel = transport.open_session(timeout=timeout)
        try:
            channel.exec_command(SSH_MARK_COMMAND)
            channel.status_event.wait(timeout)
        finally:
            channel.close()
    except (paramiko.SSHException, OSError) as exc:
        log.info("could not mark the connection as labctl's (%s)", exc)


def _remote_path(path: str) -> str:
    """SFTP paths are relative to the login directory, so '~/x' means 'x'."""
    if path == "~":
        return "."
    return path[2:] if path.startswith("~/") else path


def _reason(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return "connection refused"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 100 else text[:97] + "..."
