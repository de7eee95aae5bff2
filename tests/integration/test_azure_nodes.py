"""`up --nodes N` on Azure against the fake ARM: N VMs of one size in one VNet, NSG and placement group, one public
IP (node 0's), workers at private addresses Azure gives in order; quota and price counted N times; `up` resumes
an interrupted lab and never shrinks one; a worker without room fails clearly; `stop`/`start`/`down` reach all."""

from __future__ import annotations

import io

import pytest

from labctl.errors import LabctlError, NoCapacity, UsageError
from labctl.keys import normalize
from labctl.spec import LabSpec
from labctl.state import StateStore
from labctl.targets.azure import AzureTarget
from labctl.ui import PlainReporter
from tests.fakearm import FakeArm
from tests.fakearm.fixtures import arm_env, destroy, fake_arm, lab_group, provision  # noqa: F401

pytestmark = pytest.mark.usefixtures("arm_env")

VM = "Microsoft.Compute/virtualMachines"
NIC = "Microsoft.Network/networkInterfaces"


def _by_name(fake: FakeArm, rtype: str) -> dict[str, dict]:  # type: ignore[type-arg]
    found = {}
    for rid in fake.resource_ids(rtype):
        res = fake.get(rid)
        if res is not None and res["type"] == rtype:
            found[res["name"]] = res
    return found


def test_three_nodes_are_three_vms_behind_one_public_ip(arm_env: FakeArm) -> None:  # noqa: F811
    record = provision("lab", nodes=3)
    vms, nics = _by_name(arm_env, VM), _by_name(arm_env, NIC)
    assert sorted(vms) == ["lab-vm", "lab-vm1", "lab-vm2"] and sorted(nics) == ["lab-nic", "lab-nic1", "lab-nic2"]
    assert {vm["properties"]["hardwareProfile"]["vmSize"] for vm in vms.values()} == {"Standard_D4s_v5"}
    ips = _by_name(arm_env, "Microsoft.Network/publicIPAddresses")
    assert sorted(ips) == ["lab-ip", "lab-nat-ip"]
    assert len(arm_env.resource_ids("securityGroups")) == 1
    # the subnet's way out, for the workers that have no public IP: a NAT gateway with the other address
    (nat,) = _by_name(arm_env, "Microsoft.Network/natGateways").values()
    assert nat["properties"]["publicIpAddresses"] == [{"id": ips["lab-nat-ip"]["id"]}]
    assert len(arm_env.resource_ids("schedules")) == 3  # every VM stops daily, not only node 0

    # one NSG and one subnet for all; only node 0's NIC has the public IP
    configs = {name: nic["properties"]["ipConfigurations"][0]["properties"] for name, nic in nics.items()}
    assert {n["properties"]["networkSecurityGroup"]["id"] for n in nics.values()} == {
        arm_env.resource_ids("securityGroups")[0]
    }
    assert len({c["subnet"]["id"] for c in configs.values()}) == 1
    assert "publicIPAddress" in configs["lab-nic"]
    assert "publicIPAddress" not in configs["lab-nic1"] and "publicIPAddress" not in configs["lab-nic2"]
    # Azure's order: the first free address from .4, node 0's NIC first
    assert configs["lab-nic"]["privateIPAddress"] == "10.42.0.4"
    assert {configs["lab-nic1"]["privateIPAddress"], configs["lab-nic2"]["privateIPAddress"]} == {
        "10.42.0.5",
        "10.42.0.6",
    }

    # one placement group holding the three
    (ppg_id,) = arm_env.resource_ids("proximityPlacementGroups")
    ppg = arm_env.get(ppg_id)
    assert ppg is not None and ppg["properties"]["proximityPlacementGroupType"] == "Standard"
    assert sorted(m["id"].rsplit("/", 1)[1] for m in ppg["properties"]["virtualMachines"]) == sorted(vms)
    assert {vm["properties"]["proximityPlacementGroup"]["id"] for vm in vms.values()} == {ppg["id"]}

    # the record: node 0's private address, each worker at its own with its own pinned key
    assert record.nodes[0].private_address == "10.42.0.4" and len(record.nodes) == 3
    assert [w.name for w in record.nodes[1:]] == ["lab-vm1", "lab-vm2"]
    for node, worker in enumerate(record.nodes[1:], start=1):
        assert worker.host == worker.private_address == configs[f"lab-nic{node}"]["privateIPAddress"]
        assert (worker.port, worker.user, worker.via_head) == (22, "azureuser", True)
    keys = [record.nodes[0].host_key] + [w.host_key for w in record.nodes[1:]]
    assert len(set(keys)) == 3
    booted = {boot.name: normalize(boot.host_public_key or "") for boot in arm_env.vm_boots}
    assert booted == {"lab-vm": keys[0], "lab-vm1": keys[1], "lab-vm2": keys[2]}  # each its own, via cloud-init
    td = record.target_data
    assert td["nodes"] == 3 and td["placement_group"] == ppg["id"]
    assert td["usd_per_hour"] == pytest.approx(3 * 0.192)

    destroy("lab")
    assert arm_env.resource_ids() == [] and lab_group(arm_env) not in arm_env.group_names()


def test_one_node_has_no_placement_group_and_no_workers(arm_env: FakeArm) -> None:  # noqa: F811
    record = provision("lab")
    assert record.nodes[1:] == [] and record.nodes[0].private_address == "10.42.0.4"
    assert arm_env.resource_ids("proximityPlacementGroups") == []
    vm = _by_name(arm_env, VM)["lab-vm"]
    assert "proximityPlacementGroup" not in vm["properties"]


def test_an_interrupted_up_resumes_and_keeps_what_it_made(arm_env: FakeArm) -> None:  # noqa: F811
    broken = arm_env.inject(method="PUT", path=r"virtualmachines/lab-vm2$", drop=True, times=-1)
    with pytest.raises(LabctlError):
        provision("lab", nodes=3)
    first = StateStore().load("lab")
    assert sorted(_by_name(arm_env, VM)) == ["lab-vm", "lab-vm1"]
    assert first.target_data["nodes"] == 3  # `down` and `stop` know of every node before it exists
    arm_env.faults.remove(broken)

    again = provision("lab", nodes=3)
    assert sorted(_by_name(arm_env, VM)) == ["lab-vm", "lab-vm1", "lab-vm2"]
    assert arm_env.count("PUT", r"virtualmachines/lab-vm$") == 1  # made once, kept
    assert arm_env.count("PUT", r"virtualmachines/lab-vm1$") == 1
    assert again.nodes[0].host_key == first.nodes[0].host_key and again.nodes[1].host_key == first.nodes[1].host_key
    assert [w.host for w in again.nodes[1:]] == [n.private_address for n in again.nodes[1:]]
    destroy("lab")
    assert arm_env.resource_ids() == []


def test_up_never_shrinks_a_lab(arm_env: FakeArm) -> None:  # noqa: F811
    provision("lab", nodes=2)
    before = len(arm_env.requests)
    with pytest.raises(UsageError, match=r"has 2 nodes.*--nodes 1") as refused:
        provision("lab", nodes=1)
    assert "labctl up --name lab --nodes 2" in (refused.value.hint or "")
    assert len(arm_env.requests) == before  # refused before Azure was asked anything
    assert len(_by_name(arm_env, VM)) == 2
    again = provision("lab")  # a plain `up` converges the lab as it is, every node kept
    assert len(again.nodes) == 2 and len(_by_name(arm_env, VM)) == 2


def test_a_lab_grows_and_keeps_its_first_vm(arm_env: FakeArm) -> None:  # noqa: F811
    first = provision("lab")
    grown = provision("lab", nodes=2)
    assert grown.nodes[0].host_key == first.nodes[0].host_key and arm_env.count("PUT", r"virtualmachines/lab-vm$") == 1
    assert [w.name for w in grown.nodes[1:]] == ["lab-vm1"] and grown.nodes[1].host == "10.42.0.5"
    # node 0 was made alone, in no placement group: its new node follows it (a running VM cannot be moved)
    assert "proximityPlacementGroup" not in _by_name(arm_env, VM)["lab-vm1"]["properties"]


def test_a_worker_without_room_moves_every_node_to_the_next_size(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.fail_allocation(vm="lab-vm2")
    record = provision("lab", nodes=3, sizes=["Standard_D4s_v5", "Standard_D8s_v5"])
    vms = _by_name(arm_env, VM)
    assert sorted(vms) == ["lab-vm", "lab-vm1", "lab-vm2"]
    assert {vm["properties"]["hardwareProfile"]["vmSize"] for vm in vms.values()} == {"Standard_D8s_v5"}
    assert record.target_data["size"] == "Standard_D8s_v5" and len(record.nodes) == 3


def test_a_worker_without_room_anywhere_fails_clearly_and_down_removes_all(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.fail_allocation(vm="lab-vm1")
    with pytest.raises(NoCapacity, match=r"node 1 .*need room together") as refused:
        provision("lab", nodes=2)
    assert "AllocationFailed" in refused.value.message
    assert _by_name(arm_env, VM) == {}  # no VM of a lab that cannot have all its nodes is left running
    destroy("lab")
    assert arm_env.resource_ids() == [] and arm_env.group_names() == []


def test_a_new_worker_of_an_existing_lab_without_room_keeps_the_others(arm_env: FakeArm) -> None:  # noqa: F811
    provision("lab", nodes=2)
    arm_env.fail_allocation(vm="lab-vm2")
    with pytest.raises(LabctlError, match=r"node 2 .*other nodes are kept") as refused:
        provision("lab", nodes=3)
    assert not isinstance(refused.value, NoCapacity)  # no fall-back that would remake the nodes that run
    assert "labctl up --name lab --nodes 3" in (refused.value.hint or "")
    assert sorted(_by_name(arm_env, VM)) == ["lab-vm", "lab-vm1"]
    provision("lab", nodes=3)
    assert sorted(_by_name(arm_env, VM)) == ["lab-vm", "lab-vm1", "lab-vm2"]
    destroy("lab")
    assert arm_env.resource_ids() == []


def test_a_new_worker_is_built_as_node_0_was(arm_env: FakeArm, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("LABCTL_ACCEPT_IMAGE_TERMS", "1")
    plan = {"publisher": "microsoft-dsvm", "product": "ubuntu-2204", "name": "2204-gen2"}
    arm_env.image_plans[("microsoft-dsvm", "ubuntu-2204", "2204-gen2")] = plan
    arm_env.regions["eastus"].limits.update(standardndasv4_a100family=192, cores=192)
    provision("lab", gpu=True, sizes=["Standard_ND96asr_v4"])  # a size without Trusted Launch
    provision("lab", gpu=True, sizes=["Standard_ND96asr_v4"], nodes=2)
    vms = _by_name(arm_env, VM)
    assert vms["lab-vm1"]["plan"] == plan
    assert vms["lab-vm1"]["properties"]["securityProfile"] == {"securityType": "Standard"}


def test_quota_is_counted_for_every_node_before_anything_is_made(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.regions["eastus"].limits["cores"] = 10  # room for two Standard_D4s_v5 (4 vCPUs each), not three
    with pytest.raises(LabctlError, match=r"3 nodes of Standard_D4s_v5 .*12 needed") as refused:
        provision("lab", nodes=3)
    assert "--nodes 2" in (refused.value.hint or "")
    assert arm_env.group_names() == [] and arm_env.count("PUT", "virtualmachines") == 0
    provision("lab", nodes=2)
    assert len(_by_name(arm_env, VM)) == 2


def test_the_plan_shows_every_node_and_their_price(arm_env: FakeArm) -> None:  # noqa: F811
    outcome = AzureTarget().plan(LabSpec(name="lab", nodes=3, allow_ip="198.51.100.23").validate())
    data, text = outcome.data, outcome.text
    assert data["nodes"] == 3 and data["usd_per_hour"] == pytest.approx(3 * 0.192)
    names = [row["name"] for row in data["resources"]]
    assert "lab-ppg" in names and any(n.startswith("lab-vm2 ") for n in names)
    assert sum(row["type"] == "Microsoft.Network/publicIPAddresses" for row in data["resources"]) == 2
    assert "lab-nat (the subnet's way out)" in names
    assert "3 VMs of that size, ~$0.58/h together (3 x $0.19/h)" in text
    assert "for 3 disks, two IPs and the NAT gateway" in text
    assert "the rendezvous on node 0's private address" in text
    assert arm_env.group_names() == []


def test_stop_and_start_act_on_every_node(arm_env: FakeArm) -> None:  # noqa: F811
    record = provision("lab", nodes=3)
    target = AzureTarget()
    facts = target.power_off(record, PlainReporter(io.StringIO()))
    assert {arm_env.power[i.lower()] for i in arm_env.resource_ids(VM)} == {"deallocated"}
    assert [n["power_state"] for n in facts["nodes"]] == ["deallocated"] * 3
    facts = target.power_on(record, PlainReporter(io.StringIO()))
    assert {arm_env.power[i.lower()] for i in arm_env.resource_ids(VM)} == {"running"}
    assert [(n["node"], n["name"], n["private_ip"]) for n in facts["nodes"]] == [
        (0, "lab-vm", "10.42.0.4"),
        (1, "lab-vm1", record.nodes[1].host),
        (2, "lab-vm2", record.nodes[2].host),
    ]
    assert facts["usd_per_hour"] == pytest.approx(3 * 0.192)


def test_node_0_idle_agent_deallocates_every_node_with_its_own_identity(
    arm_env: FakeArm,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util
    import sys
    from pathlib import Path

    record = provision("lab", nodes=3, idle_stop=60.0, allow_ip="203.0.113.7/32")
    vms = {res["name"]: rid for rid in arm_env.resource_ids(VM) if (res := arm_env.get(rid))}
    head = arm_env.vm_principal(vms["lab-vm"])
    workers = {vms[n]: arm_env.vm_principal(vms[n]) for n in ("lab-vm1", "lab-vm2")}  # each its own, for node 0 gone
    assert head and all(workers.values()) and len({head, *workers.values()}) == 3
    assigned = [a["properties"] for a in arm_env.role_assignments.values()]
    # node 0's identity on every VM, each worker's on itself alone
    expected = [(vm, head) for vm in vms.values()] + list(workers.items())
    assert sorted((a["scope"], a["principalId"]) for a in assigned) == sorted(expected)
    assert len({a["roleDefinitionId"] for a in assigned}) == 1

    extras = AzureTarget().idle_agent(record)
    assert extras["node_vms"] == [vms["lab-vm1"], vms["lab-vm2"]]
    spec = importlib.util.spec_from_file_location("idle_agent", Path(__file__).parents[2] / "templates/idle_agent.py")
    assert spec and spec.loader
    agent = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "idle_agent", agent)  # its dataclasses look their module up there
    spec.loader.exec_module(agent)
    arm_env.imds_vm = vms["lab-vm"]  # the agent runs on node 0, with node 0's identity
    config = agent.Config(
        mode="azure",
        imds_url=arm_env.url,
        arm_url=arm_env.url,
        ca_file=str(arm_env.ca_path),
        node_vms=extras["node_vms"],
    )
    ok, message = agent.deallocate(config)
    assert ok, message
    assert "2 of 2 other nodes deallocated too" in message
    arm_env.settle()
    assert {arm_env.power[v.lower()] for v in vms.values()} == {"deallocated"}

    destroy("lab")
    assert arm_env.role_assignments == {} and arm_env.role_definitions == {}
