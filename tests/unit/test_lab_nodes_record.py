"""A lab is a list of nodes: the record keeps each (and reads the earlier format); `up` refuses what it cannot make."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from labctl.errors import UsageError
from labctl.spec import MAX_NODES, LabSpec, parse_host
from labctl.state import LabRecord, NodeRecord, StateStore

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def test_workers_survive_a_round_trip() -> None:
    record = LabRecord(name="lab", target="azure", nodes=[NodeRecord(host="203.0.113.7", private_address="10.0.0.4")])
    record.nodes.append(NodeRecord(host="10.0.0.5", host_key=KEY, via_head=True, name="labctl-lab-vm1"))
    again = LabRecord.from_json(asdict(record))
    assert len(again.nodes) == 2
    assert again.nodes[1] == record.nodes[1]
    assert again.nodes[0].private_address == "10.0.0.4"


# A record as labctl wrote it before a lab was a list of nodes: node 0 in the record's own fields, the rest apart.
TODAYS_FORMAT = {
    "name": "lab",
    "target": "azure",
    "status": "ready",
    "host": "203.0.113.7",
    "port": 2222,
    "user": "azureuser",
    "host_key": KEY,
    "private_address": "10.0.0.4",
    "ssh_key_path": "/keys/lab",
    "container_name": "labctl-lab",
    "workers": [{"host": "10.0.0.5", "host_key": KEY, "private_address": "10.0.0.5", "via_head": True}],
}


def test_a_record_in_the_earlier_format_is_read_as_a_list_of_nodes(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    (tmp_path / "labs").mkdir()
    (tmp_path / "labs" / "lab.json").write_text(json.dumps(TODAYS_FORMAT))
    record = store.load("lab")
    head = NodeRecord(host="203.0.113.7", port=2222, user="azureuser", host_key=KEY, private_address="10.0.0.4")
    assert record.nodes == [head, NodeRecord(host="10.0.0.5", host_key=KEY, private_address="10.0.0.5", via_head=True)]
    assert (record.ssh_key_path, record.container_name, record.status) == ("/keys/lab", "labctl-lab", "ready")
    store.save(record)  # written back in the new shape, and read the same
    assert "workers" not in json.loads((tmp_path / "labs" / "lab.json").read_text()) and store.load("lab") == record


def test_a_record_from_before_several_machines_is_one_node() -> None:
    data = {k: v for k, v in TODAYS_FORMAT.items() if k != "workers"}
    assert len(LabRecord.from_json(data).nodes) == 1
    assert len(LabRecord(name="lab", target="local").nodes) == 1  # a new lab: a cluster of one, not yet reached


@pytest.mark.parametrize(
    ("node", "words"),
    [
        ({"host": "10.0.0.5; rm -rf /"}, "'host' in node 1 is '10.0.0.5; rm -rf /', which no lab"),
        ({"host": "10.0.0.5", "port": 0}, "'port' in node 1"),
        ({"host": "10.0.0.5", "host_key": "not a key"}, "'host_key' in node 1"),
        ({"host": 5}, "'host' in node 1 is 5, which is not a str"),
        ("10.0.0.5", "node 1 is a JSON str"),
    ],
)
def test_a_bad_node_is_named_in_either_format(node: object, words: str) -> None:
    data = asdict(LabRecord(name="lab", target="ssh"))
    data["nodes"].append(node)
    with pytest.raises(ValueError, match=words):
        LabRecord.from_json(data)
    with pytest.raises(ValueError, match=words):
        LabRecord.from_json({**TODAYS_FORMAT, "workers": [node]})


def test_a_lab_has_at_least_one_node() -> None:
    with pytest.raises(ValueError, match="'nodes' in the lab record is \\[\\]"):
        LabRecord.from_json({"name": "lab", "target": "ssh", "nodes": []})


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
        (LabSpec(target="azure", workers=[parse_host("me@h2")]), "--host applies only to --target ssh"),
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
    record.nodes.append(NodeRecord(host="10.42.0.5", host_key=KEY, via_head=True))
    assert get_target("azure").where(record) == ("eastus", "2 x Standard_D4s_v5")
