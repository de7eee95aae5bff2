"""A lab on two SSH hosts, through the real CLI: `up --host A --host B`, `run-lab --nodes 2`, `status`, `down`.

The two hosts are two real sshd on 127.0.0.1 (different ports) in front of this computer's one Docker engine, so
the two nodes' containers share an engine and the host's network, as two machines of a cluster would each have
their own. torchrun meets at node 0's address (127.0.0.1) and the ranks talk gloo over the loopback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labctl.cli import app
from labctl.container import container_name, volume_name
from labctl.state import StateStore
from tests.support.sshd import KeyPair, SSHServer, make_server, sshd_unavailable

pytestmark = [pytest.mark.integration, pytest.mark.slow]

runner = CliRunner()
STEPS = 6
TRAIN = ["--data", "synthetic:256", "--device", "cpu", "--batch-size", "32", "--set", "log_every=0"]


@pytest.fixture
def hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[list[SSHServer], KeyPair]]:
    """Two sshd that accept one client key, both in a known_hosts of the test's own HOME."""
    reason = sshd_unavailable()
    if reason:
        pytest.skip(reason)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LABCTL_RESULTS_DIR", str(tmp_path / "results"))
    head, client = make_server(tmp_path / "head")
    worker, _ = make_server(tmp_path / "worker", authorized_keys=[client.public])
    servers = [head, worker]
    (home / ".ssh" / "known_hosts").write_text("".join(f"[{s.host}]:{s.port} {s.host_key.public}\n" for s in servers))
    for server in servers:
        server.start()
    try:
        yield servers, client
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def cluster_lab(docker_client: Any, lab_image: str) -> Iterator[str]:
    """A lab name of its own; both nodes' containers and volumes go afterwards, whatever the test did."""
    import secrets

    from labctl.container import remove_lab

    name = f"c{secrets.token_hex(4)}"
    yield name
    for node in (0, 1):
        remove_lab(docker_client, name, node=node)


def _host(server: SSHServer) -> str:
    return f"{server.user}@{server.host}:{server.port}"


def _up(servers: list[SSHServer], client: KeyPair, lab: str) -> Any:
    hosts = [arg for server in servers for arg in ("--host", _host(server))]
    return runner.invoke(app, ["up", "--target", "ssh", *hosts, "--ssh-key", str(client.private_path), "-n", lab])


def test_two_hosts_up_train_together_and_down(
    hosts: tuple[list[SSHServer], KeyPair], cluster_lab: str, docker_client: Any, tmp_path: Path
) -> None:
    servers, client = hosts
    up = _up(servers, client, cluster_lab)
    assert up.exit_code == 0, up.output
    record = StateStore().load(cluster_lab)
    assert record.nodes == 2 and record.private_address == "127.0.0.1"
    [worker] = record.workers
    assert (worker.port, worker.host_key) == (servers[1].port, servers[1].host_key.public.rsplit(" ", 1)[0])
    assert worker.container_name == container_name(cluster_lab, 1)
    head_box = docker_client.containers.get(container_name(cluster_lab))
    node_box = docker_client.containers.get(container_name(cluster_lab, 1))
    for box in (head_box, node_box):
        assert box.status == "running" and box.attrs["HostConfig"]["NetworkMode"] == "host"
    # Jupyter on node 0 only, and on the machine's loopback only; node 1's container runs no Jupyter
    assert "--ip=127.0.0.1" in head_box.attrs["Config"]["Cmd"]
    assert f"--port={record.jupyter_port}" in head_box.attrs["Config"]["Cmd"]
    assert node_box.attrs["Config"]["Cmd"] == ["sleep", "infinity"]
    mounts = {m["Destination"]: m["Name"] for m in node_box.attrs["Mounts"]}
    assert mounts["/workspace"] == volume_name(cluster_lab, 1)

    # `up` again converges: both containers are kept
    again = _up(servers, client, cluster_lab)
    assert again.exit_code == 0, again.output
    assert docker_client.containers.get(container_name(cluster_lab, 1)).id == node_box.id
    assert docker_client.containers.get(container_name(cluster_lab)).id == head_box.id

    status = runner.invoke(app, ["status", "-n", cluster_lab, "--json"])
    assert status.exit_code == 0, status.output
    nodes = json.loads(status.stdout)["nodes"]
    assert [(n["node"], n["reachable"], n["container"], n["gpus"]) for n in nodes] == [
        (0, True, "running", 0),
        (1, True, "running", 0),
    ]

    down = runner.invoke(app, ["down", "--yes", "--force", "-n", cluster_lab])
    assert down.exit_code == 0, down.output
    import docker.errors

    for node in (0, 1):
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(container_name(cluster_lab, node))
        with pytest.raises(docker.errors.NotFound):
            docker_client.volumes.get(volume_name(cluster_lab, node))
