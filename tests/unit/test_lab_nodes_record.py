"""A lab on several machines: the record keeps every node, and `up` refuses node counts it cannot make."""

from __future__ import annotations

import pytest

from labctl.errors import UsageError
from labctl.spec import MAX_NODES, LabSpec, parse_host
from labctl.state import LabRecord, NodeRecord

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def test_workers_survive_a_round_trip() -> None:
    record = LabRecord(name="lab", target="azure", host="203.0.113.7", private_address="10.0.0.4")
    record.workers.append(NodeRecord(host="10.0.0.5", host_key=KEY, via_head=True, name="labctl-lab-vm1"))
    again = LabRecord.from_json(record.to_json())
    assert again.nodes == 2
    assert again.workers[0] == record.workers[0]
    assert again.private_address == "10.0.0.4"


def test_a_record_without_workers_is_one_node() -> None:
    data = LabRecord(name="lab", target="local").to_json()
    del data["workers"]  # written before labs had several machines
    assert LabRecord.from_json(data).nodes == 1


@pytest.mark.parametrize(
    ("worker", "words"),
    [
        ({"host": "10.0.0.5; rm -rf /"}, "'host' of node 1"),
        ({"host": "10.0.0.5", "port": 0}, "'port' of node 1"),
        ({"host": "10.0.0.5", "host_key": "not a key"}, "'host_key' of node 1"),
        ({"host": 5}, "'host' in node 1"),
    ],
)
def test_a_bad_worker_is_named(worker: dict[str, object], words: str) -> None:
    data = LabRecord(name="lab", target="ssh").to_json()
    data["workers"] = [worker]
    with pytest.raises(ValueError, match=words):
        LabRecord.from_json(data)


def test_several_hosts_make_an_ssh_cluster() -> None:
    spec = LabSpec(target="ssh", host=parse_host("me@10.0.0.4"), workers=[parse_host("me@10.0.0.5")]).validate()
    assert spec.nodes == 2


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (LabSpec(target="azure", nodes=0), "--nodes 0"),
        (LabSpec(target="azure", nodes=MAX_NODES + 1), f"--nodes {MAX_NODES + 1}"),
        (LabSpec(target="local", nodes=2), "--target local"),
        (LabSpec(target="ssh", host=parse_host("me@h1"), nodes=3), "--nodes 3 with 1 --host"),
        (LabSpec(target="ssh", host=parse_host("me@h1"), workers=[parse_host("me@h1:22")]), "given twice"),
        (LabSpec(target="azure", workers=[parse_host("me@h2")]), "Several --host"),
    ],
)
def test_node_counts_labctl_cannot_make_are_refused(spec: LabSpec, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        spec.validate()


def test_azure_nodes_not_asked_for_stay_open() -> None:
    assert LabSpec(target="azure").validate().nodes is None  # the target keeps an existing lab's count
    assert LabSpec(target="azure", nodes=3).validate().nodes == 3


def test_the_lab_list_shows_every_vm_of_an_azure_lab() -> None:
    from labctl.targets import get_target

    record = LabRecord(name="lab", target="azure", target_data={"region": "eastus", "size": "Standard_D4s_v5"})
    assert get_target("azure").where(record) == ("eastus", "Standard_D4s_v5")
    record.workers.append(NodeRecord(host="10.42.0.5", host_key=KEY, via_head=True))
    assert get_target("azure").where(record) == ("eastus", "2 x Standard_D4s_v5")
