"""Create (or converge) an Azure lab: resource group, network, VM, auto-shutdown, in as few round trips as allowed.

Independent resources go up together (VNet, NSG and public IP; the critical path is RG -> network -> NIC -> VM
-> schedule). Every PUT is idempotent, so a second `up` after a crash or Ctrl-C converges on what exists; the
record is saved after each step so `down` can always remove a half-made lab.
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import json
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from labctl.catalog import lookup
from labctl.errors import LabctlError
from labctl.hostkeys import normalize
from labctl.imageref import check_image_ref
from labctl.keys import ensure_user_key, generate_ed25519
from labctl.spec import LabSpec
from labctl.state import LabRecord, SaveFn, now_iso
from labctl.targets.azure import settings
from labctl.targets.azure.access import breadth_warning, check_rules, discover_public_ip, ssh_rule
from labctl.targets.azure.clients import Azure, arm, arm_error_code, connect, explain
from labctl.targets.azure.plan import AzurePlan, LabNames, make_plan, tags_for
from labctl.targets.azure.preflight import Choice, RegionFacts, choose, latest_image
from labctl.targets.azure.record import azure_data
from labctl.ui import Reporter

CAPACITY_CODES = {"AllocationFailed", "ZonalAllocationFailed", "OverconstrainedAllocationRequest", "SkuNotAvailable"}


def creator() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"[:250]


# Starts pulling the lab's base image while labctl waits for SSH; the bootstrap reuses whatever arrived. The
# image is the script's "$1", an argument of its own: it is never part of the script's text.
PREPULL_SCRIPT = '(command -v docker >/dev/null && nohup docker pull "$1" >/var/log/labctl-prepull.log 2>&1 &) || true'


def render_cloud_init(host_private_key: str, host_public_key: str, lab: str, image: str) -> str:
    """The VM's cloud-config, built as data and dumped as YAML: no value is ever spliced into its text.

    The SSH host key was generated on the user's computer; labctl pins its public half, so the very first
    connection is verified. cloud-init installs it and must generate no others.
    """
    import yaml

    check_image_ref(image, "The base image")
    config = {
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {"ed25519_private": host_private_key.strip() + "\n", "ed25519_public": host_public_key},
        "write_files": [
            {
                "path": "/etc/labctl/lab.json",
                "permissions": "0644",
                "content": json.dumps({"lab": lab, "created_by": "labctl"}),
            }
        ],
        # A list runs as an argv: cloud-init quotes every item, so the image stays one argument.
        "runcmd": [["sh", "-c", PREPULL_SCRIPT, "labctl-prepull", image]],
    }
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def _ids(azure: Azure, names: LabNames) -> dict[str, str]:
    rg = f"/subscriptions/{azure.subscription_id}/resourceGroups/{names.resource_group}/providers"
    return {
        "subnet": f"{rg}/Microsoft.Network/virtualNetworks/{names.vnet}/subnets/{names.subnet}",
        "nsg": f"{rg}/Microsoft.Network/networkSecurityGroups/{names.nsg}",
        "pip": f"{rg}/Microsoft.Network/publicIPAddresses/{names.public_ip}",
        "nic": f"{rg}/Microsoft.Network/networkInterfaces/{names.nic}",
        "vm": f"{rg}/Microsoft.Compute/virtualMachines/{names.vm}",
        "schedule": f"{rg}/Microsoft.DevTestLab/schedules/{names.schedule}",
    }


def get_or_none(call: Callable[[], Any]) -> dict[str, Any] | None:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        result = call()
    except ResourceNotFoundError:
        return None
    return dict(result.as_dict()) if hasattr(result, "as_dict") else dict(result)


def wait_rg_gone(azure: Azure, rg: str, timeout: float = 1800) -> None:
    """Wait out a deletion of the resource group that is already under way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with arm(f"waiting for resource group {rg} to be deleted"):
            if get_or_none(lambda: azure.resources.resource_groups.get(rg)) is None:
                return
        time.sleep(max(settings.poll_interval(), 0.01))
    raise LabctlError(f"The resource group {rg} is still being deleted.", hint="Wait a few minutes and try again.")


class Provisioner:
    """One `up` of one Azure lab."""

    def __init__(self, spec: LabSpec, record: LabRecord, ui: Reporter, save: SaveFn, azure: Azure | None = None):
        self.spec = spec
        self.record = record
        self.ui = ui
        self.save = save
        self.azure = azure
        self.plan: AzurePlan = make_plan(spec, discover_ip=False)  # asked below, while logging in
        self.names = self.plan.names

    # ------------------------------------------------------------------ steps

    def run(self) -> LabRecord:
        plan, names, record = self.plan, self.names, self.record
        with ThreadPoolExecutor(1) as pool:
            address = None if self.spec.allow_ip else pool.submit(discover_public_ip)
            with self.ui.step("Logging in to Azure"):
                azure = self.azure or connect(self.spec.subscription or azure_data(record).get("subscription"))
            if address is not None:
                plan.source = address.result()
        if wide := breadth_warning(plan.source):  # `up` shows no plan, so say it here too
            self.ui.warn(wide)
        self.azure = azure
        azure.warm()
        td = azure_data(record)
        ids = _ids(azure, names)
        rg_name = names.resource_group

        with arm(f"reading the resource group {rg_name}"):
            rg = get_or_none(lambda: azure.resources.resource_groups.get(rg_name))
        if rg and (rg.get("properties") or {}).get("provisioningState") == "Deleting":
            with self.ui.step(f"Waiting for the earlier deletion of {rg_name} to finish"):
                wait_rg_gone(azure, rg_name)
            rg = None
        vm: dict[str, Any] | None = None
        if rg is not None:
            existing_region = str(rg["location"]).lower()
            if not plan.auto_region and plan.regions[0] != existing_region and self.spec.region:
                raise LabctlError(
                    f"Lab '{names.lab}' already exists in {existing_region}, not {plan.regions[0]}.",
                    hint=f"Run 'labctl up' with --region {existing_region}, or 'labctl down' the lab first.",
                )
            plan.regions = [existing_region]
            with arm("reading the lab's VM"):
                vm = get_or_none(lambda: azure.compute.virtual_machines.get(rg_name, names.vm))
            vm = self._settle_vm(vm)

        tried: set[tuple[str, str]] = set()
        cache: dict[str, RegionFacts] = {}
        built_region: str | None = None
        while True:
            if vm is not None:
                size_name = vm["properties"]["hardwareProfile"]["vmSize"]
                region = str(vm["location"]).lower()
                version, purchase = td.get("image_version") or "", None
                choice = Choice(region, lookup(size_name), version, purchase)
            else:
                with self.ui.step("Checking size availability, vCPU quota and the image"):
                    choice = self._choose(tried, cache)
            if built_region and built_region != choice.region:
                moving = f"Removing the network built in {built_region} before moving to {choice.region}"
                with self.ui.step(moving), arm(f"deleting the resource group {rg_name}"):
                    azure.resources.resource_groups.begin_delete(rg_name).result()
            built_region = choice.region
            try:
                self._build(choice, ids, vm)
                break
            except _Capacity as exc:
                tried.add((choice.region, choice.size.name))
                vm = None
                if not self._has_next(tried):
                    raise exc.error from None
                self.ui.warn(f"{exc.error.message} Trying the next choice.")

        self._fill_record(choice, ids)
        return self.record

    def _has_next(self, tried: set[tuple[str, str]]) -> bool:
        return any((r, s.name) not in tried for r in self.plan.regions for s in self.plan.sizes)

    def _choose(self, tried: set[tuple[str, str]], cache: dict[str, RegionFacts]) -> Choice:
        assert self.azure is not None
        saved_sizes, saved_regions = self.plan.sizes, self.plan.regions
        last: LabctlError | None = None
        for region in saved_regions:
            sizes = [s for s in saved_sizes if (region, s.name) not in tried]
            if not sizes:
                continue
            self.plan.sizes, self.plan.regions = sizes, [region]
            try:
                return choose(self.azure, self.plan, cache)
            except LabctlError as exc:
                last = last or exc
            finally:
                self.plan.sizes, self.plan.regions = saved_sizes, saved_regions
        assert last is not None
        raise last

    def _settle_vm(self, vm: dict[str, Any] | None) -> dict[str, Any] | None:
        """Wait out a VM create already under way; remove a VM whose creation failed."""
        assert self.azure is not None
        azure, rg, name = self.azure, self.names.resource_group, self.names.vm
        while vm is not None and vm["properties"].get("provisioningState") in ("Creating", "Updating"):
            time.sleep(max(settings.poll_interval(), 0.01))
            with arm("waiting for the lab's VM"):
                vm = get_or_none(lambda: azure.compute.virtual_machines.get(rg, name))
        if vm is not None and vm["properties"].get("provisioningState") in ("Failed", "Canceled", "Deleting"):
            with self.ui.step(f"Removing the VM {name} whose creation failed"), arm("deleting a failed VM"):
                azure.compute.virtual_machines.begin_delete(rg, name).result()
            return None
        if vm is not None and not self.record.host_key:
            raise LabctlError(
                f"Lab '{self.names.lab}' exists in Azure but this computer has lost its pinned host key.",
                hint=f"Delete it with 'labctl down --name {self.names.lab}' and create it again with 'labctl up'.",
            )
        return vm

    def _build(self, choice: Choice, ids: dict[str, str], vm: dict[str, Any] | None) -> None:
        assert self.azure is not None
        azure, names, plan, record = self.azure, self.names, self.plan, self.record
        rg = names.resource_group
        region = choice.region
        td = azure_data(record)
        created_at = str(td.get("created_at") or now_iso())
        tags = tags_for(names.lab, creator(), created_at)
        td.update(
            {
                "subscription": azure.subscription_id,
                "resource_group": rg,  # recorded before it exists: from here on `down` has something to remove
                "vm_name": names.vm,
                "region": region,
                "size": choice.size.name,
                "created_at": created_at,
                "spot": plan.spot,
            }
        )
        self.save(record)

        with self.ui.step(f"Resource group {rg} in {region}"), arm(f"creating the resource group {rg}"):
            azure.resources.resource_groups.create_or_update(rg, {"location": region, "tags": tags})
        self.save(record)

        def vnet() -> None:
            body = {
                "location": region,
                "tags": tags,
                "properties": {
                    "addressSpace": {"addressPrefixes": ["10.42.0.0/16"]},
                    "subnets": [{"name": names.subnet, "properties": {"addressPrefix": "10.42.0.0/24"}}],
                },
            }
            with arm("creating the virtual network"):
                azure.network.virtual_networks.begin_create_or_update(rg, names.vnet, body).result()

        def nsg() -> None:
            body = {"location": region, "tags": tags, "properties": {"securityRules": [ssh_rule(plan.source)]}}
            with arm("creating the network security group"):
                result = azure.network.network_security_groups.begin_create_or_update(rg, names.nsg, body).result()
            check_rules(result.as_dict().get("properties", {}).get("securityRules") or [], plan.source)

        def pip() -> None:
            body = {
                "location": region,
                "tags": tags,
                "sku": {"name": "Standard", "tier": "Regional"},
                "properties": {"publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4"},
            }
            with arm("creating the public IP address"):
                azure.network.public_ip_addresses.begin_create_or_update(rg, names.public_ip, body).result()

        with self.ui.step(f"Network: {names.vnet}, {names.nsg} (SSH from {plan.source} only), {names.public_ip}"):
            self._parallel([vnet, nsg, pip])
        td["allow_ip"] = plan.source
        self.save(record)

        nic_body = {
            "location": region,
            "tags": tags,
            "properties": {
                "networkSecurityGroup": {"id": ids["nsg"]},
                "ipConfigurations": [
                    {
                        "name": "ipconfig1",
                        "properties": {
                            "subnet": {"id": ids["subnet"]},
                            "publicIPAddress": {"id": ids["pip"]},
                            "privateIPAllocationMethod": "Dynamic",
                        },
                    }
                ],
            },
        }
        with self.ui.step(f"Network interface {names.nic}"), arm("creating the network interface"):
            azure.network.network_interfaces.begin_create_or_update(rg, names.nic, nic_body).result()
        self.save(record)

        if vm is None:
            self._create_vm(choice, ids, tags)
        else:
            self.ui.info(f"VM {names.vm} exists ({choice.size.name}); keeping it.")
            asked = [s.name for s in plan.sizes]
            if self.spec.sizes and choice.size.name not in asked:
                self.ui.warn(
                    f"The lab's VM is a {choice.size.name}, not {' or '.join(asked)}; labctl does not resize. "
                    f"'labctl down --name {names.lab}' and 'up' again to change it."
                )

        if plan.shutdown_at:
            body = {
                "location": region,
                "tags": tags,
                "properties": {
                    "status": "Enabled",
                    "taskType": "ComputeVmShutdownTask",
                    "dailyRecurrence": {"time": plan.shutdown_hhmm},
                    "timeZoneId": plan.shutdown_tz,
                    "notificationSettings": {"status": "Disabled", "timeInMinutes": 30},
                    "targetResourceId": ids["vm"],
                },
            }
            label = f"Auto-shutdown daily at {plan.shutdown_at} ({plan.shutdown_tz})"
            with self.ui.step(label), arm("creating the auto-shutdown schedule"):
                azure.resources.resources.begin_create_or_update_by_id(
                    ids["schedule"], body, api_version=settings.SCHEDULE_API_VERSION
                ).result()
        else:
            from azure.core.exceptions import ResourceNotFoundError

            with arm("removing the auto-shutdown schedule"), contextlib.suppress(ResourceNotFoundError):
                azure.resources.resources.begin_delete_by_id(
                    ids["schedule"], api_version=settings.SCHEDULE_API_VERSION
                ).result()
        td.update({"shutdown_at": plan.shutdown_at, "shutdown_time_zone": plan.shutdown_tz})
        self.save(record)

    def _create_vm(self, choice: Choice, ids: dict[str, str], tags: dict[str, str]) -> None:
        assert self.azure is not None
        azure, names, plan, record, spec = self.azure, self.names, self.plan, self.record, self.spec
        rg = names.resource_group
        if not choice.image_version:
            choice.image_version, choice.purchase_plan = latest_image(azure, choice.region, plan.image)
        key_path, user_pub = ensure_user_key(names.lab, spec.ssh_key)
        host = generate_ed25519(f"labctl-{names.lab}-host")
        record.host_key = normalize(host.public_line)
        record.ssh_key_path = str(key_path)
        record.user = settings.admin_user()
        azure_data(record)["image_version"] = choice.image_version
        self.save(record)  # the pin is known before the VM exists: a crash from here on still verifies it

        cloud_init = render_cloud_init(host.private_openssh, record.host_key, names.lab, settings.base_image())
        publisher, offer, sku, _ = plan.image.split(":")
        properties: dict[str, Any] = {
            "hardwareProfile": {"vmSize": choice.size.name},
            "storageProfile": {
                "imageReference": {
                    "publisher": publisher,
                    "offer": offer,
                    "sku": sku,
                    "version": choice.image_version,
                },
                "osDisk": {
                    "name": f"{names.vm}-osdisk",
                    "createOption": "FromImage",
                    "deleteOption": "Delete",
                    "managedDisk": {"storageAccountType": "Premium_LRS"},
                },
            },
            "osProfile": {
                "computerName": names.vm,
                "adminUsername": settings.admin_user(),
                "customData": base64.b64encode(cloud_init.encode()).decode(),
                "linuxConfiguration": {
                    "disablePasswordAuthentication": True,
                    "ssh": {
                        "publicKeys": [
                            {"path": f"/home/{settings.admin_user()}/.ssh/authorized_keys", "keyData": user_pub}
                        ]
                    },
                },
            },
            "networkProfile": {
                "networkInterfaces": [{"id": ids["nic"], "properties": {"primary": True, "deleteOption": "Delete"}}]
            },
        }
        if plan.spot:
            properties.update(priority="Spot", evictionPolicy="Deallocate", billingProfile={"maxPrice": -1})
        body: dict[str, Any] = {"location": choice.region, "tags": tags, "properties": properties}
        if choice.purchase_plan:
            body["plan"] = choice.purchase_plan
        price = choice.size.hourly(plan.spot)
        label = f"VM {names.vm}: {choice.size.describe()}" + (f", Spot ~${price:.2f}/h" if plan.spot else "")
        from azure.core.exceptions import AzureError, HttpResponseError

        with self.ui.step(label):
            try:
                azure.compute.virtual_machines.begin_create_or_update(rg, names.vm, body).result()
            except HttpResponseError as exc:
                code = arm_error_code(exc)
                error = explain(exc, f"creating the VM ({choice.size.name} in {choice.region})")
                if code in CAPACITY_CODES:
                    self._remove_failed_vm()
                    raise _Capacity(error) from exc
                raise error from exc
            except AzureError as exc:
                raise explain(exc, f"creating the VM ({choice.size.name} in {choice.region})") from exc
        self.save(record)

    def _remove_failed_vm(self) -> None:
        assert self.azure is not None
        azure, rg, name = self.azure, self.names.resource_group, self.names.vm
        with arm("removing the VM that could not be allocated"):
            if get_or_none(lambda: azure.compute.virtual_machines.get(rg, name)) is not None:
                azure.compute.virtual_machines.begin_delete(rg, name).result()

    def _parallel(self, steps: list[Callable[[], None]]) -> None:
        with ThreadPoolExecutor(len(steps)) as pool:
            futures = [pool.submit(step) for step in steps]
            errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error

    def _fill_record(self, choice: Choice, ids: dict[str, str]) -> None:
        assert self.azure is not None
        azure, names, record = self.azure, self.names, self.record
        with arm("reading the lab's public IP address"):
            pip = azure.network.public_ip_addresses.get(names.resource_group, names.public_ip).as_dict()
        address = (pip.get("properties") or {}).get("ipAddress")
        if not address:
            raise LabctlError("Azure gave the lab no public IP address.", hint="Run 'labctl up' again to converge.")
        record.host = str(address)
        record.port = settings.ssh_port()
        record.user = settings.admin_user()
        record.gpu = choice.size.gpu
        if not record.ssh_key_path:
            key_path, _ = ensure_user_key(names.lab, self.spec.ssh_key)
            record.ssh_key_path = str(key_path)
        td = azure_data(record)
        td.update(
            {
                "region": choice.region,
                "size": choice.size.name,
                "usd_per_hour": choice.size.hourly(self.plan.spot),
                "spot": self.plan.spot,
                "image": self.plan.image,
                "vm_id": ids["vm"],
                "started_at": td.get("started_at") or now_iso(),
            }
        )
        self.save(record)


class _Capacity(Exception):
    def __init__(self, error: LabctlError) -> None:
        super().__init__(error.message)
        self.error = error
