"""A lab on two SSH hosts, through the real CLI: `up --host A --host B`, `run-lab --nodes 2`, `status`, `down`.

The two hosts are two real sshd on 127.0.0.1 (different ports) in front of this computer's one Docker engine, so
the two nodes' containers share an engine and the host's network, as two machines of a cluster would each have
their own. torchrun meets at node 0's address (127.0.0.1) and the ranks talk gloo over the loopback.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labctl.cli import app
from labctl.container import container_name, volume_name
from labctl.keys import fingerprint
from labctl.state import StateStore
from tests.conftest import clean_environment_in
from tests.support.sshd import KeyPair, SSHServer, make_server, sshd_unavailable

pytestmark = [pytest.mark.integration, pytest.mark.slow]

runner = CliRunner()
STEPS = 6
TRAIN = ["--data", "synthetic:256", "--device", "cpu", "--batch-size", "32", "--set", "log_every=0"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[SSHServer], KeyPair]]:
    """Two sshd that accept one client key, started once for the module."""
    reason = sshd_unavailable()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("hosts")
    head, client = make_server(root / "head")
    worker, _ = make_server(root / "worker", authorized_keys=[client.public])
    started = [head, worker]
    for server in started:
        server.start()
    try:
        yield started, client
    finally:
        for server in started:
            server.stop()


def _trust(servers: list[SSHServer]) -> None:
    """Both hosts' keys in the known_hosts of the current HOME."""
    ssh = Path.home() / ".ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    (ssh / "known_hosts").write_text("".join(f"[{s.host}]:{s.port} {s.host_key.public}\n" for s in servers))


@pytest.fixture
def hosts(
    servers: tuple[list[SSHServer], KeyPair], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[SSHServer], KeyPair]:
    """The module's two sshd, both in a known_hosts of the test's own HOME."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LABCTL_RESULTS_DIR", str(tmp_path / "results"))
    _trust(servers[0])
    return servers


@pytest.fixture(scope="module")
def made_cluster(
    servers: tuple[list[SSHServer], KeyPair],
    docker_client: Any,
    lab_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Any, str, str]]:
    """One two-node lab for the module, made by `up` (two containers and a Jupyter cost many seconds): the
    result of `up`, the lab's name and the module's labctl state directory. Both nodes' containers and volumes
    go afterwards, whatever the tests did."""
    import secrets

    from labctl.container import remove_lab

    name = f"c{secrets.token_hex(4)}"
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            clean_environment_in(monkeypatch, tmp_path_factory)
            _trust(servers[0])
            up = _up(*servers, name)
            state = os.environ["LABCTL_STATE_DIR"]
        yield up, name, state
    finally:
        for node in (0, 1):
            remove_lab(docker_client, name, node=node)


@pytest.fixture
def cluster_lab(
    made_cluster: tuple[Any, str, str], hosts: tuple[list[SSHServer], KeyPair], monkeypatch: pytest.MonkeyPatch
) -> str:
    """The module's lab, in the module's labctl state: its record holds the runs of the tests before, so `down`
    finds each of them fetched, as on a lab used for a while."""
    up, name, state = made_cluster
    assert up.exit_code == 0, up.output
    monkeypatch.setenv("LABCTL_STATE_DIR", state)
    return name


def _host(server: SSHServer) -> str:
    return f"{server.user}@{server.host}:{server.port}"


def _up(servers: list[SSHServer], client: KeyPair, lab: str) -> Any:
    hosts = [arg for server in servers for arg in ("--host", _host(server))]
    return runner.invoke(app, ["up", "--target", "ssh", *hosts, "--ssh-key", str(client.private_path), "-n", lab])


def test_two_hosts_up_train_together_and_cancel(
    hosts: tuple[list[SSHServer], KeyPair], cluster_lab: str, docker_client: Any, tmp_path: Path
) -> None:
    servers, client = hosts
    record = StateStore().load(cluster_lab)  # what `up --host A --host B` recorded
    assert len(record.nodes) == 2 and record.nodes[0].private_address == "127.0.0.1"
    [worker] = record.nodes[1:]
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

    _train_on_both(cluster_lab, docker_client, tmp_path)
    _cancel_on_both(cluster_lab, docker_client)


def _train_on_both(lab: str, docker_client: Any, tmp_path: Path) -> None:
    """run-lab --nodes 2: torchrun on both nodes, one rank each, rank 0's results fetched and verified."""
    too_many = runner.invoke(app, ["run-lab", "-n", lab, "--nodes", "3", *TRAIN])
    assert too_many.exit_code == 2 and "labctl up" in too_many.output and "--nodes 3" in too_many.output

    run = runner.invoke(app, ["run-lab", "-n", lab, "--nodes", "2", *TRAIN, "--set", f"max_steps={STEPS}"])
    assert run.exit_code == 0, run.output
    assert "torchrun: 2 processes (CPU on each of 2 nodes, gloo)" in run.output
    [run_id] = re.findall(r"Run (\S+) started on 2 nodes", run.output)
    # each rank said, under its own global rank, that it started in a world of 2 and ended with every step
    for rank in (0, 1):
        assert re.search(rf"^\[rank {rank}\] rank {rank}/2 \(local 0/1, node [01] on ", run.output, re.M), run.output
        assert re.search(rf"^\[rank {rank}\] .*ends succeeded: {STEPS}/{STEPS} steps", run.output, re.M)
    assert re.search(r"files verified", run.output)

    results = tmp_path / "results" / lab / run_id
    metrics = json.loads((results / "metrics.json").read_text())
    assert (metrics["status"], metrics["world_size"], metrics["nodes"], metrics["steps"]) == ("succeeded", 2, 2, STEPS)
    launch = json.loads((results / "run.json").read_text())["launch"]
    assert launch[launch.index("--nnodes") + 1] == "2" and "c10d" in launch
    # the node that did not hold rank 0 ran its own torchrun, whose rank log shows it joined the same group
    other = [n for n in (0, 1) if not _holds_rank_zero(docker_client, lab, n, run_id)]
    assert len(other) == 1
    code, text = docker_client.containers.get(container_name(lab, other[0])).exec_run(
        ["sh", "-c", f"cat /workspace/runs/{run_id}/ranks/*/attempt_0/0/stdout.log"]
    )
    assert code == 0 and "rank 1/2" in text.decode(), text.decode()

    # logs, runs and fetch know the run lives on two nodes
    logs = runner.invoke(app, ["logs", "-n", lab, run_id])
    assert logs.exit_code == 0, logs.output
    assert "[rank 1] rank 1/2" in logs.output and "node 0 succeeded, node 1 succeeded" in logs.output
    listed = runner.invoke(app, ["runs", "-n", lab])
    assert listed.exit_code == 0 and run_id in listed.output
    again = runner.invoke(app, ["fetch", "-n", lab, run_id])
    assert again.exit_code == 0 and "files verified" in again.output, again.output


def _cancel_on_both(lab: str, docker_client: Any) -> None:
    """cancel stops a run on every node it runs on, and its results can still be fetched."""
    started = runner.invoke(app, ["run-lab", "-n", lab, *TRAIN, "--epochs", "1000", "--detach"])
    assert started.exit_code == 0, started.output
    [run_id] = re.findall(r"Run (\S+) started on 2 nodes", started.output)
    _rank_zero_training(docker_client, lab, run_id)
    cancel = runner.invoke(app, ["cancel", "-n", lab, run_id])
    assert cancel.exit_code == 0, cancel.output
    for node in (0, 1):  # cancel waited for every node: each run's wrapper has written its exit code
        box = docker_client.containers.get(container_name(lab, node))
        assert box.exec_run(["test", "-e", f"/workspace/runs/{run_id}/exit_code"]).exit_code == 0, node
    fetched = runner.invoke(app, ["fetch", "-n", lab, run_id])
    assert fetched.exit_code == 0 and "files verified" in fetched.output, fetched.output


def _holds_rank_zero(docker_client: Any, lab: str, node: int, run_id: str) -> bool:
    box = docker_client.containers.get(container_name(lab, node))
    return box.exec_run(["test", "-e", f"/workspace/runs/{run_id}/events.jsonl"]).exit_code == 0


def test_yes_never_pins_the_unknown_key_of_another_machine(hosts: tuple[list[SSHServer], KeyPair]) -> None:
    servers, client = hosts
    head, worker = servers
    known = Path.home() / ".ssh" / "known_hosts"
    known.write_text(f"[{head.host}]:{head.port} {head.host_key.public}\n")  # the head's key only
    hosts_args = [arg for server in servers for arg in ("--host", _host(server))]
    args = ["up", "--target", "ssh", *hosts_args, "--ssh-key", str(client.private_path), "-n", "keyn", "--yes"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"SSH host key of {worker.host}:{worker.port}, and --yes does not pin an unknown key" in result.output
    assert f"offered ssh-ed25519 {fingerprint(worker.host_key.public)}" in result.output
    assert "known_hosts" in result.output and "--host-key-fingerprint" not in result.output
    assert not StateStore().exists("keyn")  # nothing pinned, and a refused `up` leaves no lab record


def test_a_node_lost_mid_run_ends_the_run_naming_it_then_up_brings_it_back_and_down_removes_both(
    hosts: tuple[list[SSHServer], KeyPair],
    cluster_lab: str,
    docker_client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import labctl.cluster

    # the node holding rank 0 may wait on the lost node's rendezvous store while it shuts down: ask it sooner
    monkeypatch.setattr(labctl.cluster, "LOST_GRACE_S", 10.0)
    servers, client = hosts
    boxes = [docker_client.containers.get(container_name(cluster_lab, node)) for node in (0, 1)]
    earlier = _runs_in(boxes[0]) | _runs_in(boxes[1])  # another test's runs on the module's lab
    result: dict[str, Any] = {}
    args = ["run-lab", "-n", cluster_lab, "--nodes", "2", *TRAIN, "--epochs", "1000"]
    thread = threading.Thread(target=lambda: result.update(run=runner.invoke(app, args)), daemon=True)
    thread.start()
    head, run_id = _rank_zero_training(docker_client, cluster_lab, earlier=earlier)
    lost = 1 - head
    docker_client.containers.get(container_name(cluster_lab, lost)).remove(force=True)  # the machine is gone
    thread.join(600)  # a deadline for a hang only: run-lab ends about LOST_GRACE_S after the loss
    assert not thread.is_alive(), "run-lab did not end after a node was lost"
    run = result["run"]
    assert run.exit_code == 1, run.output
    assert f"Run {run_id} lost a node, so it stopped: node {lost} (" in run.output, run.output
    # rank 0 kept the checkpoint of its last step, and run-lab brought it back and says where
    checkpoint = tmp_path / "results" / cluster_lab / run_id / "checkpoint.pt"
    assert checkpoint.is_file() and f"The last checkpoint: it was fetched with rank 0's results to {checkpoint}" in (
        run.output
    )
    metrics = json.loads((checkpoint.parent / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["steps"] >= 1

    # `up` makes the lost node's container again; `down` removes both nodes' containers and volumes
    again = _up(servers, client, cluster_lab)
    assert again.exit_code == 0, again.output
    assert docker_client.containers.get(container_name(cluster_lab, lost)).status == "running"
    down = runner.invoke(app, ["down", "--yes", "-n", cluster_lab])
    assert down.exit_code == 0, down.output
    import docker.errors

    for node in (0, 1):
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(container_name(cluster_lab, node))
        with pytest.raises(docker.errors.NotFound):
            docker_client.volumes.get(volume_name(cluster_lab, node))


def _runs_in(box: Any) -> set[str]:
    code, out = box.exec_run(["ls", "/workspace/runs"])
    return set(out.decode().split()) if code == 0 else set()


def _rank_zero_training(
    docker_client: Any, lab: str, run_id: str = "", *, earlier: set[str] | None = None, timeout: float = 600.0
) -> tuple[int, str]:
    """(the node holding rank 0, the run id) once rank 0 has reported training progress there (every second);
    the run ``run_id``, or else the lab's run that is not one of the ``earlier`` ones."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node in (0, 1):
            box = docker_client.containers.get(container_name(lab, node))
            candidates = [run_id] if run_id else _runs_in(box) - (earlier or set())
            for name in candidates:
                code, out = box.exec_run(["cat", f"/workspace/runs/{name}/events.jsonl"])
                if code == 0 and out.decode().count('"progress"') >= 2:
                    return node, name
        time.sleep(0.5)
    raise AssertionError("rank 0 never started training")
