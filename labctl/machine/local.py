"""This computer as a Machine: the same interface as SSH, so ``--target local`` reuses every layer above."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from labctl.errors import LabctlError
from labctl.machine.base import Command, CommandFailed, CommandResult, LineFn, LineSplitter, as_shell

if TYPE_CHECKING:
    import docker


class LocalMachine:
    kind = "local"
    needs_tunnel = False

    def __init__(self) -> None:
        self._docker: docker.DockerClient | None = None

    def describe(self) -> str:
        return "this computer"

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
        proc = subprocess.Popen(
            ["/bin/sh", "-c", text],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        if stdin is not None and proc.stdin is not None:
            # Small inputs (scripts); written before reading, like the SSH machine does.
            proc.stdin.write(stdin.encode() if isinstance(stdin, str) else stdin)
            proc.stdin.close()
        splitter = LineSplitter(on_line)
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = proc.stdout.fileno()
        try:
            while True:
                ready, _, _ = select.select([fd], [], [], 0.5)
                if not ready:
                    if deadline is not None and time.monotonic() > deadline:
                        proc.kill()
                        raise LabctlError(f"'{text[:80]}' did not finish within {timeout:.0f}s.")
                    continue
                data = os.read(fd, 32768)
                if not data:
                    break
                splitter.feed(data)
            code = proc.wait()
        finally:
            proc.stdout.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        result = CommandResult(code, splitter.close())
        if check and code != 0:
            raise CommandFailed(self.describe(), text, result)
        return result

    def put(self, local: Path, remote: str) -> None:
        _copy(Path(local), Path(remote).expanduser())

    def get(self, remote: str, local: Path) -> None:
        source = Path(remote).expanduser()
        if not source.exists():
            raise LabctlError(f"{source} does not exist on this computer.")
        _copy(source, Path(local))

    @contextmanager
    def forward(self, remote_port: int, local_port: int = 0, remote_host: str = "127.0.0.1") -> Iterator[int]:
        """Nothing to tunnel: the port on this computer's loopback is already reachable."""
        yield remote_port

    def docker(self) -> docker.DockerClient:
        if self._docker is None:
            import docker as docker_sdk
            import docker.errors

            try:
                client = docker_sdk.from_env(timeout=600)
                client.ping()
            except (docker.errors.DockerException, OSError) as exc:
                raise LabctlError(
                    f"The Docker engine on this computer does not answer ({exc}).",
                    hint="Start Docker (Docker Desktop, or 'sudo systemctl start docker') and check that your user "
                    "may use it ('docker info'); DOCKER_HOST is honoured.",
                ) from None
            self._docker = client
        return self._docker

    def close(self) -> None:
        if self._docker is not None:
            self._docker.close()
            self._docker = None

    def __enter__(self) -> LocalMachine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _copy(source: Path, dest: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, dest, dirs_exist_ok=True)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)
