"""Every PUT idempotent and the record saved after each step: `up` after a crash converges, `down` removes the half."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator
from typing import Any

from labctl.errors import LabctlError, NoCapacity, UsageError
from labctl.keys import KeyPair, ensure_user_key, generate_ed25519, normalize
from labctl.labhost import side_by_side
from labctl.pricing import lookup
from labctl.spec import LabSpec
from labctl.state import LabRecord, NodeRecord, SaveFn, now_iso
from labctl.targets.azure import bodies, settings
from labctl.targets.azure.clients import Azure, arm, connect, dig, finish, get_or_none, poll, wait_rg_gone
from labctl.targets.azure.idlerole import grant, may_grant
from labctl.targets.azure.inventory import note_power, owner_of, private_address, save_power_tag
from labctl.targets.azure.plan import (
    WORKSPACE_DEVICE,
    WORKSPACE_MOUNT,
    AzurePlan,
    LabNames,
    azure_data,
    check_rules,
    discover_public_ip,
    group_and_name,
    make_plan,
    node_count,
    tags_for,
    workspace_disk_id,
)
from labctl.targets.azure.preflight import Choice, RegionFacts, choose, ensure_providers, latest_image
from labctl.targets.base import first_that_fits
from labctl.ui import Reporter
from labctl.validate import check_image_ref

# A filesystem on the workspace disk only where blkid finds none (exit 2): a kept disk attached again keeps its files.
_FORMAT_BLANK = 'udevadm settle; [ -b "$1" ] || exit 0; blkid -p "$1" >/dev/null; [ $? -ne 2 ] || mkfs.ext4 -q "$1"'
# The lab container's volume binds the mounted disk; not mounted, no volume is made (so none writes to the OS disk).
_BIND_VOLUME = (
    'mountpoint -q "$1" && docker volume create --driver local --opt type=none --opt o=bind --opt "device=$1" "$2"'
)


def render_cloud_init(
    host_private_key: str, host_public_key: str, lab: str, image: str, node: int = 0, workspace: bool = False
) -> str:
    """Built as data, nothing spliced; the host key made here is pinned, so cloud-init must generate no others."""
    import yaml

    from labctl.container import deps_tag, volume_name
    from labctl.labhost import cloud_init

    check_image_ref(image, "The base image")
    prewarm_files, prewarm = cloud_init(image, deps_tag(image))
    config = {
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {"ed25519_private": host_private_key.strip() + "\n", "ed25519_public": host_public_key},
        "write_files": [
            {
                "path": "/etc/labctl/lab.json",
                "permissions": "0644",
                "content": json.dumps({"lab": lab, "created_by": "labctl", **({"node": node} if node else {})}),
            },
            *prewarm_files,
        ],
        # A list runs as an argv: cloud-init quotes every item, so the image stays one argument. It starts, in the
        # background, the build of the lab's dependency image (labctl.labhost) while labctl waits for SSH.
        "runcmd": [prewarm],
    }
    if workspace:  # values reach the scripts as arguments ("$1", "$2"), never inside them
        config["bootcmd"] = [["sh", "-c", _FORMAT_BLANK, "sh", WORKSPACE_DEVICE]]
        # nofail orders the mount before no target: Docker must wait for it, or after a stop/start or a resize the
        # lab container binds the empty directory beneath, on the OS disk, which `down --keep-workspace` loses.
        options = "defaults,nofail,x-systemd.before=docker.service"
        config["mounts"] = [[WORKSPACE_DEVICE, WORKSPACE_MOUNT, "ext4", options, "0", "2"]]
        config["runcmd"] = [["sh", "-c", _BIND_VOLUME, "sh", WORKSPACE_MOUNT, volume_name(lab)], prewarm]
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def _state(vm: dict[str, Any] | None) -> str | None:
    return dig(vm, "properties", "provisioningState")


def _workers(nodes: int) -> str:
    return "node 1" if nodes == 2 else f"nodes 1-{nodes - 1}"


def provision(spec: LabSpec, record: LabRecord, ui: Reporter, save: SaveFn, azure: Azure | None) -> LabRecord:
    nodes, has = spec.nodes or node_count(record), node_count(record)  # not asked for: as many as it has
    if nodes < has:  # removing a worker would lose what is on it
        raise UsageError(
            f"Lab '{record.name}' has {has} nodes; 'labctl up' with --nodes {nodes} would have to delete "
            f"{has - nodes} of them, which up never does.",
            hint=f"Run 'labctl up --name {record.name} --nodes {has}' to converge it as it is, or 'labctl down' it "
            f"and 'labctl up --nodes {nodes}' to make it again with fewer.",
        )
    plan = make_plan(spec, discover_ip=False)  # the caller's address is found below, while logging in
    subscription = spec.subscription or azure_data(record).get("subscription")
    with ui.step("Logging in to Azure"):
        found: list[Any] = side_by_side(
            [lambda: azure or connect(subscription), lambda: plan.source if spec.allow_ip else discover_public_ip()]
        )
    client, plan.source = found
    for note in client.notes:
        ui.info(note)
    # `up` shows no plan, so every warning it would have shown is said here (a wide --allow-ip, no auto-shutdown).
    for warning in client.warnings + plan.warnings:
        ui.warn(warning)
    client.warm()
    return Provisioner(spec, record, ui, save, client, plan, nodes).run()


class Provisioner:
    def __init__(
        self, spec: LabSpec, record: LabRecord, ui: Reporter, save: SaveFn, azure: Azure, plan: AzurePlan, nodes: int
    ):
        self.spec, self.record, self.ui, self.save, self.azure, self.plan = spec, record, ui, save, azure, plan
        self.nodes = nodes
        # Labs are per person: a new lab's group carries its owner's id, so a colleague's lab of the same name
        # in the subscription is never touched; a lab already recorded keeps the group it was made in.
        group = azure_data(record).get("resource_group") or f"labctl-{spec.name}-{azure.principal.short}"
        self.names = LabNames(spec.name, group, azure.subscription_id)
        self._vms: dict[int, dict[str, Any]] = {}  # node -> its VM as found or made, kept while it is the choice
        self._built_region: str | None = None
        self._placement: str | None = None  # the placement group the VMs go in (decided in _build)
        self._workspace = workspace_disk_id(azure.subscription_id, azure.principal.short, spec.name)
        self._made_workspace = False  # by this `up`: empty, so it may follow the lab to another region
        self._group_region: str | None = None  # the lab's group's, where it exists

    def run(self) -> LabRecord:
        azure, names, record = self.azure, self.names, self.record
        self.plan.identity = may_grant(azure, self.spec, record, self.ui)
        self._settle_group()
        self._follow_workspace()
        choice = first_that_fits(self._choices(), self._build, self.ui)
        ips, rg = azure.network.public_ip_addresses, names.resource_group
        pip = get_or_none("reading the lab's public IP address", lambda: ips.get(rg, names.name("public_ip")))
        if not (address := dig(pip, "properties", "ipAddress")):
            raise LabctlError("Azure gave the lab no public IP address.", hint="Run 'labctl up' again to converge.")
        record.nodes[0].host = str(address)
        record.gpu = choice.size.gpu
        td = azure_data(record)
        td.update({"image": self.plan.image, "vm_id": names.id("vm"), "started_at": td.get("started_at") or now_iso()})
        save_power_tag(azure, record)
        self.save(record)
        if self.plan.identity:
            found = [str(dig(self._vms.get(node), "identity", "principalId") or "") for node in range(self.nodes)]
            grant(azure, names, found, record, self.ui)
            self.save(record)
        return record

    def _settle_group(self) -> None:
        """Wait out an earlier deletion; a lab that exists keeps its region and its VMs, and is the user's own."""
        azure, plan, names, rg_name = self.azure, self.plan, self.names, self.names.resource_group
        rg = get_or_none(f"reading the resource group {rg_name}", lambda: azure.resources.resource_groups.get(rg_name))
        if _state(rg) == "Deleting":
            with self.ui.step(f"Waiting for the earlier deletion of {rg_name} to finish"):
                wait_rg_gone(azure, rg_name)
            rg = None
        if rg is None:
            return
        owner = owner_of(azure, self.record, rg)
        if owner.name and not owner.mine:
            raise LabctlError(
                f"Lab '{names.lab}' (resource group {rg.get('name') or rg_name}) belongs to {owner.name}, not to "
                f"you ({owner.you}); labctl changes nobody else's lab.",
                hint="Make a lab of your own with another name ('labctl up --name NAME'), or sign in as the owner.",
            )
        existing_region = str(rg["location"]).lower()
        if not plan.auto_region and plan.regions[0] != existing_region and self.spec.region:
            raise LabctlError(
                f"Lab '{names.lab}' already exists in {existing_region}, not {plan.regions[0]}.",
                hint=f"Run 'labctl up' with --region {existing_region}, or 'labctl down' the lab first.",
            )
        plan.regions = [existing_region]
        self._group_region = existing_region
        found = side_by_side([functools.partial(self._settle_vm, node) for node in range(self.nodes)])
        self._vms = {node: vm for node, vm in enumerate(found) if vm is not None}

    def _workspace_disk(self) -> dict[str, Any] | None:
        group, name = group_and_name(self._workspace)
        disks = self.azure.compute.disks
        return get_or_none(f"reading the workspace disk {name}", lambda: disks.get(group, name))

    def _follow_workspace(self) -> None:
        """A workspace kept by `down --keep-workspace` is attached where it is: the lab goes to its region."""
        disk, plan = self._workspace_disk(), self.plan
        if disk is None or 0 in self._vms:
            return
        region, name = str(disk["location"]).lower(), str(disk.get("name"))
        azure_data(self.record)["workspace_kept"] = True  # its files are the user's: `down` never deletes it unseen
        if plan.regions == [region]:
            self.ui.info(f"Lab '{self.names.lab}' gets its kept workspace back: the disk {name}.")
        elif self._group_region is not None:
            raise LabctlError(
                f"Lab '{self.names.lab}' has a workspace disk {name} in {region}, but its network is in "
                f"{self._group_region}; a disk is attached only in its own region.",
                hint=f"'labctl down --name {self.names.lab} --keep-workspace', then 'labctl up --name "
                f"{self.names.lab}' makes the lab again where the disk is.",
            )
        else:
            asked = "--region auto" if plan.auto_region else plan.regions[0]
            self.ui.warn(
                f"Lab '{self.names.lab}' goes to {region}, not {asked}: its kept workspace disk {name} is there, "
                "and a disk is attached only in its own region."
            )
        plan.regions, plan.auto_region = [region], False

    def _settle_workspace(self, region: str) -> None:
        """The workspace disk, in the owner's group, for node 0's new VM; recorded first, so `down` finds it."""
        azure, (group, name) = self.azure, group_and_name(self._workspace)
        azure_data(self.record).update({"workspace_disk": self._workspace, "workspace_region": region})
        self.save(self.record)
        disk = self._workspace_disk()
        if disk is not None and str(disk["location"]).lower() != region and self._made_workspace:
            with arm(f"deleting the new workspace disk {name}"):  # empty: made again where the lab now goes
                finish(azure.compute.disks.begin_delete(group, name))
            disk = None
        if disk is not None:
            return
        groups, me = azure.resources.resource_groups, azure.principal
        if get_or_none(f"reading the resource group {group}", lambda: groups.get(group)) is None:
            tags = {k: v for k, v in tags_for("", me, now_iso()).items() if k != settings.TAG_LAB}
            with arm(f"creating the resource group {group}"):
                groups.create_or_update(group, {"location": region, "tags": tags})
        tags = tags_for(self.names.lab, me, str(azure_data(self.record).get("created_at") or now_iso()))
        with self.ui.step(f"Workspace disk {name} in {group}"), arm(f"creating the workspace disk {name}"):
            finish(azure.compute.disks.begin_create_or_update(group, name, bodies.workspace_disk(region, tags)))
        self._made_workspace = True

    def _settle_vm(self, node: int) -> dict[str, Any] | None:
        ops, rg, name = self.azure.compute.virtual_machines, self.names.resource_group, self.names.name("vm", node)
        doing = f"reading the VM of node {node}" if node else "reading the lab's VM"
        get = functools.partial(get_or_none, doing, lambda: ops.get(rg, name))
        vm = poll(get, lambda v: _state(v) not in ("Creating", "Updating"), None, f"creating or updating the VM {name}")
        if _state(vm) in ("Failed", "Canceled", "Deleting"):
            with self.ui.step(f"Removing the VM {name} whose creation failed"):
                self._delete_vm(node)
            return None
        if vm is not None and not self._pinned_key(node):
            what = "" if node == 0 else f" (node {node}, {name})"
            raise LabctlError(
                f"Lab '{self.names.lab}' exists in Azure but this computer has lost its pinned host key{what}.",
                hint=f"Delete it with 'labctl down --name {self.names.lab}' and create it again with 'labctl up'.",
            )
        return vm

    def _delete_vm(self, node: int) -> None:
        """ARM answers the deletion of a VM that is not there with 204, so none is looked for first."""
        name = self.names.name("vm", node)
        with arm(f"deleting the VM {name}"):
            finish(self.azure.compute.virtual_machines.begin_delete(self.names.resource_group, name))

    def _pinned_key(self, node: int) -> str | None:
        nodes = self.record.nodes
        return nodes[node].host_key if node < len(nodes) else None

    def _choices(self) -> Iterator[Choice]:
        """The VM the lab has, if any, then each (region, size) with room, best first."""
        tried: set[tuple[str, str]] = set()
        cache: dict[str, RegionFacts] = {}
        head = self._vms.get(0)
        if head is not None:
            # New workers are built as node 0 was: the same security type, and the image's plan if it has one; their
            # NICs as node 0's (ARM changes accelerated networking only on a deallocated VM).
            nics, rg = self.azure.network.network_interfaces, self.names.resource_group
            nic = get_or_none("reading the lab's network interface", lambda: nics.get(rg, self.names.name("nic")))
            choice = Choice(
                str(head["location"]).lower(),
                lookup(head["properties"]["hardwareProfile"]["vmSize"]),
                azure_data(self.record).get("image_version") or "",
                {k: str(v) for k, v in head["plan"].items()} if head.get("plan") else None,
                dig(head, "properties", "securityProfile", "securityType") == "TrustedLaunch",
                bool(dig(nic, "properties", "enableAcceleratedNetworking")),
            )
            yield choice
            tried.add((choice.region, choice.size.name))
            self._vms.pop(0, None)  # it could not be kept: the next choice makes a new one
        while any((r, s.name) not in tried for r in self.plan.regions for s in self.plan.sizes):
            with self.ui.step("Checking size availability, vCPU quota and the image"):
                choice = choose(self.azure, self.plan, tried, cache)
            yield choice
            tried.add((choice.region, choice.size.name))

    def _build(self, choice: Choice) -> Choice:
        """Create or converge every resource of the lab for ``choice``; NoCapacity when Azure has no room."""
        azure, rg = self.azure, self.names.resource_group
        if self._built_region is None:  # once, and only now: a size or region Azure cannot give writes nothing
            ensure_providers(azure)
        elif self._built_region != choice.region:
            moving = f"Removing the network built in {self._built_region} before moving to {choice.region}"
            with self.ui.step(moving), arm(f"deleting the resource group {rg}"):
                finish(azure.resources.resource_groups.begin_delete(rg))
            self._vms.clear()
        self._built_region = choice.region
        td = azure_data(self.record)  # recorded before anything is made there
        created_at = str(td.get("created_at") or now_iso())
        td.update(
            {
                "subscription": azure.subscription_id,
                "resource_group": rg,  # from here on `down` has something to remove
                "vm_name": self.names.name("vm"),
                "region": choice.region,
                "size": choice.size.name,
                "usd_per_hour": choice.size.hourly(self.plan.spot) * self.nodes,  # priced in its first power event
                "created_at": created_at,
                "spot": self.plan.spot,
                "nodes": self.nodes,
                "owner": azure.principal.oid,
                "owner_name": azure.principal.name,
            }
        )
        self.save(self.record)
        tags = tags_for(self.names.lab, azure.principal, created_at)
        with self.ui.step(f"Resource group {rg} in {choice.region}"), arm(f"creating the resource group {rg}"):
            azure.resources.resource_groups.create_or_update(rg, {"location": choice.region, "tags": tags})
        head = self._vms.get(0)
        placed = dig(head, "properties", "proximityPlacementGroup", "id")
        self._placement = self.names.id("ppg") if head is None and self.nodes > 1 else placed
        self._build_network(choice, tags)
        self._build_vms(choice, tags)
        self._set_schedule(choice.region, tags)
        return choice

    def _build_network(self, choice: Choice, tags: dict[str, str]) -> None:
        network, names, rg, source = self.azure.network, self.names, self.names.resource_group, self.plan.source
        region, many = choice.region, self.nodes > 1

        def put(ops: Any, kind: str, body: Any, what: str) -> Any:
            with arm(f"creating the {what}"):
                return finish(ops.begin_create_or_update(rg, names.name(kind), body))

        def vnet() -> None:
            if many:  # the workers' way out: a new subnet has no default outbound access
                put(network.public_ip_addresses, "nat_ip", bodies.public_ip(region, tags), "NAT gateway's IP address")
                gateway = bodies.nat_gateway(region, tags, names.id("nat_ip"))
                put(network.nat_gateways, "nat_gateway", gateway, "NAT gateway")
            nat = names.id("nat_gateway") if many else None
            put(network.virtual_networks, "vnet", bodies.virtual_network(region, tags, nat), "virtual network")

        def nsg() -> None:
            body = bodies.security_group(region, tags, source)
            result = put(network.network_security_groups, "nsg", body, "network security group")
            check_rules(result.as_dict().get("properties", {}).get("securityRules") or [], source)

        def pip() -> None:
            put(network.public_ip_addresses, "public_ip", bodies.public_ip(region, tags), "public IP address")

        def ppg() -> None:
            with arm("creating the proximity placement group"):  # synchronous in ARM
                body = bodies.proximity_placement_group(region, tags)
                self.azure.compute.proximity_placement_groups.create_or_update(rg, names.name("ppg"), body)

        ours = (self._placement or "").lower() == names.id("ppg").lower()  # ARM may spell the group in capitals
        n = names.name
        label = f"Network: {n('vnet')}, {n('nsg')} (SSH from {source} only), {n('public_ip')}"
        label += f", NAT gateway {n('nat_gateway')}" if many else ""
        label += f", placement group {n('ppg')}" if ours else ""
        with self.ui.step(label):
            side_by_side([vnet, nsg, pip] + ([ppg] if ours else []))
        azure_data(self.record).update({"allow_ip": source, "placement_group": self._placement})
        self.save(self.record)
        # Node 0's NIC first: Azure gives private addresses in order from .4, so the head node has the first.
        with self.ui.step(f"Network interface {n('nic')}"):
            addresses = [self._make_nic(choice, tags, 0)]
        if many:
            es = "" if self.nodes == 2 else "es"
            with self.ui.step(f"Network interface{es[1:]} of {_workers(self.nodes)} (private address{es} only)"):
                addresses += side_by_side(
                    [functools.partial(self._make_nic, choice, tags, n) for n in range(1, self.nodes)]
                )
        head = self.record.nodes[0]
        head.port, head.user, head.private_address = settings.ssh_port(), settings.admin_user(), addresses[0]
        self.record.nodes[1:] = [  # workers are reached through node 0, with the host keys pinned before
            NodeRecord(ip, head.port, head.user, self._pinned_key(node), ip, via_head=True, name=names.name("vm", node))
            for node, ip in enumerate(addresses[1:], 1)
        ]

    def _make_nic(self, choice: Choice, tags: dict[str, str], node: int) -> str:
        ops, rg, name = self.azure.network.network_interfaces, self.names.resource_group, self.names.name("nic", node)
        with arm(f"creating the network interface of node {node}" if node else "creating the network interface"):
            body = bodies.network_interface(choice.region, tags, self.names, node, choice.accelerated_networking)
            nic = finish(ops.begin_create_or_update(rg, name, body))
        doing = f"reading the network interface of node {node}"
        address = private_address(nic.as_dict()) or private_address(get_or_none(doing, lambda: ops.get(rg, name)))
        if address is None:
            raise LabctlError(
                f"Azure gave node {node} of lab '{self.names.lab}' no private address.",
                hint="Run 'labctl up' again to converge.",
            )
        return address

    def _build_vms(self, choice: Choice, tags: dict[str, str]) -> None:
        """A VM that exists is kept; a new one's host key is pinned in the record before the VM exists."""
        for node, vm in sorted(self._vms.items()):  # workers of another size than node 0's (made again) go
            size = dig(vm, "properties", "hardwareProfile", "vmSize")
            if node and size and size != choice.size.name:
                with self.ui.step(f"Removing the VM of node {node} ({size}, not {choice.size.name})"):
                    self._delete_vm(node)
                del self._vms[node]
        made_head = 0 not in self._vms
        missing = [node for node in range(self.nodes) if node not in self._vms]
        hosts = {
            node: generate_ed25519(f"labctl-{self.names.lab}-{f'node{node}-' if node else ''}host") for node in missing
        }
        for node, host in hosts.items():
            self.record.nodes[node].host_key = normalize(host.public_line)
        asked = [s.name for s in self.plan.sizes]
        if not made_head:
            self.ui.info(f"VM {self.names.name('vm')} exists ({choice.size.name}); keeping it.")
        if not made_head and self.spec.sizes and choice.size.name not in asked:
            self.ui.warn(
                f"The lab's VM is a {choice.size.name}, not {' or '.join(asked)}; up does not resize. "
                f"'labctl resize --name {self.names.lab} --size SIZE' changes it."
            )
        user_pub = self._prepare_login(choice) if missing else ""
        self.save(self.record)  # the pins are known before the VMs exist: a crash from here on still verifies them
        if made_head:
            self._settle_workspace(choice.region)
            spot = f", Spot ~${choice.size.hourly(True):.2f}/h" if self.plan.spot else ""
            security = "" if choice.trusted_launch else ", without Trusted Launch (the size or image has none)"
            with self.ui.step(f"VM {self.names.name('vm')}: {choice.size.describe()}{spot}{security}"):
                self._create_vm(choice, tags, 0, hosts[0], user_pub)
            note_power(self.record, "running")
            self.save(self.record)
        if not (workers := [node for node in missing if node]):
            if self.nodes > 1:
                kept = "exists; keeping it" if self.nodes == 2 else "exist; keeping them"
                self.ui.info(f"The VM{'' if self.nodes == 2 else 's'} of {_workers(self.nodes)} {kept}.")
            return
        if self._placement is None:
            self.ui.warn(
                f"The lab's VM {self.names.name('vm')} is in no proximity placement group, so its new nodes are "
                "placed without one (possibly further apart); 'labctl down' and 'up --nodes N' places all together."
            )
        s = "s" if len(workers) > 1 else ""
        label = f"VM{s} of node{s} {', '.join(map(str, workers))}: {choice.size.describe()}, private addresses only"
        try:
            with self.ui.step(label):
                side_by_side([functools.partial(self._create_vm, choice, tags, n, hosts[n], user_pub) for n in workers])
        except NoCapacity as refused:
            raise self._worker_refused(refused, made_head) from refused

    def _worker_refused(self, refused: NoCapacity, made_head: bool) -> LabctlError:
        """A lab just made is removed, so the next size or region is tried for all nodes together."""
        lab, nodes = self.names.lab, self.nodes
        if made_head:
            with self.ui.step(f"Removing the VMs of lab '{lab}'"):
                side_by_side([functools.partial(self._delete_vm, node) for node in range(nodes)])
            self._vms.clear()
            return NoCapacity(
                f"{refused.message} The lab's {nodes} VMs need room together, so its new VMs were removed.",
                hint=refused.hint,
            )
        return LabctlError(
            f"{refused.message} The lab's other nodes are kept (and cost money while running).",
            hint=f"Run 'labctl up --name {lab} --nodes {nodes}' later to add the missing nodes, or "
            f"'labctl down --name {lab}' to remove the whole lab.",
        )

    def _set_schedule(self, region: str, tags: dict[str, str]) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        resources, plan, names = self.azure.resources.resources, self.plan, self.names

        def schedule(node: int) -> None:
            url, vm = names.id("schedule", node), names.id("vm", node)
            if plan.shutdown_hhmm and plan.shutdown_tz:
                body = bodies.shutdown_schedule(region, tags, vm, plan.shutdown_hhmm, plan.shutdown_tz)
                with arm("creating the auto-shutdown schedule"):
                    finish(resources.begin_create_or_update_by_id(url, body, api_version=settings.SCHEDULE_API_VERSION))
            else:
                with arm("removing the auto-shutdown schedule"), contextlib.suppress(ResourceNotFoundError):
                    finish(resources.begin_delete_by_id(url, api_version=settings.SCHEDULE_API_VERSION))

        every = " of every node" if self.nodes > 1 else ""
        label = f"Auto-shutdown{every} daily at {plan.shutdown_at} ({plan.shutdown_tz})"
        with self.ui.step(label) if plan.shutdown_at else contextlib.nullcontext():
            side_by_side([functools.partial(schedule, node) for node in range(self.nodes)])
        azure_data(self.record).update(
            {
                "shutdown_at": plan.shutdown_at,
                "shutdown_time_zone": plan.shutdown_tz,
                "shutdown_hhmm": plan.shutdown_hhmm,
            }
        )
        self.save(self.record)

    def _prepare_login(self, choice: Choice) -> str:
        if not choice.image_version:
            image = latest_image(self.azure, choice.region, self.plan.image)
            choice.image_version, choice.purchase_plan = image.version, image.plan
        key_path, user_pub = ensure_user_key(self.names.lab, self.spec.ssh_key)
        self.record.ssh_key_path = str(key_path)
        azure_data(self.record)["image_version"] = choice.image_version
        return user_pub

    def _create_vm(self, choice: Choice, tags: dict[str, str], node: int, host: KeyPair, user_pub: str) -> None:
        from labctl.container import effective_base_image

        names = self.names
        disk = None if node else self._workspace
        cloud_init = render_cloud_init(
            host.private_openssh, normalize(host.public_line), names.lab, effective_base_image(), node, bool(disk)
        )
        body = bodies.virtual_machine(names, node, tags, choice, self.plan, user_pub, cloud_init, self._placement, disk)
        which = f" of node {node}" if node else ""
        ops, rg = self.azure.compute.virtual_machines, names.resource_group
        try:
            with arm(f"creating the VM{which} ({choice.size.name} in {choice.region})"):
                self._vms[node] = finish(ops.begin_create_or_update(rg, names.name("vm", node), body)).as_dict()
        except NoCapacity:
            self._delete_vm(node)
            raise
