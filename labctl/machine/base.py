"""``Machine``: a host reached over SSH, or this computer (``LocalMachine``), so every layer above is written once."""

from __future__ import annotations

import codecs
import contextlib
import errno
import logging
import os
import select
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from labctl.errors import LabctlError

if TYPE_CHECKING:
    from docker import DockerClient

log = logging.getLogger("labctl.machine")
LineFn = Callable[[str], None]
Deadline = Callable[[], None]  # raises once a command has run too long
Feed = Callable[[bytes], None]

# labctl runs this (a constant: nothing of the user's in it) first on each of its own SSH connections, so that the
# idle agent does not count them as someone working on the machine. The mark is removed when the connection closes.
SSH_MARKS = ".cache/labctl-ssh"
SSH_MARK_COMMAND = f'd="$HOME/{SSH_MARKS}"; mkdir -p "$d" && printf "%s\\n" "$SSH_CONNECTION" > "$d/$$"'
OUTPUT_KEEP = 1 << 20  # how much of a command's output a result keeps in memory (the callback sees all of it)


@dataclass
class CommandResult:
    exit_code: int
    output: str  # stdout and stderr interleaved as they came, at most the last OUTPUT_KEEP characters

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class CommandFailed(LabctlError):
    def __init__(self, where: str, command: str, result: CommandResult) -> None:
        tail = "\n".join(result.output.rstrip().splitlines()[-15:])
        detail = f" Its last output:\n{tail}\n" if tail else ""
        shown = command if len(command) <= 120 else command[:117] + "..."
        super().__init__(
            f"'{shown}' failed on {where} with exit code {result.exit_code}.{detail}",
            hint="Fix what the output above points at and run the same labctl command again.",
        )
        self.result = result


class LineSplitter:
    """Chunks of bytes to whole lines for a callback, and a bounded copy of the text."""

    def __init__(self, on_line: LineFn | None) -> None:
        self.on_line = on_line or (lambda line: None)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._kept: list[str] = []
        self._kept_len = 0

    def feed(self, data: bytes, final: bool = False) -> None:
        text = self._decoder.decode(data, final=final)
        self._kept.append(text)
        self._kept_len += len(text)
        while self._kept_len > OUTPUT_KEEP and len(self._kept) > 1:
            self._kept_len -= len(self._kept.pop(0))
        *lines, self._partial = (self._partial + text).split("\n")
        if final and self._partial:
            lines.append(self._partial)
        for line in lines:
            self.on_line(line.rstrip("\r"))

    def close(self) -> str:
        self.feed(b"", final=True)
        return "".join(self._kept)[-OUTPUT_KEEP:]


def bind_loopback(port: int) -> socket.socket:
    """``port`` on 127.0.0.1 if free, else the next free one of 100 (0: any)."""
    last: OSError | None = None
    for candidate in [0] if port == 0 else range(port, min(port + 100, 65536)):
        # Not socket.create_server: its SO_REUSEADDR lets macOS bind 127.0.0.1 on a port another program holds on
        # every address, and the browser would reach labctl's tunnel or that program by chance.
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
    raise OSError(errno.EADDRINUSE, f"no free local port in {port}..{port + 99}") from last


@contextmanager
def relay(listener: socket.socket, open_peer: Callable[[socket.socket], Any], name: str) -> Iterator[None]:
    """Joins each connection to ``listener``, byte for byte, to a channel that ``open_peer`` opens."""
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        peer: Any = None
        try:
            peer = open_peer(conn)
            while not stop.is_set():
                for src in select.select([conn, peer], [], [], 0.5)[0]:
                    data = src.recv(64 * 1024)
                    if not data:
                        return
                    (peer if src is conn else conn).sendall(data)
        except Exception as exc:  # a peer that cannot be opened, or a dying transport, ends this connection only
            log.info("relayed connection %s: %s", "closed" if peer is not None else "not opened", exc)
        finally:
            for side in (conn, peer):
                with contextlib.suppress(Exception):
                    side.close()

    def accept() -> None:
        listener.settimeout(0.5)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), name=f"{name}-conn", daemon=True).start()

    accepter = threading.Thread(target=accept, name=name, daemon=True)
    accepter.start()
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            listener.close()
        accepter.join(timeout=2)


def pump(source: Any, read: Callable[[], bytes], feed: Feed, deadline: Deadline, alive: Callable[[], bool]) -> None:
    """A command's output to ``feed`` until it ends, or until ``alive`` says it never will."""
    while True:
        deadline()
        if select.select([source], [], [], 0.5)[0]:
            if not (data := read()):
                return
            feed(data)
        elif not alive():
            return


class Machine(contextlib.AbstractContextManager["Machine"]):
    remote: bool  # False for this computer: Docker is the user's own, its loopback ports reached without a tunnel
    _docker: DockerClient | None = None

    def describe(self) -> str:  # for messages: 'azureuser@203.0.113.7:22' or 'this computer'
        raise NotImplementedError

    def run(
        self,
        command: str | Sequence[str],
        *,
        on_line: LineFn | None = None,
        check: bool = True,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """A string is labctl's own shell text, a list is quoted; ``timeout`` holds for a command that keeps talking."""
        text = command if isinstance(command, str) else shlex.join(command)
        deadline = None if timeout is None else time.monotonic() + timeout

        def check_deadline() -> None:
            if deadline is not None and time.monotonic() > deadline:
                raise LabctlError(
                    f"'{text[:80]}' did not finish on {self.describe()} within {timeout:g}s.",
                    hint="The machine may be overloaded or the command stuck; try again, or look with 'labctl ssh'.",
                )

        splitter = LineSplitter(on_line)
        code = self._execute(text, stdin.encode() if isinstance(stdin, str) else stdin, splitter.feed, check_deadline)
        result = CommandResult(code, splitter.close())
        if check and code != 0:
            raise CommandFailed(self.describe(), text, result)
        return result

    def _execute(self, text: str, stdin: bytes | None, feed: Feed, check_deadline: Deadline) -> int:
        raise NotImplementedError

    @contextmanager
    def forward(self, remote_port: int, local_port: int = 0, host: str = "127.0.0.1") -> Iterator[int]:
        """``host``:``remote_port`` as the machine reaches it, on this computer's loopback (``local_port`` or next)."""
        if host == "127.0.0.1" and not self.remote:
            yield remote_port  # nothing to tunnel: the port on this computer's loopback is already reachable
            return
        listener = bind_loopback(local_port)
        with relay(listener, lambda conn: self._dial(host, remote_port, conn), f"forward-{remote_port}"):
            yield listener.getsockname()[1]

    def _dial(self, host: str, port: int, conn: socket.socket) -> Any:
        raise NotImplementedError

    def docker(self) -> DockerClient:
        if self._docker is None:
            self._docker = self._open_docker()
        return self._docker

    def _open_docker(self) -> DockerClient:
        raise NotImplementedError

    def reconnect(self) -> None:
        """A fresh login: groups the bootstrap added apply per login."""

    def close(self) -> None:
        if self._docker is not None:
            with contextlib.suppress(Exception):
                self._docker.close()
            self._docker = None

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalMachine(Machine):
    remote = False

    def describe(self) -> str:
        return "this computer"

    def _execute(self, text: str, stdin: bytes | None, feed: Feed, check_deadline: Deadline) -> int:
        with subprocess.Popen(
            ["/bin/sh", "-c", text],
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        ) as proc:  # leaving closes its pipes and waits for it
            assert proc.stdout is not None
            try:
                if proc.stdin is not None and stdin is not None:
                    proc.stdin.write(stdin)  # small inputs (scripts), written before reading as over SSH
                    proc.stdin.close()
                fd = proc.stdout.fileno()
                pump(fd, lambda: os.read(fd, 32768), feed, check_deadline, lambda: True)
                return proc.wait()
            finally:
                proc.kill()  # one past its deadline; a no-op once it has ended

    def _dial(self, host: str, port: int, conn: socket.socket) -> socket.socket:
        peer = socket.create_connection((host, port), timeout=15)
        peer.settimeout(None)
        return peer

    def _open_docker(self) -> DockerClient:
        import docker.errors

        try:
            client = docker.from_env(timeout=600)
            client.ping()
        except (docker.errors.DockerException, OSError) as exc:
            raise LabctlError(
                f"The Docker engine on this computer does not answer ({exc}).",
                hint="Start Docker (Docker Desktop, or 'sudo systemctl start docker') and check that your user "
                "may use it ('docker info'); DOCKER_HOST is honoured.",
            ) from None
        return client
