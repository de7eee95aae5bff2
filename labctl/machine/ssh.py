"""A machine over SSH (paramiko) with labctl's pinned host key, never known_hosts; a dead connection reopens."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paramiko
from paramiko.common import cMSG_CHANNEL_OPEN

from labctl.errors import LabctlError
from labctl.keys import HostKeyMismatch, known_hosts_name, split_key_line
from labctl.machine.base import SSH_MARK_COMMAND, Deadline, Feed, Machine, bind_loopback, pump, relay
from labctl.ui import PlainReporter, Reporter

if TYPE_CHECKING:
    import docker

log = logging.getLogger("labctl.machine")
# Paramiko logs refusals it recovers from as errors; only --verbose shows them.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

_TRANSIENT = (OSError, EOFError, paramiko.SSHException)  # worth another try while a machine boots or a network recovers
DOCKER_SOCKET = "/var/run/docker.sock"
STREAMLOCAL = "direct-streamlocal@openssh.com"  # OpenSSH's channel straight to a Unix socket
_OPEN_STREAMLOCAL = cMSG_CHANNEL_OPEN + len(STREAMLOCAL).to_bytes(4, "big") + STREAMLOCAL.encode()
AUTH_GRACE = 20.0  # how long a refused key is retried: a new VM's user may appear just after sshd starts
CONNECT_TIMEOUT = 15.0  # each step of opening a connection or channel
RECONNECT_WAIT = 60.0  # how long a lost connection is retried


@dataclass(eq=False)
class SSHMachine(Machine):
    host: str
    port: int
    user: str
    key_path: str | Path  # paramiko expands '~'
    host_key: str
    ui: Reporter = field(default_factory=lambda: PlainReporter(quiet=True), kw_only=True)
    # Node 0, for a node without an address of its own: opened for this machine, closed with it.
    via: SSHMachine | None = field(default=None, kw_only=True)
    mark: bool = field(default=True, kw_only=True)  # marked, the idle agent does not count it as someone working
    # The connection, then the extra ones opened past sshd's session limit.
    _transports: list[paramiko.Transport] = field(default_factory=list, init=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False)
    _docker_relay: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, init=False)
    remote = True

    def describe(self) -> str:
        where = f"{self.user}@{self.host}:{self.port}"
        return f"{where} (through {self.via.describe()})" if self.via is not None else where

    def _connect_once(self) -> paramiko.Transport:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        key_type, data = split_key_line(self.host_key)
        pinned = paramiko.PKey.from_type_string(key_type, base64.b64decode(data))
        client.get_host_keys().add(known_hosts_name(self.host, self.port), key_type, pinned)
        try:  # checked before connecting (keys.check_lab_key), but it may be gone or replaced since
            pkey = paramiko.PKey.from_path(self.key_path)
        except (paramiko.PasswordRequiredException, TypeError):  # paramiko says "encrypted" either way
            pkey = None  # the ssh-agent may hold it
        except (paramiko.SSHException, OSError, ValueError) as exc:
            raise LabctlError(
                f"The SSH key {self.key_path} could not be read ({exc}).",
                hint="Give the lab's private key with --ssh-key: an OpenSSH private key (ed25519 or RSA).",
            ) from None
        jump = None  # through ``via``: a refusal (the worker not up yet) is an SSHException, retried
        try:
            if self.via is not None:
                jump = self.via._transport().open_channel(
                    "direct-tcpip", (self.host, self.port), ("127.0.0.1", 0), timeout=CONNECT_TIMEOUT
                )
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                pkey=pkey,
                timeout=CONNECT_TIMEOUT,
                banner_timeout=CONNECT_TIMEOUT,
                auth_timeout=CONNECT_TIMEOUT,
                look_for_keys=False,
                allow_agent=pkey is None,
                sock=jump,
            )
        except BaseException as exc:
            client.close()
            if isinstance(exc, paramiko.BadHostKeyException):
                got = f"{exc.key.get_name()} {exc.key.get_base64()}"
                raise HostKeyMismatch(self.describe(), self.host_key, got) from None
            raise
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(30)
        t: Any = transport  # the one paramiko internal used: where a message leaves (without it: dial-stdio)
        if hasattr(t, "_send_user_message"):
            t._send_user_message = _addressing_docker_socket(t._send_user_message)
        try:  # tells the idle agent this connection is labctl's; a machine without the agent ignores it
            if self.mark:
                with transport.open_session(timeout=CONNECT_TIMEOUT) as channel:
                    channel.exec_command(SSH_MARK_COMMAND)
                    channel.status_event.wait(CONNECT_TIMEOUT)
        except (paramiko.SSHException, OSError) as exc:
            log.info("could not mark the connection as labctl's (%s)", exc)
        return transport

    def connect(self, wait: float = 0.0) -> SSHMachine:
        """Retried with backoff for ``wait`` seconds (a VM booting)."""
        with self._lock:
            self._drop()
            started, delay = time.monotonic(), 1.0
            while True:
                try:
                    self._transports = [self._connect_once()]
                    if delay > 1:
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
                    if time.monotonic() - started > AUTH_GRACE:
                        raise final from None
                except _TRANSIENT as exc:
                    error = exc
                    final = LabctlError(
                        f"Could not reach SSH on {self.describe()} ({_reason(exc)}).",
                        hint="Check that the machine runs, that the address and port are right and that a "
                        "firewall lets you in (for an Azure lab: 'labctl status'; your IP may have changed).",
                    )
                left = started + wait - time.monotonic()
                if left <= 0:
                    if wait > 0:
                        final.message = f"Gave up after {wait:.0f}s: {final.message}"
                    raise final from None
                pause = min(delay, left)
                # Plain lines, not a step: steps do not nest, and this may be inside one.
                self.ui.info(f"  SSH on {self.describe()} not ready yet ({_reason(error)}); retrying in {pause:.0f}s")
                time.sleep(pause)
                delay = min(delay * 2, 10.0)

    def reconnect(self) -> None:
        self.connect(wait=RECONNECT_WAIT)

    def _drop(self) -> None:
        for transport in self._transports:
            with contextlib.suppress(Exception):
                transport.close()
        self._transports = []

    def _transport(self) -> paramiko.Transport:
        with self._lock:
            if not (self._transports and self._transports[0].is_active()):
                if self._transports:
                    log.info("SSH connection to %s was lost; reconnecting", self.describe())
                self.connect(wait=RECONNECT_WAIT)
            return self._transports[0]

    def _open_session(self) -> paramiko.Channel:
        transport = self._transport()
        try:
            return transport.open_session(timeout=CONNECT_TIMEOUT)
        except _TRANSIENT as exc:
            # Paramiko may hand a refusal to another thread opening at once, leaving this one "Unable to open channel".
            refused = isinstance(exc, paramiko.ChannelException) or "Unable to open channel" in str(exc)
            if not (refused and transport.is_active()):
                # The transport looked alive but was not (the peer vanished without a FIN): start over once.
                with self._lock:
                    self._drop()
                return self._transport().open_session(timeout=CONNECT_TIMEOUT)
        with self._lock:  # a live sshd's refusal (MaxSessions, 10): an extra connection, kept for the next one
            self._transports[1:] = [extra for extra in self._transports[1:] if extra.is_active()]
            for extra in self._transports[1:]:
                with contextlib.suppress(paramiko.SSHException):
                    return extra.open_session(timeout=CONNECT_TIMEOUT)
            log.info("opening an extra SSH connection to %s (session limit reached)", self.describe())
            self._transports.append(self._connect_once())
            return self._transports[-1].open_session(timeout=CONNECT_TIMEOUT)

    def _execute(self, text: str, stdin: bytes | None, feed: Feed, check_deadline: Deadline) -> int:
        with self._open_session() as channel:
            channel.set_combine_stderr(True)
            channel.exec_command(text)
            if stdin is not None:
                channel.sendall(stdin)
            channel.shutdown_write()
            pump(channel, lambda: channel.recv(32768), feed, check_deadline, channel.get_transport().is_active)
            # The exit status follows the output; without one (paramiko's -1) the connection died mid-command.
            while not channel.status_event.wait(0.5) and channel.get_transport().is_active():
                check_deadline()
            if channel.exit_status == -1:
                raise LabctlError(
                    f"The SSH connection to {self.describe()} was lost while running '{text[:80]}'.",
                    hint="Run the same labctl command again; it picks up where it stopped.",
                )
            return channel.exit_status

    def _dial(self, host: str, port: int, conn: socket.socket) -> paramiko.Channel:
        return self._transport().open_channel("direct-tcpip", (host, port), conn.getpeername(), timeout=CONNECT_TIMEOUT)

    def _open_docker(self) -> docker.DockerClient:
        import docker as docker_sdk

        probe = self.run("docker version --format '{{.Server.Version}}'", check=False, timeout=60)
        if not probe.ok:
            raise LabctlError(
                f"Docker on {self.describe()} does not answer for {self.user}: {probe.output.strip()[-300:]}",
                hint="Run 'labctl up' again (it installs and starts Docker and adds the user to the docker group).",
            )
        if sys.platform == "win32":  # Windows' Python has no Unix sockets: a loopback port there
            listener = bind_loopback(0)
            base_url = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        else:
            folder = tempfile.mkdtemp(prefix="labctl-docker-")  # mode 0700: a socket only this user can reach
            self._docker_relay.callback(shutil.rmtree, folder, ignore_errors=True)
            path = os.path.join(folder, "docker.sock")
            listener = socket.create_server(path, family=socket.AF_UNIX, backlog=16)
            base_url = f"unix://{path}"

        # Straight to the engine's socket (150 times faster: benchmarks/RESULTS.md); dial-stdio where sshd forbids it.
        try:
            self._transport().open_channel(STREAMLOCAL, timeout=CONNECT_TIMEOUT).close()
            direct = True
        except paramiko.SSHException as exc:
            log.info("no direct channel to %s on %s (%s); using dial-stdio", DOCKER_SOCKET, self.describe(), exc)
            direct = False

        def open_peer(conn: socket.socket) -> paramiko.Channel:
            if direct:
                return self._transport().open_channel(STREAMLOCAL, timeout=CONNECT_TIMEOUT)
            channel = self._open_session()
            channel.exec_command("docker system dial-stdio")
            return channel

        self._docker_relay.enter_context(relay(listener, open_peer, "docker"))
        # The SDK keeps an idle connection (a channel here) per URL it called: num_pools bounds them.
        client = docker_sdk.DockerClient(base_url=base_url, timeout=600, num_pools=8)
        if not direct:  # each connection is then one of sshd's ten sessions: one request each
            client.api.headers["Connection"] = "close"
        return client

    def close(self) -> None:
        super().close()
        self._docker_relay.close()
        with self._lock:
            self._drop()
        if self.via is not None:
            self.via.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 100 else text[:97] + "..."


def _addressing_docker_socket(send: Callable[[paramiko.Message], None]) -> Callable[[paramiko.Message], None]:
    """paramiko addresses TCP channels only: a Unix socket channel's open gets the path and two reserved fields here."""

    def send_addressed(message: paramiko.Message) -> None:
        if message.asbytes().startswith(_OPEN_STREAMLOCAL):
            message.add_string(DOCKER_SOCKET)
            message.add_string("")
            message.add_int(0)
        send(message)

    return send_addressed
