"""A lab on two Azure VMs as a user makes it: `up --nodes 2 → status → down`, through the real CLI.

Azure is the fake ARM server. Its VMs are real: node 0 (the one with the public IP) boots as an sshd on
127.0.0.1; node 1 has no public IP and boots as an sshd inside a network namespace of its own, at the private
address the fake gave its NIC, so labctl can only mean it when it goes through node 0. Both sshd are in front of
this computer's one Docker engine, so each node's lab container lands there, named apart. Deleting a VM stops its
sshd, removes its namespace and, as its disk goes with it on Azure, its lab container and volume. The nodes do not
train together here: their containers share this computer's network (tests/integration/test_ssh_cluster.py trains).
"""

from __future__ import annotations

import getpass
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labctl.cli import app
from labctl.container import container_name, volume_name
from labctl.keys import normalize
from labctl.state import StateStore
from tests.fakearm import FakeArm
from tests.fakearm.fixtures import arm_env, fake_arm  # noqa: F401
from tests.support.fake_vm import serve_vms
from tests.support.netns import PrivateHost, netns_unavailable, private_hosts
from tests.support.sshd import SSHServer, free_port, sshd_unavailable

pytestmark = pytest.mark.e2e


@pytest.fixture
def vms(
    arm_env: FakeArm,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_client: Any,
    lab_image: str,
) -> Iterator[tuple[list[SSHServer], list[PrivateHost]]]:
    """Boot a real sshd for each VM the fake ARM creates: node 0 on 127.0.0.1, a worker at its private address."""
    from labctl.container import remove_lab

    reason = sshd_unavailable() or netns_unavailable()
    if reason:
        pytest.skip(reason)
    port = free_port()  # every node's SSH port, as on Azure; the worker listens at its own address
    monkeypatch.setenv("LABCTL_SSH_PORT", str(port))
    monkeypatch.setenv("LABCTL_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("LABCTL_ADMIN_USER", getpass.getuser())  # the stand-in VMs are this computer's sshd
    with private_hosts() as private:
        servers = serve_vms(arm_env, tmp_path, port, private)
        machine_gone = arm_env.on_vm_deleted
        assert machine_gone is not None

        def vm_deleted(name: str) -> None:  # "<lab>-vm" is node 0, "<lab>-vm<i>" node i
            machine_gone(name)
            lab, _, node = name.rpartition("-vm")
            remove_lab(docker_client, lab, node=int(node or 0))

        arm_env.on_vm_deleted = vm_deleted
        try:
            yield servers, private
        finally:
            for server in servers:
                server.stop()
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    assert not [h.netns for h in private if h.netns in names], "a worker's network namespace was left behind"


@pytest.fixture
def lab(docker_client: Any) -> Iterator[str]:
    """A lab name of its own; afterwards both nodes' containers and volumes go, as the VMs' disks go with them."""
    import secrets

    from labctl.container import remove_lab

    name = f"e2en{secrets.token_hex(3)}"
    yield name
    for node in (0, 1):
        remove_lab(docker_client, name, node=node)


@pytest.fixture
def jumps(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Where labctl asked an SSH server to open a direct-tcpip channel to: how a node is reached through another."""
    import paramiko

    opened: list[tuple[str, int]] = []
    original = paramiko.Transport.open_channel

    def open_channel(self: paramiko.Transport, kind: str, dest_addr: Any = None, *args: Any, **kwargs: Any) -> Any:
        if kind == "direct-tcpip" and dest_addr is not None:
            opened.append((str(dest_addr[0]), int(dest_addr[1])))
        return original(self, kind, dest_addr, *args, **kwargs)

    monkeypatch.setattr(paramiko.Transport, "open_channel", open_channel)
    return opened


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _nothing_left(fake: FakeArm) -> bool:
    return fake.group_names() == [] and fake.resource_ids() == []


def _gone(client: Any, name: str) -> bool:
    import docker.errors

    try:
        client.containers.get(name)
    except docker.errors.NotFound:
        return True
    return False


def test_two_vms_up_status_down(
    vms: tuple[list[SSHServer], list[PrivateHost]],
    arm_env: FakeArm,  # noqa: F811
    lab: str,
    docker_client: Any,
    jumps: list[tuple[str, int]],
) -> None:
    servers, private = vms
    up = _cli("up", "--name", lab, "--nodes", "2", "--allow-ip", "203.0.113.7/32", "--yes")
    assert up.exit_code == 0, up.output
    assert "[node 0]" in up.output and "[node 1]" in up.output  # each node reported under its own name
    assert "Network interface of node 1 (private address only)" in up.output
    record = StateStore().load(lab)
    assert record.status == "ready" and len(record.nodes) == 2
    assert record.nodes[0].host == "127.0.0.1" and record.nodes[0].private_address == "10.42.0.4"
    [worker] = record.nodes[1:]
    assert (worker.name, worker.host, worker.private_address, worker.via_head) == (
        f"{lab}-vm1",
        "10.42.0.5",
        "10.42.0.5",
        True,
    )
    assert [h.address for h in private] == ["10.42.0.5"]  # node 1 booted at its private address, and only it

    # node 1 was reached through node 0, and known by the host key labctl made for it (sent in its cloud-init)
    head_server = next(s for s in servers if s.netns is None)
    node_server = next(s for s in servers if s.netns is not None)
    assert (worker.host, node_server.port) in jumps
    booted = {boot.name: normalize(boot.host_public_key or "") for boot in arm_env.vm_boots}
    assert worker.host_key == booted[f"{lab}-vm1"] == normalize(node_server.host_key.public)
    assert record.nodes[0].host_key == booted[f"{lab}-vm"] == normalize(head_server.host_key.public) != worker.host_key
    assert "Accepted publickey" in node_server.log_path.read_text()

    # node 0 runs Jupyter on the machine's loopback; node 1's container only stays up for runs
    head_box = docker_client.containers.get(container_name(lab))
    node_box = docker_client.containers.get(container_name(lab, 1))
    assert worker.container_name == node_box.name == f"labctl-{lab}.node1"
    for box in (head_box, node_box):
        assert box.status == "running" and box.attrs["HostConfig"]["NetworkMode"] == "host"
    assert "--ip=127.0.0.1" in head_box.attrs["Config"]["Cmd"]
    assert node_box.attrs["Config"]["Cmd"] == ["sleep", "infinity"]
    assert {m["Destination"]: m["Name"] for m in node_box.attrs["Mounts"]}["/workspace"] == volume_name(lab, 1)

    status = _cli("status", "--name", lab, "--json")
    assert status.exit_code == 0, status.output
    facts = json.loads(status.stdout)
    assert facts["power_state"] == "running"
    nodes = [
        (n["node"], n["name"], n["power_state"], n["private_ip"], n["private_address"], n["reachable"], n["container"])
        for n in facts["nodes"]
    ]
    assert nodes == [
        (0, f"{lab}-vm", "running", "10.42.0.4", "10.42.0.4", True, "running"),
        (1, f"{lab}-vm1", "running", "10.42.0.5", "10.42.0.5", True, "running"),
    ]
    text = _cli("status", "--name", lab)
    assert text.exit_code == 0, text.output
    lines = {line.split("  ", 1)[0]: line for line in text.stdout.splitlines()}
    assert "(private 10.42.0.4), container running" in lines["node 0"], text.stdout
    assert f"{lab}-vm1 (private 10.42.0.5), container running" in lines["node 1"], text.stdout

    down = _cli("down", "--name", lab, "--yes")
    assert down.exit_code == 0, down.output
    assert _nothing_left(arm_env)
    assert not StateStore().exists(lab)
    # both machines went with their VMs: each sshd stopped, node 1's address gone, each node's container and volume
    assert [s.proc for s in servers] == [None, None]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    assert private[0].netns not in netns
    assert _gone(docker_client, container_name(lab)) and _gone(docker_client, container_name(lab, 1))
    assert not [v for v in docker_client.volumes.list() if v.name in (volume_name(lab), volume_name(lab, 1))]
