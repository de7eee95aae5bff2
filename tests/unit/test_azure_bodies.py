"""The Azure request bodies, built offline from the SDK's typed models: the JSON they put on the wire."""

from __future__ import annotations

import base64

from labctl.targets.azure import bodies
from labctl.targets.azure.plan import LabNames

SUB = "11111111-2222-4333-8444-555555555555"
NAMES = LabNames("lab")
IDS = bodies.Ids(SUB, NAMES)
TAGS = {"labctl-lab": "lab", "created-by": "labctl"}
RG = f"/subscriptions/{SUB}/resourceGroups/labctl-lab/providers"


def test_ids_name_each_resource_of_the_lab() -> None:
    assert IDS.subnet == f"{RG}/Microsoft.Network/virtualNetworks/lab-vnet/subnets/default"
    assert IDS.nic == f"{RG}/Microsoft.Network/networkInterfaces/lab-nic"
    assert IDS.vm == f"{RG}/Microsoft.Compute/virtualMachines/lab-vm"
    assert IDS.schedule == f"{RG}/Microsoft.DevTestLab/schedules/shutdown-computevm-lab-vm"


def test_network_bodies() -> None:
    vnet = bodies.virtual_network("eastus", TAGS, "default").as_dict()
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
    nic = bodies.network_interface("eastus", TAGS, IDS).as_dict()["properties"]
    assert nic["networkSecurityGroup"] == {"id": IDS.nsg}
    assert nic["ipConfigurations"] == [
        {
            "name": "ipconfig1",
            "properties": {
                "subnet": {"id": IDS.subnet},
                "publicIPAddress": {"id": IDS.public_ip},
                "privateIPAllocationMethod": "Dynamic",
            },
        }
    ]


def test_the_security_group_opens_ssh_to_the_caller_only() -> None:
    (rule,) = bodies.security_group("eastus", TAGS, "203.0.113.7/32").as_dict()["properties"]["securityRules"]
    props = rule["properties"]
    assert (props["direction"], props["access"], props["protocol"]) == ("Inbound", "Allow", "Tcp")
    assert (props["sourceAddressPrefix"], props["destinationPortRange"]) == ("203.0.113.7/32", "22")


def _request(**changes: object) -> bodies.VmRequest:
    fields: dict[str, object] = {
        "region": "westus2",
        "size": "Standard_NC4as_T4_v3",
        "image_urn": "microsoft-dsvm:ubuntu-2204:2204-gen2:latest",
        "image_version": "24.01.01",
        "admin_user": "azureuser",
        "user_public_key": "ssh-ed25519 AAAAC3Nza me",
        "cloud_init": "#cloud-config\n",
    }
    fields.update(changes)
    return bodies.VmRequest(**fields)  # type: ignore[arg-type]


def test_the_vm_body() -> None:
    vm = bodies.virtual_machine(_request(), NAMES, IDS, TAGS).as_dict()
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
        "networkInterfaces": [{"id": IDS.nic, "properties": {"primary": True, "deleteOption": "Delete"}}]
    }
    assert not {"priority", "evictionPolicy", "billingProfile"} & set(props)


def test_a_spot_vm_from_a_marketplace_plan() -> None:
    plan = {"name": "2204-gen2", "publisher": "microsoft-dsvm", "product": "ubuntu-2204"}
    vm = bodies.virtual_machine(_request(spot=True, purchase_plan=plan), NAMES, IDS, TAGS).as_dict()
    assert vm["plan"] == plan
    props = vm["properties"]
    assert (props["priority"], props["evictionPolicy"], props["billingProfile"]) == (
        "Spot",
        "Deallocate",
        {"maxPrice": -1},
    )


def test_the_shutdown_schedule() -> None:
    body = bodies.ShutdownSchedule("eastus", TAGS, IDS.vm, "1900", "UTC").body()
    assert body["properties"]["dailyRecurrence"] == {"time": "1900"}
    assert body["properties"]["targetResourceId"] == IDS.vm
    assert body["properties"]["taskType"] == "ComputeVmShutdownTask"


def test_a_worker_has_its_own_names_a_private_nic_and_the_placement_group() -> None:
    assert IDS.vm_of(0) == IDS.vm and IDS.nic_of(0) == IDS.nic and IDS.schedule_of(0) == IDS.schedule
    assert IDS.vm_of(2) == f"{RG}/Microsoft.Compute/virtualMachines/lab-vm2"
    assert IDS.ppg == f"{RG}/Microsoft.Compute/proximityPlacementGroups/lab-ppg"
    nic = bodies.network_interface("eastus", TAGS, IDS, node=2).as_dict()["properties"]
    assert nic["networkSecurityGroup"] == {"id": IDS.nsg}  # the one NSG of the lab
    assert nic["ipConfigurations"][0]["properties"] == {
        "subnet": {"id": IDS.subnet},
        "privateIPAllocationMethod": "Dynamic",
    }  # no public IP: reached through node 0
    vm = bodies.virtual_machine(_request(node=2, placement_group=IDS.ppg), NAMES, IDS, TAGS).as_dict()["properties"]
    assert vm["osProfile"]["computerName"] == "lab-vm2"
    assert vm["storageProfile"]["osDisk"]["name"] == "lab-vm2-osdisk"
    assert vm["networkProfile"]["networkInterfaces"][0]["id"] == IDS.nic_of(2)
    assert vm["proximityPlacementGroup"] == {"id": IDS.ppg}
    assert "proximityPlacementGroup" not in bodies.virtual_machine(_request(), NAMES, IDS, TAGS).as_dict()["properties"]
    ppg = bodies.proximity_placement_group("eastus", TAGS).as_dict()
    assert ppg == {"location": "eastus", "tags": TAGS, "properties": {"proximityPlacementGroupType": "Standard"}}
