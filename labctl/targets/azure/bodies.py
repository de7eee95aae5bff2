"""A lab's request bodies as SDK models (``as_dict()`` is the wire JSON), tested offline; only `up` imports it."""

from __future__ import annotations

import base64
from typing import Any

from azure.mgmt.compute import models as c
from azure.mgmt.network import models as n

from labctl.pricing import WORKSPACE_DISK_GB, WORKSPACE_DISK_SKU
from labctl.targets.azure import settings
from labctl.targets.azure.plan import SUBNET, AzurePlan, LabNames, ssh_rule
from labctl.targets.azure.preflight import Choice

VNET_PREFIX = "10.42.0.0/16"
SUBNET_PREFIX = "10.42.0.0/24"


def virtual_network(region: str, tags: dict[str, str], nat_gateway: str | None = None) -> n.VirtualNetwork:
    """The lab's VNet; its subnet is private (no default outbound access), so workers go out through the NAT."""
    way_out = n.SubResource(id=nat_gateway) if nat_gateway else None
    properties = n.SubnetPropertiesFormat(address_prefix=SUBNET_PREFIX, nat_gateway=way_out)
    return n.VirtualNetwork(
        location=region,
        tags=tags,
        properties=n.VirtualNetworkPropertiesFormat(
            address_space=n.AddressSpace(address_prefixes=[VNET_PREFIX]),
            subnets=[n.Subnet(name=SUBNET, properties=properties)],
        ),
    )


def nat_gateway(region: str, tags: dict[str, str], public_ip_id: str) -> n.NatGateway:
    return n.NatGateway(
        location=region,
        tags=tags,
        sku=n.NatGatewaySku(name="Standard"),
        properties=n.NatGatewayPropertiesFormat(public_ip_addresses=[n.SubResource(id=public_ip_id)]),
    )


def security_group(region: str, tags: dict[str, str], source: str) -> n.NetworkSecurityGroup:
    return n.NetworkSecurityGroup(
        location=region,
        tags=tags,
        properties=n.NetworkSecurityGroupPropertiesFormat(security_rules=[n.SecurityRule(ssh_rule(source))]),
    )


def public_ip(region: str, tags: dict[str, str]) -> n.PublicIPAddress:
    return n.PublicIPAddress(
        location=region,
        tags=tags,
        sku=n.PublicIPAddressSku(name="Standard", tier="Regional"),
        properties=n.PublicIPAddressPropertiesFormat(
            public_ip_allocation_method="Static", public_ip_address_version="IPv4"
        ),
    )


def network_interface(
    region: str, tags: dict[str, str], names: LabNames, node: int = 0, accelerated: bool = False
) -> n.NetworkInterface:
    """Only node 0's has the public IP; ``accelerated`` where the size has it, for NCCL between nodes."""
    ip_config = n.NetworkInterfaceIPConfiguration(
        name="ipconfig1",
        properties=n.NetworkInterfaceIPConfigurationPropertiesFormat(
            subnet=n.Subnet(id=f"{names.id('vnet')}/subnets/{SUBNET}"),
            public_ip_address=n.PublicIPAddress(id=names.id("public_ip")) if node == 0 else None,
            private_ip_allocation_method="Dynamic",
        ),
    )
    return n.NetworkInterface(
        location=region,
        tags=tags,
        properties=n.NetworkInterfacePropertiesFormat(
            network_security_group=n.NetworkSecurityGroup(id=names.id("nsg")),
            ip_configurations=[ip_config],
            enable_accelerated_networking=accelerated,
        ),
    )


def proximity_placement_group(region: str, tags: dict[str, str]) -> c.ProximityPlacementGroup:
    """No ``intent``: the size may still change (a fall-back size) before the first VM is in it."""
    return c.ProximityPlacementGroup(
        location=region,
        tags=tags,
        properties=c.ProximityPlacementGroupProperties(proximity_placement_group_type="Standard"),
    )


def virtual_machine(
    names: LabNames,
    node: int,
    tags: dict[str, str],
    choice: Choice,
    plan: AzurePlan,
    user_key: str,
    cloud_init: str,
    placement_group: str | None = None,
    workspace_disk: str | None = None,
) -> c.VirtualMachine:
    publisher, offer, sku, _ = plan.image.split(":")
    admin, trusted = settings.admin_user(), choice.trusted_launch
    login = c.SshPublicKey(path=f"/home/{admin}/.ssh/authorized_keys", key_data=user_key)
    nic = c.NetworkInterfaceReferenceProperties(primary=True, delete_option="Delete")
    # The workspace disk at LUN 0, detached (not deleted) with the VM: `down` decides what becomes of it.
    attached = c.ManagedDiskParameters(id=workspace_disk)
    workspace = c.DataDisk(lun=0, create_option="Attach", delete_option="Detach", managed_disk=attached)
    properties = c.VirtualMachineProperties(
        hardware_profile=c.HardwareProfile(vm_size=choice.size.name),
        storage_profile=c.StorageProfile(
            image_reference=c.ImageReference(publisher=publisher, offer=offer, sku=sku, version=choice.image_version),
            os_disk=c.OSDisk(
                name=names.name("disk", node),
                create_option="FromImage",
                delete_option="Delete",
                managed_disk=c.ManagedDiskParameters(storage_account_type="Premium_LRS"),
            ),
            data_disks=[workspace] if workspace_disk else None,
        ),
        os_profile=c.OSProfile(
            computer_name=names.name("vm", node),
            admin_username=admin,
            custom_data=base64.b64encode(cloud_init.encode()).decode(),
            linux_configuration=c.LinuxConfiguration(
                disable_password_authentication=True, ssh=c.SshConfiguration(public_keys=[login])
            ),
        ),
        network_profile=c.NetworkProfile(
            network_interfaces=[c.NetworkInterfaceReference(id=names.id("nic", node), properties=nic)]
        ),
        # Trusted Launch, which Microsoft recommends for Gen2 images, with the vTPM on but Secure Boot off: the
        # Data Science VM's NVIDIA driver is a DKMS module that Secure Boot would refuse to load. uefiSettings
        # are only valid with TrustedLaunch, so a VM without it is plainly Standard.
        security_profile=c.SecurityProfile(
            security_type="TrustedLaunch" if trusted else "Standard",
            uefi_settings=c.UefiSettings(secure_boot_enabled=False, v_tpm_enabled=True) if trusted else None,
        ),
        proximity_placement_group=c.SubResource(id=placement_group) if placement_group else None,
        priority="Spot" if plan.spot else None,
        eviction_policy="Deallocate" if plan.spot else None,
        billing_profile=c.BillingProfile(max_price=-1) if plan.spot else None,
    )
    purchase = c.Plan(choice.purchase_plan) if choice.purchase_plan else None
    identity = c.VirtualMachineIdentity(type="SystemAssigned") if plan.identity else None
    return c.VirtualMachine(location=choice.region, tags=tags, properties=properties, plan=purchase, identity=identity)


def workspace_disk(region: str, tags: dict[str, str]) -> c.Disk:
    """An empty Standard SSD; the VM makes its filesystem at the first boot that finds none."""
    return c.Disk(
        location=region,
        tags=tags,
        sku=c.DiskSku(name=WORKSPACE_DISK_SKU),
        properties=c.DiskProperties(
            creation_data=c.CreationData(create_option="Empty"), disk_size_gb=WORKSPACE_DISK_GB
        ),
    )


def shutdown_schedule(region: str, tags: dict[str, str], vm_id: str, hhmm: str, time_zone: str) -> dict[str, Any]:
    """Microsoft.DevTestLab, for which no SDK is installed: "1900" daily, in a Windows time zone id."""
    return {
        "location": region,
        "tags": tags,
        "properties": {
            "status": "Enabled",
            "taskType": "ComputeVmShutdownTask",
            "dailyRecurrence": {"time": hhmm},
            "timeZoneId": time_zone,
            "notificationSettings": {"status": "Disabled", "timeInMinutes": 30},
            "targetResourceId": vm_id,
        },
    }
