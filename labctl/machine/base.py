"""The ``Machine`` protocol: what labctl needs from a host, whether it is reached over SSH or is this computer.

Everything above this layer (bootstrap, the lab container, ``open``, ``run-lab``) is written against the
protocol, so the same code serves an Azure VM, an existing SSH host and the local Docker engine.
"""

from __future__ import annotations

import codecs
import shlex
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from labctl.errors import LabctlError

if TYPE_CHECKING:
    import docker

LineFn = Callable[[str], None]
Command = str | Sequence[str]

# How much of a command's output a result keeps in memory (the callback sees all of it).
OUTPUT_KEEP = 1 << 20


@dataclass
class CommandResult:
    exit_code: int
    output: str  # stdout and stderr interleaved as they came, at most the last OUTPUT_KEEP characters

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class CommandFailed(LabctlError):
    """A command on the machine ended with a non-zero exit code."""

    def __init__(self, where: str, command: str, result: CommandResult) -> None:
        tail = "\n".join(result.output.rstrip().splitlines()[-15:])
        detail = f" Its last output:\n{tail}\n" if tail else ""
        super().__init__(
            f"'{_short(command)}' failed on {where} with exit code {result.exit_code}.{detail}",
            hint="Fix what the output above points at and run the same labctl command again.",
        )
        self.result = result


def _short(command: str, limit: int = 120) -> str:
    return command if len(command) <= limit else command[: limit - 3] + "..."


def as_shell(command: Command) -> str:
    """A command for a POSIX shell: strings pass as they are, argument lists are quoted."""
    return command if isinstance(command, str) else shlex.join(command)


class LineSplitter:
    """Turns chunks of bytes into complete lines for a callback, and keeps a bounded copy of the text."""

    def __init__(self, on_line: LineFn | None) -> None:
        self.on_line = on_line
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._kept: list[str] = []
        self._kept_len = 0

    def feed(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if not text:
            return
        self._keep(text)
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        if self.on_line is not None:
            for line in lines:
                self.on_line(line.rstrip("\r"))

    def _keep(self, text: str) -> None:
        self._kept.append(text)
        self._kept_len += len(text)
        while self._kept_len > OUTPUT_KEEP and len(self._kept) > 1:
            self._kept_len -= len(self._kept.pop(0))

    def close(self) -> str:
        rest = self._decoder.decode(b"", final=True)
        if rest:
            self._keep(rest)
            self._partial += rest
        if self._partial and self.on_line is not None:
            self.on_line(self._partial.rstrip("\r"))
        self._partial = ""
        return "".join(self._kept)[-OUTPUT_KEEP:]


class Machine(Protocol):
    """A host labctl works on."""

    kind: str  # "ssh" | "local"
    # False when the machine is this computer: its loopback ports are reached directly, without a tunnel.
    needs_tunnel: bool

    def describe(self) -> str:
        """Where this is, for messages: 'azureuser@203.0.113.7:22' or 'this computer'."""
        ...

    def run(
        self,
        command: Command,
        *,
        on_line: LineFn | None = None,
        check: bool = True,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run ``command`` in a shell, feeding each line of output to ``on_line``; raise on failure if ``check``."""
        ...

    def put(self, local: Path, remote: str) -> None:
        """Copy a file or a directory tree to the machine (``remote`` is the new path, parents are made)."""
        ...

    def get(self, remote: str, local: Path) -> None:
        """Copy a file or a directory tree from the machine to ``local``."""
        ...

    def forward(
        self, remote_port: int, local_port: int = 0, remote_host: str = "127.0.0.1"
    ) -> AbstractContextManager[int]:
        """Make ``remote_host:remote_port`` as seen from the machine reachable on this computer's loopback.

        Yields the local port: ``local_port`` if free, else the next free one (0 = any free port).
        """
        ...

    def docker(self) -> docker.DockerClient:
        """A docker SDK client for the machine's Docker engine."""
        ...

    def close(self) -> None: ...
