"""Labs as Azure sees them, found by tags and with their power history in a group tag: a lost state file loses
neither a VM nor its spend."""

from __future__ import annotations

import contextlib
import functools
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from labctl import pricing
from labctl.errors import LabctlError, NotFound
from labctl.labhost import side_by_side
from labctl.pricing import SIZES
from labctl.state import LabRecord, now_iso
from labctl.targets.azure import idlerole, settings
from labctl.targets.azure.clients import Azure, Principal, arm, dig, finish, get_or_none, poll, wait_rg_gone
from labctl.targets.azure.plan import (
    WORKSPACE_GROUP,
    LabNames,
    azure_data,
    group_and_name,
    names_of,
    node_count,
    workspace_disk_id,
    workspace_words,
)
from labctl.targets.base import FoundLab, LabOwner
from labctl.ui import Reporter

TAG_HISTORY = "labctl-allocated"  # "<seconds allocated in closed intervals>;<ISO start of the open one or ->"


def find_labs(azure: Azure) -> list[FoundLab]:
    flt = f"tagName eq '{settings.TAG_CREATED_BY}' and tagValue eq '{settings.CREATED_BY}'"
    with arm("listing labctl's resource groups"):
        groups = [g.as_dict() for g in azure.resources.resource_groups.list(filter=flt)]
    me, labs = azure.principal.oid.lower(), []
    for group in groups:
        tags = group.get("tags") or {}
        if not (name := tags.get(settings.TAG_LAB)):
            continue
        owner = tags.get(settings.TAG_OWNER)
        details = {
            "subscription": azure.subscription_id,
            "resource_group": group.get("name"),
            "owner": tags.get(settings.TAG_OWNER_NAME) or owner,
            "owner_id": owner,
            "created_at": tags.get(settings.TAG_CREATED_AT),
            "power_history": tags.get(TAG_HISTORY),
        }
        deleting = dig(group, "properties", "provisioningState") == "Deleting"
        mine = None if owner is None else owner.lower() == me
        labs.append(FoundLab(name, "azure", group.get("location"), deleting=deleting, mine=mine, details=details))
    workspaces = [g for g in groups if str(g.get("name")).lower().startswith(WORKSPACE_GROUP.format(owner=""))]
    return labs + [lab for group in workspaces for lab in _kept_workspaces(azure, group)]


def _kept_workspaces(azure: Azure, group: dict[str, Any]) -> list[FoundLab]:
    """Workspace disks no VM holds: kept by `down --keep-workspace`, and billed, so found without a record too."""
    with arm(f"listing the resource group {group.get('name')}"):
        disks = [r.as_dict() for r in azure.resources.resources.list_by_resource_group(str(group.get("name")))]
    found = []
    for disk in disks:
        tags = disk.get("tags") or {}
        if str(disk.get("type")).lower() != "microsoft.compute/disks" or disk.get("managedBy") or not tags:
            continue
        group_id = f"/subscriptions/{azure.subscription_id}/resourceGroups/{group.get('name')}"  # listed in capitals
        disk_id = f"{group_id}/providers/Microsoft.Compute/disks/{disk.get('name')}"
        owner = str(tags.get(settings.TAG_OWNER) or "")
        details = {
            "subscription": azure.subscription_id,
            "owner": tags.get(settings.TAG_OWNER_NAME) or owner,
            "owner_id": owner,
            "created_at": tags.get(settings.TAG_CREATED_AT),
            "workspace_disk": disk_id,
            "kept_workspace": workspace_words(disk_id, disk.get("location")),
        }
        mine = owner.lower() == azure.principal.oid.lower()
        found.append(
            FoundLab(str(tags.get(settings.TAG_LAB)), "azure", disk.get("location"), mine=mine, details=details)
        )
    return found


def record_from_azure(azure: Azure, name: str) -> LabRecord:
    """Enough for `down`; a colleague's lab keeps its owner, so acting on it is refused unless forced and confirmed."""
    found = [lab for lab in find_labs(azure) if lab.name == name]
    found.sort(key=lambda lab: {True: 0, None: 1, False: 2}[lab.mine])
    if len(found) > 1 and found[0].mine is False:  # sorted: none is the user's
        owners = ", ".join(f"{lab.details.get('owner')} ({lab.details.get('resource_group')})" for lab in found)
        raise NotFound(
            f"You have no lab named '{name}' in subscription {azure.subscription_id}; colleagues have: {owners}.",
            hint="labctl acts on your own labs ('labctl list' shows whose is whose); their owners can remove theirs.",
        )
    if not found:
        raise NotFound(
            f"There is no lab named '{name}' on this computer or in subscription {azure.subscription_id}.",
            hint="'labctl list' shows the labs labctl can find.",
        )
    lab = found[0]
    kept = bool(lab.details.get("workspace_disk"))  # only its disk is left: `down --delete-workspace` removes it
    record = LabRecord(name, "azure", lab.details.get("created_at") or "", status="kept" if kept else "found-in-azure")
    td = azure_data(record)
    td["subscription"] = azure.subscription_id
    td["resource_group"] = lab.details.get("resource_group") or LabNames(name).resource_group
    if kept:  # the group it had is its owner's (as the disk's group says), never an older lab's "labctl-<lab>"
        disk = str(lab.details["workspace_disk"])
        td["workspace_disk"], td["workspace_region"] = disk, str(lab.where)
        td["resource_group"] = f"labctl-{name}-{disk.split('/')[4].rsplit('-', 1)[1]}"
    td["vm_name"] = LabNames(name).name("vm")
    if lab.details.get("owner_id"):
        td["owner"] = str(lab.details["owner_id"])
        td["owner_name"] = str(lab.details.get("owner") or lab.details["owner_id"])
    if lab.where:
        td["region"] = lab.where
    restore_power(record, lab.details.get("power_history"), record.created_at)
    return record


def owner_of(azure: Azure, record: LabRecord, group: dict[str, Any] | None = None) -> LabOwner:
    """The group's tag decides, not the record (a hand edit could point it at a colleague's group), unless the group
    is gone. A lab with no owner (older than owners) is the user's if recorded here, else nobody's known."""
    td = azure_data(record)
    oid, name, rg = td.get("owner"), td.get("owner_name"), td.get("resource_group")
    if group is None and rg:
        group = get_or_none("reading the lab's resource group", lambda: azure.resources.resource_groups.get(rg))
    if group is not None:
        tags = group.get("tags") or {}
        oid, name = tags.get(settings.TAG_OWNER), tags.get(settings.TAG_OWNER_NAME)
    me = azure.principal
    if oid is None:
        return LabOwner(None, record.status != "found-in-azure", me.name)
    return LabOwner(name or oid, oid.lower() == me.oid.lower(), me.name)


def describe_lab(azure: Azure, record: LabRecord) -> dict[str, Any]:
    td, names, nodes = azure_data(record), names_of(record), node_count(record)
    rg, ops = names.resource_group, azure.compute.virtual_machines

    def read(node: int) -> tuple[dict[str, Any] | None, str, str | None, str | None]:
        name, nics = names.name("vm", node), azure.network.network_interfaces
        doing = f"reading the VM of node {node}" if node else "reading the lab's VM"
        with arm(doing):
            vm = get_or_none(doing, lambda: ops.get(rg, name))
            power, since = "unknown" if vm else "missing", None
            for status in (ops.instance_view(rg, name).as_dict().get("statuses") or []) if vm else []:
                code = str(status.get("code", ""))
                if code.startswith("PowerState/"):
                    power = code.split("/", 1)[1]
                if code.startswith("ProvisioningState/") and status.get("time"):
                    since = str(status["time"])
            nic = get_or_none(doing, lambda: nics.get(rg, names.name("nic", node))) if nodes > 1 else None
        return vm, power, since, private_address(nic)

    vms = side_by_side([functools.partial(read, node) for node in range(nodes)])
    vm, power, since, _ = vms[0]
    if vm is None:
        return {"power_state": "missing", "resource_group": rg, "region": td.get("region")}
    ips = azure.network.public_ip_addresses
    pip = get_or_none("reading the lab's public IP address", lambda: ips.get(rg, names.name("public_ip")))
    size = str(_size(vm))
    entry = SIZES.get(size.lower())
    noticed = parse_time(since).isoformat() if since else None
    if note_power(record, power, noticed):  # a change labctl did not make: the idle agent, the schedule
        save_power_tag(azure, record)
    started = since or td.get("started_at")  # the instance view dates the last start (or the creation)
    uptime = None
    if power == "running" and started:
        with contextlib.suppress(ValueError):
            uptime = int((datetime.now(timezone.utc) - parse_time(str(started))).total_seconds())
    price = td.get("usd_per_hour") or (entry.hourly(bool(td.get("spot"))) * nodes if entry else None)
    spent = _spend(record, str(vm.get("location") or td.get("region")), size)
    if spent.get("compute_per_hour_usd") is not None:
        price = spent["compute_per_hour_usd"]
    facts = {
        "power_state": power,
        "public_ip": dig(pip, "properties", "ipAddress"),
        "size": size,
        "gpu": f"{entry.gpu_count}x {entry.gpu_model}" if entry and entry.gpu else None,
        "region": vm.get("location"),
        "usd_per_hour": price if power == "running" else 0.0,
        "usd_per_hour_when_running": price,
        "uptime_seconds": uptime,
        "shutdown_at": td.get("shutdown_at"),
        **spent,
        "spot": bool(td.get("spot")),
        "resource_group": rg,
    }
    if nodes > 1:
        facts["nodes"] = [
            {"node": n, "name": names.name("vm", n), "power_state": p, "size": _size(v), "private_ip": ip}
            for n, (v, p, _, ip) in enumerate(vms)
        ]
    return facts


def _size(vm: dict[str, Any] | None) -> Any:
    return dig(vm, "properties", "hardwareProfile", "vmSize")


def private_address(nic: dict[str, Any] | None) -> str | None:
    found = [
        dig(config, "properties", "privateIPAddress") for config in dig(nic, "properties", "ipConfigurations") or []
    ]
    return next((str(address) for address in found if address), None)


def _spend(record: LabRecord, region: str, size: str) -> dict[str, Any]:
    try:
        prices = pricing.lab_prices(region, size).for_nodes(node_count(record))
        spent = lab_spend(record, prices)
    except (LabctlError, ValueError) as exc:
        return {"spend_so_far_usd": None, "price_source": f"price unknown ({exc})"}
    budget = record.idle.get("budget_usd")
    facts: dict[str, Any] = {
        "spend_so_far_usd": round(spent["total_usd"], 2),
        "spend": spent,
        "compute_per_hour_usd": prices.compute_per_hour(bool(azure_data(record).get("spot"))),
        "price_source": prices.source,
    }
    if isinstance(budget, (int, float)):
        facts["budget_left_usd"] = round(float(budget) - spent["total_usd"], 2)
    return facts


def set_power(azure: Azure, record: LabRecord, on: bool) -> dict[str, Any]:
    from azure.core.exceptions import ResourceNotFoundError

    td, names = azure_data(record), names_of(record)
    if not td.get("resource_group"):
        raise LabctlError(f"Lab '{record.name}' has no VM yet.", hint="Run 'labctl up' to finish creating it.")
    ops, rg = azure.compute.virtual_machines, names.resource_group
    doing = "starting the VM" if on else "deallocating the VM"
    with arm(doing):
        if get_or_none(doing, lambda: ops.get(rg, names.name("vm"))) is None:
            raise NotFound(
                f"The VM of lab '{record.name}' does not exist in Azure.",
                hint="Run 'labctl up' to recreate it, or 'labctl down' to forget the lab.",
            )
        pollers = []
        for node in range(node_count(record)):
            with contextlib.suppress(ResourceNotFoundError):  # a worker an interrupted `up` never made
                pollers.append((ops.begin_start if on else ops.begin_deallocate)(rg, names.name("vm", node)))
        for poller in pollers:
            finish(poller)
    note_power(record, "running" if on else "deallocated")
    save_power_tag(azure, record)
    return describe_lab(azure, record)


FORCE_DELETION_TYPES = "Microsoft.Compute/virtualMachines"
TAG_INDEX_POLLS = 30  # the tag index lags behind deletions a little: a minute at the default poll interval


def leftovers(azure: Azure, lab: str, resource_group: str = "", owner: str | None = None) -> list[str]:
    """Resources still tagged for the lab: a colleague's lab of the same name is not a leftover of this one."""
    flt = f"tagName eq '{settings.TAG_LAB}' and tagValue eq '{lab}'"
    inside = f"/resourcegroups/{resource_group.lower()}/"
    with arm("looking for resources left behind"):
        hits = [str(r.id) for r in azure.resources.resources.list(filter=flt)]
        outside = [rid for rid in hits if inside not in rid.lower()]
        # A tag-filtered list carries no tags (ARM's rule), so the owner is read from the hits' groups' listings.
        tags: dict[str, dict[str, str]] = {}
        for group in {rid.split("/")[4] for rid in outside}:
            for resource in azure.resources.resources.list_by_resource_group(group):
                tags[str(resource.id).lower()] = resource.tags or {}

    def ours(rid: str) -> bool:
        if inside in rid.lower():
            return True
        tagged = tags.get(rid.lower(), {}).get(settings.TAG_OWNER)
        return tagged is None if owner is None else str(tagged).lower() == owner.lower()

    return [rid for rid in hits if ours(rid)]


def destroy_lab(azure: Azure, record: LabRecord, ui: Reporter, keep: bool) -> None:
    """The lab's group, then its workspace disk (outside it: deleted, or kept), and a check that nothing is left."""
    from azure.core.exceptions import ResourceNotFoundError

    td, lab = azure_data(record), record.name
    names = LabNames(lab, td.get("resource_group") or "", azure.subscription_id)
    vms = [names.id("vm", node) for node in range(node_count(record))]
    idlerole.remove_rights(azure, vms, record, ui, before_group=True)
    oid = td.get("owner") or azure.principal.oid  # a lab found by its tags has its disk by name only
    workspace = td.get("workspace_disk") or workspace_disk_id(azure.subscription_id, Principal(oid, "").short, lab)
    unseen = not keep and unseen_workspace(record)
    resource_group, owner = names.resource_group, td.get("owner")
    with ui.step(f"Deleting resource group {resource_group} and everything in it"):
        groups = azure.resources.resource_groups
        rg = get_or_none(f"reading the resource group {resource_group}", lambda: groups.get(resource_group))
        if rg is not None:
            owner = (rg.get("tags") or {}).get(settings.TAG_OWNER, owner)  # the group's tag decides, not the record
            if dig(rg, "properties", "provisioningState") != "Deleting":
                try:
                    with arm(f"deleting the resource group {resource_group}"):
                        # Force deletion powers the VMs off instead of shutting them down: faster, and the
                        # group holds nothing whose shutdown needs to be graceful.
                        finish(groups.begin_delete(resource_group, force_deletion_types=FORCE_DELETION_TYPES))
                except LabctlError as exc:  # deleted meanwhile, or being deleted: what `down` wanted
                    cause = exc.__cause__
                    if not isinstance(cause, ResourceNotFoundError) and "BeingDeleted" not in str(cause):
                        raise
            wait_rg_gone(azure, resource_group)
    settle_workspace(azure, lab, workspace, keep or unseen, ui)
    kept = workspace.lower() if keep or unseen else None

    def left_over() -> list[str]:
        return [rid for rid in leftovers(azure, lab, resource_group, owner) if rid.lower() != kept]

    with ui.step("Checking that nothing tagged for the lab is left"):
        seconds = TAG_INDEX_POLLS * settings.poll_interval()
        left = poll(left_over, lambda found: not found, seconds)
    if left:
        raise LabctlError(
            f"The resource group of lab '{lab}' is deleted, but {len(left)} resource(s) tagged for it remain: "
            + ", ".join(left[:5]),
            hint="Delete them in the Azure portal (they may still cost money), or run 'labctl down' again.",
        )
    if unseen:
        flag = f" --name {lab}"
        ui.warn(
            f"Kept the workspace disk {workspace.rsplit('/', 1)[1]}: it holds the workspace an earlier 'down "
            "--keep-workspace' kept, which this lab never had in /workspace, so nothing copied it home. "
            f"'labctl up{flag}' brings a lab back with it; 'labctl down{flag} --delete-workspace' deletes it."
        )
    idlerole.remove_rights(azure, vms[:1], record, ui, before_group=False)


def unseen_workspace(record: LabRecord) -> bool:
    """A kept workspace disk that came back, but unmounted (/workspace was Docker's own volume): only it holds the
    files, so a plain `down` keeps it."""
    td = azure_data(record)
    return bool(td.get("workspace_unbound") and td.get("workspace_kept"))


def settle_workspace(azure: Azure, lab: str, disk: str, keep: bool, ui: Reporter) -> None:
    """After the lab's group: the workspace disk, detached with its VM, is deleted, or kept and checked to be there."""
    group, name = group_and_name(disk)
    found = get_or_none(f"reading the workspace disk {name}", lambda: azure.compute.disks.get(group, name))
    if keep:
        if found is None:
            raise LabctlError(
                f"Lab '{lab}' is deleted, but its workspace disk {name} is not in {group} any more: nothing was kept.",
                hint="'labctl list' shows what labctl finds; the next 'labctl up' makes a new, empty one.",
            )
        ui.info(f"Kept the workspace disk {name} in {group} ({found.get('location')}).")
        return
    if found is not None:
        with ui.step(f"Deleting the workspace disk {name}"), arm(f"deleting the workspace disk {name}"):
            finish(azure.compute.disks.begin_delete(group, name))
    groups = azure.resources.resource_groups
    if get_or_none(f"reading the resource group {group}", lambda: groups.get(group)) is None:
        return
    with arm(f"listing the resource group {group}"):
        empty = not list(azure.resources.resources.list_by_resource_group(group))
    if empty:  # the owner's last workspace went: nothing of labctl's is left
        with ui.step(f"Deleting the empty resource group {group}"), arm(f"deleting the resource group {group}"):
            finish(groups.begin_delete(group))


_FRACTION_RE = re.compile(r"\.(\d+)")
_COMPACT_OFFSET_RE = re.compile(r"([+-]\d{2})(\d{2})$")


def parse_time(text: str) -> datetime:
    """ARM writes 1 to 7 fraction digits and often 'Z', which Python 3.10's ``fromisoformat`` refuses; no zone: UTC."""
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    value = _COMPACT_OFFSET_RE.sub(r"\1:\2", value) if "T" in value else value
    value = _FRACTION_RE.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), value, count=1)
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def note_power(record: LabRecord, state: str, when: str | None = None) -> bool:
    """Record a power state seen or caused at ``when``; True when it changed whether compute is billed."""
    billed = pricing.billed(state)
    events = azure_data(record).setdefault("power_events", [])
    if billed is None or (events and pricing.billed(events[-1][1]) == billed):
        return False
    event: list[Any] = [when or now_iso(), state.lower().removeprefix("powerstate/")]
    rate = azure_data(record).get("usd_per_hour")
    events.append([*event, rate] if billed and rate is not None else event)  # the $/h of the size it starts as
    return True


def intervals(record: LabRecord) -> list[pricing.Interval]:
    return pricing.intervals_from_events(
        (parse_time(when), *rest) for when, *rest in azure_data(record).get("power_events") or []
    )


def rates(record: LabRecord, today: float) -> list[list[Any]]:
    """[ISO time, compute $/h] from each start on, a start older than its price at ``today``'s: the idle agent prices
    each boot by the one in force when it last saw it, as status prices each stretch."""
    return [[i.start.isoformat(), today if i.usd_per_hour is None else i.usd_per_hour] for i in intervals(record)]


def power_tag(record: LabRecord, now: datetime) -> str:
    spans = intervals(record)
    open_start = spans[-1].start if spans and spans[-1].stop is None else None
    closed = [s for s in spans if s.stop is not None]
    seconds = pricing.allocated_seconds(closed, min((s.start for s in spans), default=now), now)
    return f"{int(seconds)};{open_start.isoformat() if open_start else '-'}"


def restore_power(record: LabRecord, tag: str | None, created_at: str) -> None:
    """When the state file was lost: one closed interval as long as the tag's."""
    if not tag or azure_data(record).get("power_events"):
        return
    seconds_text, _, open_start = tag.partition(";")
    try:
        seconds = float(seconds_text)
        start = parse_time(created_at)
    except ValueError:
        return
    if seconds > 0:
        note_power(record, "running", start.isoformat())
        note_power(record, "deallocated", (start + timedelta(seconds=seconds)).isoformat())
    if open_start and open_start != "-":
        note_power(record, "running", open_start)


def lab_spend(record: LabRecord, prices: Any, now: datetime | None = None) -> dict[str, Any]:
    """Every node's: they start and stop together."""
    td = azure_data(record)
    created = parse_time(str(td.get("created_at") or record.created_at))
    return pricing.estimate(
        created, intervals(record), prices, spot=bool(td.get("spot")), now=now or datetime.now(timezone.utc)
    )


def save_power_tag(azure: Any, record: LabRecord) -> None:
    """Merged into the resource group's tags; a refusal only loses the copy."""
    rg = azure_data(record).get("resource_group")
    if not rg:
        return
    with contextlib.suppress(LabctlError), arm("tagging the lab's power history"):
        group = azure.resources.resource_groups.get(rg)
        group.tags = {**(group.tags or {}), TAG_HISTORY: power_tag(record, datetime.now(timezone.utc))}
        azure.resources.resource_groups.create_or_update(rg, group)
