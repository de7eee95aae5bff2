"""Labs as Azure sees them: found by tags (so a lost state file never means a forgotten VM), described, powered."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from labctl.catalog import SIZES
from labctl.errors import LabctlError, NotFound
from labctl.state import LabRecord
from labctl.targets.azure import settings
from labctl.targets.azure.clients import Azure, arm
from labctl.targets.azure.plan import LabNames
from labctl.targets.azure.provision import get_or_none
from labctl.targets.azure.record import azure_data
from labctl.targets.base import FoundLab


def find_labs(azure: Azure) -> list[FoundLab]:
    """Every labctl lab in the subscription, from the tags on resource groups."""
    flt = f"tagName eq '{settings.TAG_CREATED_BY}' and tagValue eq '{settings.CREATED_BY}'"
    labs = []
    with arm("listing labctl's resource groups"):
        groups = [g.as_dict() for g in azure.resources.resource_groups.list(filter=flt)]
    for group in groups:
        tags = group.get("tags") or {}
        name = tags.get(settings.TAG_LAB)
        if not name:
            continue
        labs.append(
            FoundLab(
                name=name,
                target="azure",
                where=group.get("location"),
                deleting=(group.get("properties") or {}).get("provisioningState") == "Deleting",
                details={
                    "subscription": azure.subscription_id,
                    "resource_group": group.get("name"),
                    "creator": tags.get(settings.TAG_CREATOR),
                    "created_at": tags.get(settings.TAG_CREATED_AT),
                },
            )
        )
    return labs


def record_from_azure(azure: Azure, name: str) -> LabRecord:
    """A record rebuilt from the lab's tags, enough for `down` (and `list`) when the local state is gone."""
    for lab in find_labs(azure):
        if lab.name == name:
            record = LabRecord(name=name, target="azure", created_at=lab.details.get("created_at") or "")
            record.status = "found-in-azure"
            td = azure_data(record)
            td["subscription"] = azure.subscription_id
            td["resource_group"] = lab.details.get("resource_group") or LabNames(name).resource_group
            td["vm_name"] = LabNames(name).vm
            if lab.where:
                td["region"] = lab.where
            return record
    raise NotFound(
        f"There is no lab named '{name}' on this computer or in subscription {azure.subscription_id}.",
        hint="'labctl list' shows the labs labctl can find.",
    )


_FRACTION_RE = re.compile(r"\.(\d+)")
_COMPACT_OFFSET_RE = re.compile(r"([+-]\d{2})(\d{2})$")


def parse_time(text: str) -> datetime:
    """ARM's timestamps ('...12.8051917+00:00', '...12.85Z') on every Python labctl supports.

    Python 3.10's ``fromisoformat`` takes only 0, 3 or 6 fraction digits and no 'Z', while ARM writes 1 to 7
    digits and often 'Z'; so the fraction is padded or cut to 6 digits and 'Z' spelled '+00:00' first.
    A time without a zone is taken as UTC, which is what ARM means.
    """
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    value = _COMPACT_OFFSET_RE.sub(r"\1:\2", value) if "T" in value else value
    value = _FRACTION_RE.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), value, count=1)
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _power_state(view: dict[str, Any]) -> tuple[str, str | None]:
    power, since = "unknown", None
    for status in view.get("statuses") or []:
        code = str(status.get("code", ""))
        if code.startswith("PowerState/"):
            power = code.split("/", 1)[1]
        if code.startswith("ProvisioningState/") and status.get("time"):
            since = str(status["time"])
    return power, since


def describe_lab(azure: Azure, record: LabRecord) -> dict[str, Any]:
    td = azure_data(record)
    rg, vm_name = td.get("resource_group"), td.get("vm_name")
    with arm("reading the lab's VM"):
        vm = get_or_none(lambda: azure.compute.virtual_machines.get(rg, vm_name))
        if vm is None:
            return {"power_state": "missing", "resource_group": rg, "region": td.get("region")}
        view = azure.compute.virtual_machines.instance_view(rg, vm_name).as_dict()
        pip = get_or_none(lambda: azure.network.public_ip_addresses.get(rg, LabNames(record.name).public_ip))
    power, since = _power_state(view)
    size = str(vm["properties"]["hardwareProfile"]["vmSize"])
    entry = SIZES.get(size.lower())
    started = since or td.get("started_at")  # the instance view dates the last start (or the creation)
    uptime = None
    if power == "running" and started:
        try:
            uptime = int((datetime.now(timezone.utc) - parse_time(str(started))).total_seconds())
        except ValueError:
            uptime = None
    price = td.get("usd_per_hour") or (entry.hourly(bool(td.get("spot"))) if entry else None)
    return {
        "power_state": power,
        "public_ip": ((pip or {}).get("properties") or {}).get("ipAddress"),
        "size": size,
        "gpu": f"{entry.gpu_count}x {entry.gpu_model}" if entry and entry.gpu else None,
        "region": vm.get("location"),
        "usd_per_hour": price if power == "running" else 0.0,
        "usd_per_hour_when_running": price,
        "uptime_seconds": uptime,
        "spend_so_far_usd": round(uptime / 3600 * price, 2) if uptime and price else None,
        "shutdown_at": td.get("shutdown_at"),
        "spot": bool(td.get("spot")),
        "resource_group": rg,
    }


def set_power(azure: Azure, record: LabRecord, on: bool) -> dict[str, Any]:
    td = azure_data(record)
    rg, vm_name = td.get("resource_group"), td.get("vm_name")
    if not rg or not vm_name:
        raise LabctlError(f"Lab '{record.name}' has no VM yet.", hint="Run 'labctl up' to finish creating it.")
    ops = azure.compute.virtual_machines
    with arm("starting the VM" if on else "deallocating the VM"):
        if get_or_none(lambda: ops.get(rg, vm_name)) is None:
            raise NotFound(
                f"The VM of lab '{record.name}' does not exist in Azure.",
                hint="Run 'labctl up' to recreate it, or 'labctl down' to forget the lab.",
            )
        (ops.begin_start if on else ops.begin_deallocate)(rg, vm_name).result()
    return describe_lab(azure, record)
