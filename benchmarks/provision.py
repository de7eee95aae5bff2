"""How fast `up` provisions an Azure lab, measured against the fake ARM with realistic (scaled) latencies.

Three numbers, one run each:
  * labctl: AzureTarget.provision, through the real credential chain and azure-mgmt clients;
  * lower bound: the sum of latencies along the dependency chain
    max(login, IP echo) -> max(SKUs, usages, image list + get) -> RG -> max(VNet, NSG, IP) -> NIC -> VM -> schedule;
  * one at a time: the same calls made in sequence with the same clients, the way a first script does it.

Usage: python benchmarks/provision.py [--scale 0.05]   (run from the repository root)
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakearm import FakeArm
from tests.fakearm.fixtures import fast_env

# Typical seconds for each call in a US region (sync calls: the request itself; LROs: until Succeeded).
REAL = {
    "token": 0.3,
    "ip_echo": 0.3,
    "skus": 2.0,
    "usages": 0.5,
    "image_list": 0.5,
    "image_get": 0.3,
    "resource_group": 1.0,
    "vnet": 4.0,
    "nsg": 3.0,
    "public_ip": 3.0,
    "nic": 2.0,
    "vm": 90.0,
    "schedule": 1.5,
}


def configure(fake: FakeArm, scale: float) -> dict[str, float]:
    lat = {k: v * scale for k, v in REAL.items()}
    fake.request_latency.update(
        {
            "POST /oauth2/v2.0/token$": lat["token"],
            "GET ^/ip$": lat["ip_echo"],
            "GET microsoft.compute/skus$": lat["skus"],
            "GET /usages$": lat["usages"],
            "GET /versions$": lat["image_list"],
            "GET /versions/[^/]+$": lat["image_get"],
            "PUT /resourcegroups/[^/]+$": lat["resource_group"],
        }
    )
    fake.latency.update(
        virtualnetworks=lat["vnet"],
        networksecuritygroups=lat["nsg"],
        publicipaddresses=lat["public_ip"],
        networkinterfaces=lat["nic"],
        virtualmachines=lat["vm"],
        schedules=lat["schedule"],
    )
    return lat


def lower_bound(lat: dict[str, float]) -> float:
    return (
        max(lat["token"], lat["ip_echo"])
        + max(lat["skus"], lat["usages"], lat["image_list"] + lat["image_get"])
        + lat["resource_group"]
        + max(lat["vnet"], lat["nsg"], lat["public_ip"])
        + lat["nic"]
        + lat["vm"]
        + lat["schedule"]
    )


def run_labctl(name: str) -> float:
    from labctl.spec import LabSpec
    from labctl.state import LabRecord, StateStore
    from labctl.targets.azure import AzureTarget
    from labctl.ui import PlainReporter

    spec = LabSpec(name=name).validate()
    store = StateStore()
    record = LabRecord(name=name, target="azure")
    start = time.perf_counter()
    stream = sys.stdout if os.environ.get("BENCH_VERBOSE") else io.StringIO()
    AzureTarget().provision(spec, record, PlainReporter(stream), store.save)
    return time.perf_counter() - start


def run_one_at_a_time(name: str) -> float:
    """The same resources, each call awaited before the next one starts."""
    import base64
    import urllib.request

    from labctl.keys import ensure_user_key, generate_ed25519
    from labctl.targets.azure import settings
    from labctl.targets.azure.clients import Azure, make_credential
    from labctl.targets.azure.plan import ssh_rule

    start = time.perf_counter()
    endpoint = settings.arm_endpoint()
    credential = make_credential()
    credential.get_token(f"{endpoint}/.default")
    with urllib.request.urlopen(settings.ip_echo_url()) as response:
        source = response.read().decode().strip() + "/32"
    azure = Azure(credential, os.environ["AZURE_SUBSCRIPTION_ID"], endpoint)
    compute, network, resources = azure.compute, azure.network, azure.resources
    region, size, rg = "eastus", "Standard_D4s_v5", f"labctl-{name}"
    list(compute.resource_skus.list(filter=f"location eq '{region}'"))
    list(compute.usage.list(region))
    version = next(iter(compute.virtual_machine_images.list(region, *settings.IMAGE_URN.split(":")[:3], top=1)))
    compute.virtual_machine_images.get(region, *settings.IMAGE_URN.split(":")[:3], version.as_dict()["name"])
    tags = {"labctl-lab": name, "created-by": "labctl"}
    resources.resource_groups.create_or_update(rg, {"location": region, "tags": tags})
    sub = f"/subscriptions/{azure.subscription_id}/resourceGroups/{rg}/providers"
    vnet_body = {
        "location": region,
        "properties": {
            "addressSpace": {"addressPrefixes": ["10.42.0.0/16"]},
            "subnets": [{"name": "default", "properties": {"addressPrefix": "10.42.0.0/24"}}],
        },
    }
    network.virtual_networks.begin_create_or_update(rg, "vnet", vnet_body).result()
    network.network_security_groups.begin_create_or_update(
        rg, "nsg", {"location": region, "properties": {"securityRules": [ssh_rule(source)]}}
    ).result()
    network.public_ip_addresses.begin_create_or_update(
        rg,
        "ip",
        {"location": region, "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Static"}},
    ).result()
    nic_body = {
        "location": region,
        "properties": {
            "networkSecurityGroup": {"id": f"{sub}/Microsoft.Network/networkSecurityGroups/nsg"},
            "ipConfigurations": [
                {
                    "name": "ipconfig1",
                    "properties": {
                        "subnet": {"id": f"{sub}/Microsoft.Network/virtualNetworks/vnet/subnets/default"},
                        "publicIPAddress": {"id": f"{sub}/Microsoft.Network/publicIPAddresses/ip"},
                    },
                }
            ],
        },
    }
    network.network_interfaces.begin_create_or_update(rg, "nic", nic_body).result()
    _, user_pub = ensure_user_key(name, None)
    host = generate_ed25519()
    publisher, offer, sku, _ = settings.IMAGE_URN.split(":")
    vm_body = {
        "location": region,
        "properties": {
            "hardwareProfile": {"vmSize": size},
            "storageProfile": {
                "imageReference": {"publisher": publisher, "offer": offer, "sku": sku, "version": "latest"},
                "osDisk": {"createOption": "FromImage", "deleteOption": "Delete"},
            },
            "osProfile": {
                "computerName": "vm",
                "adminUsername": "azureuser",
                "customData": base64.b64encode(host.private_openssh.encode()).decode(),
                "linuxConfiguration": {
                    "disablePasswordAuthentication": True,
                    "ssh": {"publicKeys": [{"path": "/home/azureuser/.ssh/authorized_keys", "keyData": user_pub}]},
                },
            },
            "networkProfile": {"networkInterfaces": [{"id": f"{sub}/Microsoft.Network/networkInterfaces/nic"}]},
        },
    }
    compute.virtual_machines.begin_create_or_update(rg, "vm", vm_body).result()
    schedule = {
        "location": region,
        "properties": {
            "status": "Enabled",
            "taskType": "ComputeVmShutdownTask",
            "dailyRecurrence": {"time": "1900"},
            "timeZoneId": "UTC",
            "targetResourceId": f"{sub}/Microsoft.Compute/virtualMachines/vm",
        },
    }
    resources.resources.begin_create_or_update_by_id(
        f"{sub}/Microsoft.DevTestLab/schedules/shutdown-computevm-vm", schedule, api_version="2018-09-15"
    ).result()
    network.public_ip_addresses.get(rg, "ip")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.05, help="fraction of the real latencies (default 0.05)")
    parser.add_argument("--poll", type=float, default=0.02, help="LRO polling interval in seconds (default 0.02)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="labctl-bench-"))
    fake = FakeArm(work).start()
    try:
        os.environ.update(fast_env(fake, work))
        os.environ.update(
            LABCTL_STATE_DIR=str(work / "state"),
            LABCTL_POLL_INTERVAL=str(args.poll),
            AZURE_SUBSCRIPTION_ID=fake.subscription,
        )
        # Import the SDK once up front: both contenders would pay it, and it is not network time.
        import azure.mgmt.compute
        import azure.mgmt.network
        import azure.mgmt.resource.resources  # noqa: F401

        lat = configure(fake, args.scale)
        bound = lower_bound(lat)
        labctl = run_labctl("bench")
        baseline = run_one_at_a_time("seq")
        serial = sum(lat.values())
    finally:
        fake.stop()
    print(f"scale {args.scale} of typical Azure latencies, LRO poll interval {args.poll}s, one run each")
    print()
    print("| contender | seconds | vs lower bound |")
    print("|---|---:|---:|")
    print(f"| critical-path lower bound | {bound:.2f} | 1.00 |")
    print(f"| labctl provision | {labctl:.2f} | {labctl / bound:.2f} |")
    print(f"| one at a time (sum of latencies {serial:.2f}) | {baseline:.2f} | {baseline / bound:.2f} |")
    print()
    above = 100 * (labctl / bound - 1)
    print(f"labctl is {baseline / labctl:.2f}x faster than one at a time; {above:.1f}% above the bound.")


if __name__ == "__main__":
    main()
