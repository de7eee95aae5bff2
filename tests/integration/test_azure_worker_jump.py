"""Workers of an Azure lab have no public IP: labctl reaches them through node 0, each with its own pinned key.

The fake ARM's VMs boot as real sshd servers: node 0 on 127.0.0.1 (its "public IP"), each worker inside a network
namespace of its own at the private address the fake gave its NIC (10.42.0.5, ...), joined to this computer by a
veth pair. ``connect_node`` goes node 0's sshd -> direct-tcpip -> the worker's private address, and checks the
worker's own host key, which labctl generated and sent in the worker's cloud-init.
"""

from __future__ import annotations

import getpass
import io
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from labctl.keys import HostKeyMismatch, generate_ed25519
from labctl.machine import connect
from labctl.machine.ssh import SSHMachine
from labctl.ui import PlainReporter
from tests.fakearm import FakeArm
from tests.fakearm.fixtures import arm_env, destroy, fake_arm, provision  # noqa: F401
from tests.support.fake_vm import serve_vms
from tests.support.netns import PrivateHost, netns_unavailable, private_hosts
from tests.support.sshd import SSHServer, free_port, sshd_unavailable

pytestmark = pytest.mark.integration


@pytest.fixture
def booted_nodes(
    arm_env: FakeArm,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[list[SSHServer], list[PrivateHost]]]:
    reason = sshd_unavailable() or netns_unavailable()
    if reason:
        pytest.skip(reason)
    port = free_port()  # every node's SSH port, as on Azure; the workers listen at their own addresses
    monkeypatch.setenv("LABCTL_SSH_PORT", str(port))
    monkeypatch.setenv("LABCTL_ADMIN_USER", getpass.getuser())  # the fake VMs are this machine's sshd
    with private_hosts() as private:
        servers = serve_vms(arm_env, tmp_path, port, private)
        try:
            yield servers, private
        finally:
            for server in servers:
                server.stop()
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    assert not [h for h in private if h.netns in names], "a worker's network namespace was left behind"


def test_workers_are_reached_through_node_0_with_their_own_pinned_keys(
    booted_nodes: tuple[list[SSHServer], list[PrivateHost]],
) -> None:
    servers, private = booted_nodes
    record = provision("lab", nodes=3)
    assert record.nodes[0].host == "127.0.0.1" and record.nodes[0].private_address == "10.42.0.4"
    assert sorted(h.address for h in private) == sorted(w.host for w in record.nodes[1:]) == ["10.42.0.5", "10.42.0.6"]
    ui = PlainReporter(io.StringIO())
    for node, worker in enumerate(record.nodes[1:], start=1):
        machine = connect(record, ui, node=node, wait=20)
        try:
            assert isinstance(machine, SSHMachine) and machine.via is not None
            assert machine.via.host == "127.0.0.1" and machine.host == worker.host
            # the command runs on the worker: its namespace holds the private address, node 0's does not
            addresses = machine.run("ip -o -4 addr show").output
            assert f"{worker.host}/32" in addresses and "10.42.0.4" not in addresses
        finally:
            machine.close()
    worker_log = next(s for s in servers if s.host == "10.42.0.5").log_path.read_text()
    assert "Accepted publickey" in worker_log

    # a worker that presents another key than the one pinned for it is refused, even through node 0
    record.nodes[1].host_key = generate_ed25519().public_line
    with pytest.raises(HostKeyMismatch):
        connect(record, ui, node=1, wait=5)
    destroy("lab")
