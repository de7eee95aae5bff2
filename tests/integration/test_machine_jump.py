"""A worker node without a public address: reached through the head node's SSH connection (a direct-tcpip
channel), with the worker's own pinned host key checked at the end of it. Two real sshd servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from labctl.errors import LabctlError
from labctl.keys import HostKeyMismatch
from labctl.machine.ssh import SSHMachine
from labctl.ui import PlainReporter
from tests.support.sshd import KeyPair, SSHServer, make_server, sshd_unavailable

pytestmark = pytest.mark.integration


@pytest.fixture
def head_and_worker(tmp_path: Path) -> Iterator[tuple[SSHServer, SSHServer, KeyPair]]:
    reason = sshd_unavailable()
    if reason:
        pytest.skip(reason)
    head, client = make_server(tmp_path / "head")
    # the worker's host key is generated here and pinned, as labctl sends it in the worker's cloud-init
    worker_key = KeyPair.create(tmp_path, "worker-host")
    worker, _ = make_server(tmp_path / "worker", host_key=worker_key, authorized_keys=[client.public])
    head.start()
    worker.start()
    try:
        yield head, worker, client
    finally:
        worker.stop()
        head.stop()


def _machines(head: SSHServer, worker: SSHServer, client: KeyPair, pinned: str) -> tuple[SSHMachine, SSHMachine]:
    ui = PlainReporter()
    jump = SSHMachine(head.host, head.port, head.user, client.private_path, head.host_key.public, ui=ui)
    node = SSHMachine(worker.host, worker.port, worker.user, client.private_path, pinned, ui=ui, via=jump)
    return jump, node


@pytest.fixture(autouse=True)
def _no_reconnect_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lost machine is reported now, not after a minute of retries."""
    monkeypatch.setattr("labctl.machine.ssh.RECONNECT_WAIT", 0.0)


def test_a_worker_is_reached_through_the_head_with_its_own_pinned_key(
    head_and_worker: tuple[SSHServer, SSHServer, KeyPair],
) -> None:
    head, worker, client = head_and_worker
    jump, node = _machines(head, worker, client, worker.host_key.public)
    with jump, node:
        node.connect()
        assert node.run("echo from the worker").output == "from the worker\n"
        assert node.describe().endswith(f"(through {jump.describe()})")
        assert "Accepted publickey" in worker.log_path.read_text()
        # the worker's connection is a channel of the head's: without the head, the worker is out of reach
        head.stop()
        with pytest.raises(LabctlError, match="Could not reach SSH"):
            node.run("echo again")
        assert worker.proc is not None and worker.proc.poll() is None  # the worker itself still runs


def test_a_worker_presenting_another_host_key_is_refused_through_the_head(
    head_and_worker: tuple[SSHServer, SSHServer, KeyPair], tmp_path: Path
) -> None:
    head, worker, client = head_and_worker
    impostor = KeyPair.create(tmp_path, "not-the-worker")
    jump, node = _machines(head, worker, client, impostor.public)
    with jump, node, pytest.raises(HostKeyMismatch):
        node.connect()
