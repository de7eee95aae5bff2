"""A machine reached over SSH with paramiko: key auth, the pinned host key, streamed commands, tunnels, Docker.

The host key is checked against the one labctl pinned, never against ``~/.ssh/known_hosts`` and never
auto-accepted. A transport that died (a dropped Wi-Fi, a VM that rebooted) is re-opened on the next call. Docker
on the machine is reached through this same verified connection (not the SDK's ``ssh://``): a private Unix socket
on this computer whose every connection is relayed to the engine's socket on the machine.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paramiko
from paramiko.common import cMSG_CHANNEL_OPEN

from labctl.errors import LabctlError
from labctl.hostkeys import HostKeyMismatch, key_line, known_hosts_name, normalize, to_pkey
from labctl.machine.base import Machine
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


class SSHMachine(Machine):
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
        self.port = port
        self.user = user
        self.key_path = Path(key_path).expanduser()
        self.host_key = normalize(host_key)
        self.ui = ui
        self.connect_timeout = connect_timeout
        self.reconnect_wait = reconnect_wait
        # A machine without a public address (a worker node) is reached through another one (the head node): its
        # SSH port is a channel of the head's connection, and its own host key is checked at the end of it.
        self.via = via
        self.own_via = own_via  # close ``via`` with this machine (it was opened for this machine alone)
        # Each connection marks itself as labctl's (idle.SSH_MARK_COMMAND), so the idle agent does not take it for
        # someone working there; `open` leaves its tunnel unmarked, so the lab stays up while it is attached.
        self.mark = mark
        self.auth_grace = AUTH_GRACE
        self._client: paramiko.SSHClient | None = None
        self._overflow: list[paramiko.SSHClient] = []
        self._lock = threading.RLock()
        self._docker_relay: _Relay | None = None
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
        # Through ``via``: a direct-tcpip channel to this machine's SSH port. A refusal (the head cannot reach the
        # worker yet) is an SSHException, retried like any transient failure.
        jump = None
        try:
            if self.via is not None:
                jump = self.via._transport().open_channel(
                    "direct-tcpip", (self.host, self.port), ("127.0.0.1", 0), timeout=self.connect_timeout
                )
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
                sock=jump,
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

    def connect(self, wait: float = 0.0) -> SSHMachine:
        """Connect now; with ``wait`` > 0 keep trying (with backoff) for that many seconds, e.g. while a VM boots."""
        with self._lock:
            self._drop()
            started = time.monotonic()
            delay = 1.0
            # Progress goes out as plain lines, never as a step: this may run inside a caller's step (a
            # reconnect in the middle of a build), and steps do not nest on a live terminal display.
            while True:
                try:
                    self._client = self._connect_once()
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
                else:
                    if delay > 1 and self.ui is not None:
                        self.ui.info(f"  SSH on {self.describe()} answered after {time.monotonic() - started:.0f}s.")
                    return self
                left = started + wait - time.monotonic()
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

    def reconnect(self) -> None:
        self.connect(wait=self.reconnect_wait)

    def _drop(self) -> None:
        for client in [self._client, *self._overflow]:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        self._client = None
        self._overflow = []

    def _transport(self) -> paramiko.Transport:
        with self._lock:
            transport = self._client.get_transport() if self._client is not None else None
            if not _alive(transport):
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

    def _overflow_session(self) -> paramiko.Channel:
        with self._lock:
            for client in list(self._overflow):
                transport = client.get_transport()
                if transport is None or not transport.is_active():
                    self._overflow.remove(client)
                    continue
                with contextlib.suppress(paramiko.SSHException):
                    return transport.open_session(timeout=self.connect_timeout)
            log.info("opening an extra SSH connection to %s (session limit reached)", self.describe())
            client = self._connect_once()
            self._overflow.append(client)
            transport = client.get_transport()
            assert transport is not None
            return transport.open_session(timeout=self.connect_timeout)

    # ------------------------------------------------------------------------------------------ commands

    def _execute(self, text: str, stdin: bytes | None, feed: Callable[[bytes], None], timeout: float | None) -> int:
        channel = self._open_session()
        check_deadline = self._deadline(text, timeout)
        try:
            channel.set_combine_stderr(True)
            channel.exec_command(text)
            if stdin is not None:
                channel.sendall(stdin)
            channel.shutdown_write()
            channel.settimeout(0.5)
            while True:
                check_deadline()
                try:
                    data = channel.recv(32768)
                except TimeoutError:
                    if not _alive(channel.get_transport()):
                        break
                    continue
                if not data:
                    break
                feed(data)
            # OpenSSH sends the exit status just after the end of output; a channel closed without one (paramiko's
            # -1) means the connection went away mid-command.
            while not channel.status_event.wait(0.5) and _alive(channel.get_transport()):
                check_deadline()
            if channel.exit_status == -1:
                raise LabctlError(
                    f"The SSH connection to {self.describe()} was lost while running '{text[:80]}'.",
                    hint="Run the same labctl command again; it picks up where it stopped.",
                )
            return channel.exit_status
        finally:
            channel.close()

    @contextmanager
    def forward(self, remote_port: int, local_port: int = 0) -> Iterator[int]:
        listener = bind_loopback(local_port)
        port = listener.getsockname()[1]

        def open_peer(conn: socket.socket) -> paramiko.Channel:
            return self._transport().open_channel(
                "direct-tcpip", ("127.0.0.1", remote_port), conn.getpeername(), timeout=self.connect_timeout
            )

        relay = _Relay(listener, open_peer, f"forward-{port}")
        try:
            yield port
        finally:
            relay.stop()

    # ------------------------------------------------------------------------------------------ docker

    def _open_docker(self) -> docker.DockerClient:
        import docker as docker_sdk

        probe = self.run("docker version --format '{{.Server.Version}}'", check=False, timeout=60)
        if not probe.ok:
            raise LabctlError(
                f"Docker on {self.describe()} does not answer for {self.user}: {probe.output.strip()[-300:]}",
                hint="Run 'labctl up' again (it installs and starts Docker and adds the user to the docker group).",
            )
        # The SDK meets the relay on a Unix socket in a directory only this user can enter. Windows' Python has
        # no Unix sockets: there it is a port on the loopback, which other users of this computer could reach too.
        if sys.platform == "win32":
            listener = bind_loopback(0)
            base_url = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        else:
            self._docker_dir = tempfile.mkdtemp(prefix="labctl-docker-")  # mode 0700
            path = os.path.join(self._docker_dir, "docker.sock")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(path)
            listener.listen(16)
            base_url = f"unix://{path}"

        # A channel straight to the engine's socket when sshd allows it (fast, no process on the machine, not
        # counted against sshd's sessions); else 'docker system dial-stdio' in a session, wherever the CLI works.
        try:
            _open_unix_channel(self._transport(), DOCKER_SOCKET, self.connect_timeout).close()
            direct = True
        except (paramiko.SSHException, AttributeError) as exc:  # refused, or a paramiko without these internals
            log.info("no direct channel to %s on %s (%s); using dial-stdio", DOCKER_SOCKET, self.describe(), exc)
            direct = False

        def open_peer(conn: socket.socket) -> paramiko.Channel:
            if direct:
                return _open_unix_channel(self._transport(), DOCKER_SOCKET, self.connect_timeout)
            channel = self._open_session()
            channel.exec_command("docker system dial-stdio")
            return channel

        self._docker_relay = _Relay(listener, open_peer, "docker")
        # The SDK keeps one idle connection per URL it called (for up to num_pools URLs), and each is a channel
        # here: a small num_pools bounds them.
        client = docker_sdk.DockerClient(base_url=base_url, timeout=600, num_pools=8)
        if not direct:
            # Each connection is then an SSH session, and sshd allows only ten per connection: one request per
            # connection keeps their number small.
            client.api.headers["Connection"] = "close"
        return client

    def close(self) -> None:
        super().close()
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


def _alive(transport: paramiko.Transport | None) -> bool:
    return transport is not None and transport.is_active()


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


def _reason(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return "connection refused"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 100 else text[:97] + "..."


def _open_unix_channel(transport: paramiko.Transport, socket_path: str, timeout: float) -> paramiko.Channel:
    """A channel to a Unix socket on the server (OpenSSH's ``direct-streamlocal@openssh.com``).

    Paramiko opens ``direct-tcpip`` channels but not this kind, whose request names a socket path instead of a
    host and port; the request goes through the transport's own channel bookkeeping, so the result is an
    ordinary ``Channel``. Raises ``paramiko.SSHException`` if refused.
    """
    t: Any = transport  # the bookkeeping used here is not part of paramiko's typed API
    if not t.is_active():
        raise paramiko.SSHException("SSH session not active")
    opened = threading.Event()
    with t.lock:
        window = t._sanitize_window_size(None)
        packet = t._sanitize_packet_size(None)
        chanid = t._next_channel()
        channel: Any = paramiko.Channel(chanid)
        t._channels.put(chanid, channel)
        t.channel_events[chanid] = opened
        t.channels_seen[chanid] = True
        channel._set_transport(transport)
        channel._set_window(window, packet)
    request = paramiko.Message()
    request.add_byte(cMSG_CHANNEL_OPEN)
    request.add_string("direct-streamlocal@openssh.com")
    for value in (chanid, window, packet):
        request.add_int(value)
    request.add_string(socket_path)
    request.add_string("")  # reserved by the protocol
    request.add_int(0)  # reserved by the protocol
    t._send_user_message(request)
    deadline = time.monotonic() + timeout
    while not opened.wait(0.1):
        if not t.is_active():
            raise t.get_exception() or paramiko.SSHException("SSH session ended")
        if time.monotonic() > deadline:
            raise paramiko.SSHException(f"Timeout opening a channel to {socket_path}")
    ready = t._channels.get(chanid)
    if ready is None:
        raise t.get_exception() or paramiko.ChannelException(2, f"{socket_path} refused the channel")
    return ready


def bind_loopback(port: int, *, tries: int = 100) -> socket.socket:
    """A listening socket on 127.0.0.1: ``port`` if free, else the next free one (0 means any)."""
    last: OSError | None = None
    for candidate in [0] if port == 0 else range(port, min(port + tries, 65536)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", candidate))
            sock.listen(16)
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            last = exc
    raise OSError(errno.EADDRINUSE, f"no free local port in {port}..{port + tries - 1}") from last


class _Relay:
    """Accepts connections on ``listener`` and joins each, byte for byte, to a channel that ``open_peer`` opens."""

    def __init__(self, listener: socket.socket, open_peer: Callable[[socket.socket], Any], name: str) -> None:
        self._listener = listener
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, args=(open_peer, name), name=name, daemon=True)
        self._accepter.start()

    def _accept(self, open_peer: Callable[[socket.socket], Any], name: str) -> None:
        self._listener.settimeout(0.5)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn, open_peer), name=f"{name}-conn", daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _serve(self, conn: socket.socket, open_peer: Callable[[socket.socket], Any]) -> None:
        try:
            peer = open_peer(conn)
        except Exception as exc:
            log.info("could not open the remote side of a relayed connection: %s", exc)
            conn.close()
            return
        try:
            while not self._stop.is_set():
                for src in select.select([conn, peer], [], [], 0.5)[0]:
                    data = src.recv(64 * 1024)
                    if not data:
                        return
                    (peer if src is conn else conn).sendall(data)
        except Exception as exc:  # a paramiko error on a dying transport ends this connection only
            log.info("relay closed: %s", exc)
        finally:
            for side in (conn, peer):
                with contextlib.suppress(Exception):
                    side.close()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        for thread in [self._accepter, *self._threads]:
            thread.join(timeout=2)
