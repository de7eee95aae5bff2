"""This computer as a ``Machine`` (``--target local``)."""

from __future__ import annotations

import os
import select
import socket
import subprocess
from collections.abc import Callable
from typing import TYPE_CHECKING

from labctl.errors import LabctlError
from labctl.machine.base import Machine

if TYPE_CHECKING:
    import docker


class LocalMachine(Machine):
    remote = False

    def describe(self) -> str:
        return "this computer"

    def _execute(self, text: str, stdin: bytes | None, feed: Callable[[bytes], None], timeout: float | None) -> int:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", text],
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        check_deadline = self._deadline(text, timeout)
        try:
            if proc.stdin is not None and stdin is not None:
                proc.stdin.write(stdin)  # small inputs (scripts), written before reading as over SSH
                proc.stdin.close()
            fd = proc.stdout.fileno()
            while True:
                check_deadline()
                if select.select([fd], [], [], 0.5)[0]:
                    data = os.read(fd, 32768)
                    if not data:
                        return proc.wait()
                    feed(data)
        finally:
            proc.stdout.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def _dial(self, host: str, port: int, conn: socket.socket) -> socket.socket:
        peer = socket.create_connection((host, port), timeout=15)
        peer.settimeout(None)
        return peer

    def _open_docker(self) -> docker.DockerClient:
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
        return client
