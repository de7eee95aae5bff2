"""AzureTarget.provision / destroy against the fake ARM, through the real credential chain and SDK clients."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization

from labctl.state import StateStore
from tests.fakearm import FakeArm, VmBoot
from tests.fakearm.fixtures import arm_env, destroy, fake_arm, lab_group, provision  # noqa: F401

pytestmark = pytest.mark.usefixtures("arm_env")


def test_up_creates_a_tagged_lab_reachable_over_ssh_only(arm_env: FakeArm) -> None:  # noqa: F811
    record = provision("lab")
    sub = arm_env.subscription
    assert record.nodes[0].host and record.nodes[0].host.startswith("203.0.113.")
    assert (record.nodes[0].port, record.nodes[0].user, record.gpu) == (22, "azureuser", False)
    assert record.nodes[0].host_key and record.nodes[0].host_key.startswith("ssh-ed25519 AAAA")
    td = record.target_data
    assert td["subscription"] == sub and td["resource_group"] == lab_group(arm_env)
    assert td["region"] == "eastus" and td["size"] == "Standard_D4s_v5" and td["usd_per_hour"] == 0.192
    assert td["shutdown_at"] == "19:00" and td["shutdown_time_zone"] == "W. Europe Standard Time"
    assert td["allow_ip"] == "198.51.100.23/32"  # what the echo service said

    inside = f"/resourcegroups/{lab_group(arm_env).lower()}/"  # the workspace disk is in the owner's group
    ids = [i for i in arm_env.resource_ids() if inside in i.lower()]
    types = sorted(arm_env.get(i)["type"] for i in ids)  # type: ignore[index]
    assert types == sorted(
        [
            "Microsoft.Network/virtualNetworks",
            "Microsoft.Network/networkSecurityGroups",
            "Microsoft.Network/publicIPAddresses",
            "Microsoft.Network/networkInterfaces",
            "Microsoft.Compute/virtualMachines",
            "Microsoft.Compute/disks",
            "Microsoft.DevTestLab/schedules",
        ]
    )
    for rid in ids:
        res = arm_env.get(rid)
        assert res is not None
        if res["type"] == "Microsoft.Compute/disks":
            continue  # made by Azure with the VM, deleted with it
        assert res["tags"]["labctl-lab"] == "lab" and res["tags"]["created-by"] == "labctl"
        assert res["tags"]["labctl-owner"] == arm_env.object_id() and res["tags"]["created-at"]
        assert res["tags"]["labctl-owner-name"] == "lab-tests-a" and "creator" not in res["tags"]
    assert arm_env.groups[lab_group(arm_env)]["tags"]["labctl-lab"] == "lab"

    nsg = next(arm_env.get(i) for i in ids if i.endswith("/lab-nsg"))
    assert nsg is not None
    rules = nsg["properties"]["securityRules"]
    assert len(rules) == 1
    assert rules[0]["properties"]["destinationPortRange"] == "22"
    assert rules[0]["properties"]["sourceAddressPrefix"] == "198.51.100.23/32"
    ports = _port_values([arm_env.get(i) for i in ids])
    assert ports and not [p for p in ports if "8888" in p]  # no resource names Jupyter's port (ids are random)

    vm = next(arm_env.get(i) for i in ids if i.endswith("/lab-vm"))
    assert vm is not None
    props = vm["properties"]
    assert props["storageProfile"]["imageReference"] == {
        "publisher": "microsoft-dsvm",
        "offer": "ubuntu-2204",
        "sku": "2204-gen2",
        "version": "25.03.10",
    }
    assert props["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    assert props["networkProfile"]["networkInterfaces"][0]["properties"]["deleteOption"] == "Delete"
    assert props["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"] is True
    assert "customData" not in props["osProfile"]  # write-only, as in Azure
    pip = next(arm_env.get(i) for i in ids if i.endswith("/lab-ip"))
    assert pip is not None and pip["sku"]["name"] == "Standard"
    assert pip["properties"]["publicIPAllocationMethod"] == "Static"
    schedule = next(arm_env.get(i) for i in ids if "schedules" in i)
    assert schedule is not None
    assert schedule["name"] == "shutdown-computevm-lab-vm"
    assert schedule["properties"]["dailyRecurrence"] == {"time": "1900"}
    assert schedule["properties"]["targetResourceId"].lower() == vm["id"].lower()
    assert StateStore().load("lab").nodes[0].host == record.nodes[0].host


def test_the_vm_boots_with_the_pinned_host_key_and_the_users_key(arm_env: FakeArm) -> None:  # noqa: F811
    boots: list[VmBoot] = []

    def boot(vm: VmBoot) -> str:
        boots.append(vm)
        return "127.0.0.1"

    arm_env.on_vm_created = boot
    record = provision("lab", gpu=True)
    assert record.nodes[0].host == "127.0.0.1" and record.gpu is True
    assert record.target_data["size"] == "Standard_NC4as_T4_v3"
    (vm,) = boots
    assert vm.admin_user == record.nodes[0].user == "azureuser"
    assert vm.host_private_key is not None
    key = serialization.load_ssh_private_key(vm.host_private_key.encode(), password=None)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert public.decode() == record.nodes[0].host_key
    assert record.ssh_key_path is not None
    with open(record.ssh_key_path + ".pub") as handle:
        assert vm.authorized_keys == [handle.read().strip()]
    assert "docker pull" in vm.custom_data


def test_ssh_port_can_be_overridden_for_tunnelled_networks(arm_env: FakeArm, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("LABCTL_SSH_PORT", "2222")
    assert provision("lab").nodes[0].port == 2222


def test_down_deletes_everything_and_forgets_the_generated_key(arm_env: FakeArm) -> None:  # noqa: F811
    record = provision("lab")
    provision("other", allow_ip="203.0.113.50")
    assert record.ssh_key_path
    destroy("lab")
    assert lab_group(arm_env) not in [g.lower() for g in arm_env.group_names()]
    assert not any(f"/resourcegroups/{lab_group(arm_env)}/" in i.lower() for i in arm_env.resource_ids())
    other = f"/resourcegroups/{lab_group(arm_env, 'other')}/"
    assert any(other in i.lower() for i in arm_env.resource_ids())  # side by side
    from pathlib import Path

    assert not Path(record.ssh_key_path).exists()
    destroy("other")
    assert arm_env.resource_ids() == [] and arm_env.group_names() == []


def test_spot_and_no_shutdown(arm_env: FakeArm) -> None:  # noqa: F811
    record = provision("lab", spot=True, no_shutdown=True)
    assert record.target_data["spot"] is True
    assert record.target_data["usd_per_hour"] < 0.192
    assert record.target_data["shutdown_at"] is None
    vm = next(arm_env.get(i) for i in arm_env.resource_ids("virtualMachines"))
    assert vm is not None
    assert vm["properties"]["priority"] == "Spot"
    assert vm["properties"]["evictionPolicy"] == "Deallocate"
    assert vm["properties"]["billingProfile"] == {"maxPrice": -1}
    assert arm_env.resource_ids("schedules") == []


def test_the_users_own_key_is_used_and_kept(arm_env: FakeArm, tmp_path: pytest.TempPathFactory) -> None:  # noqa: F811
    from pathlib import Path

    from labctl.keys import generate_ed25519

    pair = generate_ed25519("me@laptop")
    key = Path(str(tmp_path)) / "id_ed25519"
    key.write_text(pair.private_openssh)
    key.chmod(0o600)
    key.with_name("id_ed25519.pub").write_text(pair.public_line + "\n")
    record = provision("lab", ssh_key=key)
    assert record.ssh_key_path == str(key)
    assert arm_env.vm_boots[0].authorized_keys == [pair.public_line]
    destroy("lab")
    assert key.exists()


def test_marketplace_terms_are_accepted_only_with_consent(arm_env: FakeArm, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from labctl.errors import LabctlError

    plan = {"publisher": "microsoft-dsvm", "product": "ubuntu-2204", "name": "2204-gen2"}
    arm_env.image_plans[("microsoft-dsvm", "ubuntu-2204", "2204-gen2")] = plan
    with pytest.raises(LabctlError) as info:
        provision("lab")
    assert "marketplace terms" in info.value.render() and "az vm image terms accept" in info.value.render()
    assert arm_env.group_names() == []  # nothing created
    monkeypatch.setenv("LABCTL_ACCEPT_IMAGE_TERMS", "1")
    provision("lab")
    vm = next(arm_env.get(i) for i in arm_env.resource_ids("virtualMachines"))
    assert vm is not None and vm["plan"] == plan
    assert arm_env.agreements == {"microsoft-dsvm/ubuntu-2204/2204-gen2": True}


def _inbound_allow_rules(fake: FakeArm) -> list[dict[str, str]]:
    (nsg_id,) = fake.resource_ids("networkSecurityGroups")
    nsg = fake.get(nsg_id)
    assert nsg is not None
    return [r["properties"] for r in nsg["properties"]["securityRules"] if r["properties"]["access"] == "Allow"]


def test_a_rule_added_by_hand_is_removed_by_the_next_up(arm_env: FakeArm) -> None:  # noqa: F811
    provision("lab", allow_ip="203.0.113.7")
    (nsg_id,) = arm_env.resource_ids("networkSecurityGroups")
    nsg = arm_env.get(nsg_id)
    assert nsg is not None
    nsg["properties"]["securityRules"].append(
        {
            "name": "jupyter-for-everyone",
            "properties": {
                "priority": 110,
                "direction": "Inbound",
                "access": "Allow",
                "protocol": "Tcp",
                "sourceAddressPrefix": "*",
                "destinationPortRange": "8888",
            },
        }
    )
    provision("lab", allow_ip="203.0.113.7")
    rules = _inbound_allow_rules(arm_env)
    assert [(r["destinationPortRange"], r["sourceAddressPrefix"]) for r in rules] == [("22", "203.0.113.7/32")]


def test_allow_any_opens_ssh_only(arm_env: FakeArm) -> None:  # noqa: F811
    provision("lab", allow_ip="any")
    rules = _inbound_allow_rules(arm_env)
    assert [(r["destinationPortRange"], r["sourceAddressPrefix"], r["protocol"]) for r in rules] == [("22", "*", "Tcp")]


def test_up_with_a_wide_range_says_so_through_the_reporter(arm_env: FakeArm) -> None:  # noqa: F811
    import io

    from labctl.spec import LabSpec
    from labctl.state import LabRecord
    from labctl.targets.azure import AzureTarget
    from labctl.ui import PlainReporter

    out = io.StringIO()
    store = StateStore()
    record = LabRecord(name="lab", target="azure")
    store.save(record)
    spec = LabSpec(name="lab", allow_ip="198.51.0.0/16").validate()
    AzureTarget().provision(spec, record, PlainReporter(out), store.save)
    assert "warning: SSH is open to 198.51.0.0/16" in out.getvalue()
    rules = _inbound_allow_rules(arm_env)
    assert [r["sourceAddressPrefix"] for r in rules] == ["198.51.0.0/16"]


def _port_values(node: object) -> list[str]:
    """Every value held under a key that names a port ('destinationPortRange', 'frontendPort', ...), as text."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if "port" in key.lower() and not isinstance(value, (dict, list)):
                found.append(str(value))
            elif "port" in key.lower():
                found.append(json.dumps(value))
            found.extend(_port_values(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_port_values(item))
    return found
