"""A lab on several machines, the parts that need no machine: names, addresses, launches, options, messages."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import threading

import pytest

from labctl import container as lab
from labctl.errors import LabctlError, UsageError
from labctl.labhost import node_where, on_each_node, private_addresses
from labctl.spec import LabSpec, parse_host
from labctl.state import LabRecord, NodeRecord, RunRecord
from labctl.targets.ssh import SSHTarget, _check_same_workers
from labctl.ui import NodeReporter, PlainReporter
from labctl.workflows.runlab import _nodes_asked, run_nodes
from labctl.workflows.runlab_options import RunLabOptions, cifarlab_args, launch
from labctl.workflows.status import render

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def _cluster(workers: int = 1, private_address: str | None = None) -> LabRecord:
    head = NodeRecord(host="10.0.0.4", port=22, user="me", private_address=private_address)
    return LabRecord(
        name="lab",
        target="ssh",
        nodes=[head, *(NodeRecord(host=f"10.0.0.{5 + i}", host_key=KEY) for i in range(workers))],
    )


# ------------------------------------------------------------------------------------------------ containers


def test_node_containers_and_volumes_never_share_a_name_with_node_0_or_another_lab() -> None:
    assert lab.container_name("lab") == "labctl-lab" and lab.volume_name("lab") == "labctl-lab-workspace"
    assert lab.container_name("lab", 1) == "labctl-lab.node1"
    assert lab.volume_name("lab", 2) == "labctl-lab.node2-workspace"
    # a lab called "lab-node1" is another lab, and no lab name holds a '.'
    assert lab.container_name("lab-node1") != lab.container_name("lab", 1)


def test_a_lab_on_one_machine_keeps_the_container_it_has_today() -> None:
    made = f"img|tok|8888|False|{lab.jupyter_command()}"  # what the one-node hash has always been made of
    one = lab.ContainerSpec("lab", "image", False, token="tok", port=8888)
    assert one.config_hash("img") == hashlib.sha256(made.encode()).hexdigest()[:16]
    assert dataclasses.replace(one, several_nodes=True).config_hash("img") != one.config_hash("img")


def test_jupyter_on_the_host_network_listens_on_loopback_at_the_recorded_port_only() -> None:
    command = lab.jupyter_command(8890)
    assert "--ip=127.0.0.1" in command and "--port=8890" in command
    assert "--ServerApp.port_retries=0" in command  # a taken port is labctl's to move, not Jupyter's
    assert not any(arg.startswith("--ip=0.0.0.0") for arg in command)


def test_every_container_of_a_lab_on_several_machines_uses_the_host_network() -> None:
    assert lab._sharing(False) == {"shm_size": "2g"}  # as before, on one machine
    assert lab._sharing(False, several_nodes=True) == {"network_mode": "host", "shm_size": "2g"}
    assert lab._sharing(True, several_nodes=True) == {"ipc_mode": "host", "network_mode": "host"}
    assert lab._sharing(True) == {"ipc_mode": "host"}  # NCCL's shared memory between the GPUs of one machine


# ------------------------------------------------------------------------------------------------ nodes


def test_nodes_are_named_by_number_and_address_and_meet_at_their_private_addresses() -> None:
    record = _cluster(private_address="192.168.1.4")
    record.nodes[1].private_address = "192.168.1.5"
    assert node_where(record, 0) == "node 0 (me@10.0.0.4:22)"
    assert node_where(record, 1) == "node 1 (me@10.0.0.5:22)"
    assert private_addresses(record) == ["192.168.1.4", "192.168.1.5"]
    record.nodes[0].private_address = record.nodes[1].private_address = None
    assert private_addresses(record) == ["10.0.0.4", "10.0.0.5"]  # the addresses labctl uses
    one = LabRecord(name="lab", target="ssh", nodes=[NodeRecord(host="10.0.0.4", user="me")])
    assert node_where(one, 0) == "me@10.0.0.4:22"  # a lab on one machine is just its machine


def test_each_node_runs_at_once_and_the_first_failure_names_its_node() -> None:
    record = _cluster(workers=2)
    seen: list[tuple[int, str]] = []
    lock = threading.Lock()

    def act(node: int, ui: object) -> int:
        with lock:
            seen.append((node, threading.current_thread().name))
        if node == 2:
            raise UsageError("Docker is not running.", hint="Start it.")
        return node * 10

    with pytest.raises(LabctlError) as raised:
        on_each_node(record, act, PlainReporter(quiet=True))
    assert raised.value.message == "On node 2 (me@10.0.0.6:22): Docker is not running."
    assert raised.value.hint == "Start it." and raised.value.exit_code == 2
    assert sorted(n for n, _ in seen) == [0, 1, 2]  # every node was tried, each in a thread of its own
    assert {name for _, name in seen} == {"labctl-node0", "labctl-node1", "labctl-node2"}
    assert on_each_node(record, lambda node, ui: node * 10, PlainReporter(quiet=True)) == [0, 10, 20]


def test_a_lab_on_one_machine_is_prepared_in_the_callers_thread_with_its_reporter() -> None:
    ui = PlainReporter(quiet=True)
    got = on_each_node(LabRecord(name="lab", target="local"), lambda n, r: (n, r, threading.current_thread()), ui)
    assert got == [(0, ui, threading.current_thread())]


def test_a_nodes_messages_and_steps_carry_its_name_without_a_spinner() -> None:
    out = io.StringIO()
    node = NodeReporter(PlainReporter(out), "[node 1]")
    node.info("Docker is running")
    with node.step("Building the lab image"):
        pass
    with pytest.raises(RuntimeError), node.step("Starting the lab container"):
        raise RuntimeError("no")
    lines = out.getvalue().splitlines()
    assert lines[0] == "[node 1] Docker is running"
    assert lines[1] == "[node 1] Building the lab image ..."
    assert lines[2].startswith("[node 1] Building the lab image: done (")
    assert lines[4].startswith("[node 1] Starting the lab container: failed after ")


# ------------------------------------------------------------------------------------------------ ssh target


def test_up_again_on_other_machines_is_refused_and_says_how_to_converge() -> None:
    record = _cluster()
    spec = LabSpec(name="lab", target="ssh", host=parse_host("me@10.0.0.4"), workers=[parse_host("me@10.0.0.9")])
    with pytest.raises(UsageError, match=r"10\.0\.0\.5:22 besides 10\.0\.0\.4") as raised:
        _check_same_workers(record, spec)
    assert "same --host values" in (raised.value.hint or "")
    spec.workers = [parse_host("me@10.0.0.5")]
    _check_same_workers(record, spec)  # the same machines: up converges
    _check_same_workers(LabRecord(name="lab", target="ssh"), spec)  # a new lab takes any


def test_the_plan_names_every_machine_and_what_they_must_reach() -> None:
    spec = LabSpec(name="lab", target="ssh", host=parse_host("me@10.0.0.4"), workers=[parse_host("me@10.0.0.5:2222")])
    outcome = SSHTarget().plan(spec)
    assert outcome.data["workers"] == ["me@10.0.0.5:2222"]
    assert "me@10.0.0.4:22, me@10.0.0.5:2222" in outcome.text
    assert "every machine must reach the others at the address given here" in outcome.text


# ------------------------------------------------------------------------------------------------ run-lab


def test_run_lab_trains_on_every_node_unless_told_and_never_on_more_than_the_lab_has() -> None:
    record = _cluster()
    assert _nodes_asked(RunLabOptions(), record) == 2
    assert _nodes_asked(RunLabOptions(nodes=1), record) == 1
    assert _nodes_asked(RunLabOptions(notebook=True), record) == 1  # one kernel, one machine
    with pytest.raises(UsageError, match="--nodes 3 asks for more machines than lab 'lab' has: it has 2") as raised:
        _nodes_asked(RunLabOptions(nodes=3), record)
    assert "labctl up --name lab --nodes 3" in (raised.value.hint or "")


@pytest.mark.parametrize(
    ("opts", "words"),
    [
        (RunLabOptions(nodes=0), "--nodes 0 is not a number of machines"),
        (RunLabOptions(nodes=2, here=True), "--here trains on this computer only"),
        (RunLabOptions(nodes=2, notebook=True), "--notebook runs in one Jupyter kernel"),
    ],
)
def test_node_counts_that_cannot_be_met_are_refused_before_anything_connects(opts: RunLabOptions, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        opts.check()


def test_a_run_remembers_how_many_nodes_it_was_started_on() -> None:
    record = _cluster()
    record.runs = [RunRecord(run_id="r1", started_at="t"), RunRecord(run_id="r2", started_at="t", options={"nodes": 2})]
    assert (run_nodes(record, "r1"), run_nodes(record, "r2"), run_nodes(record, "elsewhere")) == (1, 2, 1)


def test_each_node_launches_torchrun_meeting_at_node_0() -> None:
    opts = RunLabOptions(training={"device": "cpu"})
    args = [cifarlab_args(opts, out="/workspace/runs/r", data="synthetic:256") for _ in range(2)]
    starts = launch(
        opts, args, run_id="r", gpus_per_node=[0, 0], addresses=["10.0.0.4", "10.0.0.5"], rdzv_port=29400, log_dir="/l"
    )
    for node, start in enumerate(starts):
        argv = start.argv
        assert argv[: argv.index("-m", 3)][:3] == ["python", "-m", "torch.distributed.run"]
        assert argv[argv.index("--nnodes") + 1] == "2" and argv[argv.index("--rdzv-endpoint") + 1] == "10.0.0.4:29400"
        assert argv[argv.index("--local-addr") + 1] == f"10.0.0.{4 + node}"
        assert argv[argv.index("--rdzv-conf") + 1] == f"is_host={1 if node == 0 else 0}"
        assert argv[-len(args[node]) + 1 :] == args[node][1:]  # the lab's own arguments, unchanged
    assert starts[0].summary == "torchrun: 2 processes (CPU on each of 2 nodes, gloo), meeting at 10.0.0.4:29400"


def test_gpu_nodes_use_as_many_gpus_as_the_smallest_and_one_named_device_is_refused() -> None:
    args = [["train", "--out", "/o"]] * 2
    kwargs = {"run_id": "r", "addresses": ["a1", "a2"], "rdzv_port": 29400, "log_dir": "/l"}
    starts = launch(RunLabOptions(), args, gpus_per_node=[4, 2], **kwargs)  # type: ignore[arg-type]
    assert [s.plan.procs_per_node if s.plan else None for s in starts] == [2, 2]
    with pytest.raises(UsageError, match="--device mps names one device, and 2 processes would share it"):
        launch(RunLabOptions(training={"device": "mps"}), args, gpus_per_node=[2, 2], **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ status


def test_status_shows_each_node() -> None:
    up = {"reachable": True, "container": "running"}
    nodes = [
        {"node": 0, "address": "me@10.0.0.4:22", "private_address": "10.0.0.4", **up, "gpus": 1},
        {"node": 1, "address": "me@1.2.3.4:22", "private_address": "10.0.0.5", **up, "container": "exited"},
        {
            "node": 2,
            "address": "me@10.0.0.6:22",
            "private_address": "10.0.0.6",
            "reachable": False,
            "error": "timed out",
        },
        {"node": 3, "address": "lab-vm3", "private_address": "10.0.0.7", "power_state": "deallocated"},
    ]
    lines = dict(line.split("  ", 1) for line in render({"name": "lab", "nodes": nodes}).splitlines())
    assert lines["node 0"].strip() == "me@10.0.0.4:22, container running, 1 GPU"
    assert lines["node 1"].strip() == "me@1.2.3.4:22 (private 10.0.0.5), container exited"
    assert lines["node 2"].strip() == "me@10.0.0.6:22, unreachable: timed out"
    assert lines["node 3"].strip() == "lab-vm3 (private 10.0.0.7), deallocated"  # as the target says


def test_status_keeps_what_the_target_says_of_each_node_and_dials_no_machine_that_is_off() -> None:
    from labctl.labhost import describe_lab

    record = _cluster()
    described = [{"node": 0, "power_state": "deallocated", "name": "lab-vm"}, {"node": 1, "power_state": "deallocated"}]
    facts = describe_lab(record, machines=described)
    nodes = facts.pop("nodes")
    assert facts == {}  # node 0 is off: nothing of a container, and no error for the lab as a whole
    assert [(n["node"], n["name"] if n["node"] == 0 else None, n["reachable"]) for n in nodes] == [
        (0, "lab-vm", False),
        (1, None, False),
    ]
    assert {n["error"] for n in nodes} == {"its machine is not running"}
