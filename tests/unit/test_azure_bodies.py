"""The Azure request bodies, built offline from the SDK's typed models: the JSON they put on the wire."""

from __future__ import annotations

import base64
from typing import Any

from labctl.pricing import lookup
from labctl.targets.azure import bodies
from labctl.targets.azure.plan import AzurePlan, LabNames
from labctl.targets.azure.preflight import Choice

SUB = "11111111-2222-4333-8444-555555555555"
NAMES = LabNames("lab", subscription=SUB)
TAGS = {"labctl-lab": "lab", "created-by": "labctl"}
RG = f"/subscriptions/{SUB}/resourceGroups/labctl-lab/providers"
SUBNET_ID = f"{RG}/Microsoft.Network/virtualNetworks/lab-vnet/subnets/default"


def test_ids_name_each_resource_of_the_lab() -> None:
    assert NAMES.id("nic") == f"{RG}/Microsoft.Network/networkInterfaces/lab-nic"
    assert NAMES.id("vm") == f"{RG}/Microsoft.Compute/virtualMachines/lab-vm"
    assert NAMES.id("schedule") == f"{RG}/Microsoft.DevTestLab/schedules/shutdown-computevm-lab-vm"


def test_network_bodies() -> None:
    vnet = bodies.virtual_network("eastus", TAGS).as_dict()
    assert vnet == {
        "location": "eastus",
        "tags": TAGS,
        "properties": {
            "addressSpace": {"addressPrefixes": ["10.42.0.0/16"]},
            "subnets": [{"name": "default", "properties": {"addressPrefix": "10.42.0.0/24"}}],
        },
    }
    pip = bodies.public_ip("eastus", TAGS).as_dict()
    assert pip["sku"] == {"name": "Standard", "tier": "Regional"}
    assert pip["properties"] == {"publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4"}
    nic = bodies.network_interface("eastus", TAGS, NAMES).as_dict()["properties"]
    assert nic["networkSecurityGroup"] == {"id": NAMES.id("nsg")}
    assert nic["ipConfigurations"] == [
        {
            "name": "ipconfig1",
            "properties": {
                "subnet": {"id": SUBNET_ID},
                "publicIPAddress": {"id": NAMES.id("public_ip")},
                "privateIPAllocationMethod": "Dynamic",
            },
        }
    ]


def test_the_security_group_opens_ssh_to_the_caller_only() -> None:
    (rule,) = bodies.security_group("eastus", TAGS, "203.0.113.7/32").as_dict()["properties"]["securityRules"]
    props = rule["properties"]
    assert (props["direction"], props["access"], props["protocol"]) == ("Inbound", "Allow", "Tcp")
    assert (props["sourceAddressPrefix"], props["destinationPortRange"]) == ("203.0.113.7/32", "22")


def _vm(node: int = 0, spot: bool = False, plan: dict[str, str] | None = None, ppg: str | None = None) -> Any:
    choice = Choice("westus2", lookup("Standard_NC4as_T4_v3"), "24.01.01", purchase_plan=plan)
    lab = AzurePlan(NAMES, [choice.size], ["westus2"], auto_region=False, source="*", shutdown_at=None, spot=spot)
    return bodies.virtual_machine(NAMES, node, TAGS, choice, lab, "ssh-ed25519 AAAAC3Nza me", "#cloud-config\n", ppg)


def test_the_vm_body() -> None:
    vm = _vm().as_dict()
    assert (vm["location"], vm["tags"], "plan" in vm) == ("westus2", TAGS, False)
    props = vm["properties"]
    assert props["hardwareProfile"] == {"vmSize": "Standard_NC4as_T4_v3"}
    assert props["storageProfile"]["imageReference"] == {
        "publisher": "microsoft-dsvm",
        "offer": "ubuntu-2204",
        "sku": "2204-gen2",
        "version": "24.01.01",
    }
    assert props["storageProfile"]["osDisk"] == {
        "name": "lab-vm-osdisk",
        "createOption": "FromImage",
        "deleteOption": "Delete",
        "managedDisk": {"storageAccountType": "Premium_LRS"},
    }
    os_profile = props["osProfile"]
    assert base64.b64decode(os_profile["customData"]).decode() == "#cloud-config\n"
    assert os_profile["linuxConfiguration"] == {
        "disablePasswordAuthentication": True,
        "ssh": {
            "publicKeys": [{"path": "/home/azureuser/.ssh/authorized_keys", "keyData": "ssh-ed25519 AAAAC3Nza me"}]
        },
    }
    assert props["networkProfile"] == {
        "networkInterfaces": [{"id": NAMES.id("nic"), "properties": {"primary": True, "deleteOption": "Delete"}}]
    }
    assert not {"priority", "evictionPolicy", "billingProfile"} & set(props)


def test_a_spot_vm_from_a_marketplace_plan() -> None:
    plan = {"name": "2204-gen2", "publisher": "microsoft-dsvm", "product": "ubuntu-2204"}
    vm = _vm(spot=True, plan=plan).as_dict()
    assert vm["plan"] == plan
    props = vm["properties"]
    assert (props["priority"], props["evictionPolicy"], props["billingProfile"]) == (
        "Spot",
        "Deallocate",
        {"maxPrice": -1},
    )


def test_the_shutdown_schedule() -> None:
    body = bodies.shutdown_schedule("eastus", TAGS, NAMES.id("vm"), "1900", "UTC")
    assert body["properties"]["dailyRecurrence"] == {"time": "1900"}
    assert body["properties"]["targetResourceId"] == NAMES.id("vm")
    assert body["properties"]["taskType"] == "ComputeVmShutdownTask"


def test_a_worker_has_its_own_names_a_private_nic_and_the_placement_group() -> None:
    assert (
        NAMES.id("vm", 0) == NAMES.id("vm")
        and NAMES.id("nic", 0) == NAMES.id("nic")
        and NAMES.id("schedule", 0) == NAMES.id("schedule")
    )
    assert NAMES.id("vm", 2) == f"{RG}/Microsoft.Compute/virtualMachines/lab-vm2"
    assert NAMES.id("ppg") == f"{RG}/Microsoft.Compute/proximityPlacementGroups/lab-ppg"
    nic = bodies.network_interface("eastus", TAGS, NAMES, node=2).as_dict()["properties"]
    assert nic["networkSecurityGroup"] == {"id": NAMES.id("nsg")}  # the one NSG of the lab
    assert nic["ipConfigurations"][0]["properties"] == {
        "subnet": {"id": SUBNET_ID},
        "privateIPAllocationMethod": "Dynamic",
    }  # no public IP: reached through node 0
    vm = _vm(node=2, ppg=NAMES.id("ppg")).as_dict()["properties"]
    assert vm["osProfile"]["computerName"] == "lab-vm2"
    assert vm["storageProfile"]["osDisk"]["name"] == "lab-vm2-osdisk"
    assert vm["networkProfile"]["networkInterfaces"][0]["id"] == NAMES.id("nic", 2)
    assert vm["proximityPlacementGroup"] == {"id": NAMES.id("ppg")}
    assert "proximityPlacementGroup" not in _vm().as_dict()["properties"]
    ppg = bodies.proximity_placement_group("eastus", TAGS).as_dict()
    assert ppg == {"location": "eastus", "tags": TAGS, "properties": {"proximityPlacementGroupType": "Standard"}}
