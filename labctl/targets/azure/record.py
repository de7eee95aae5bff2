"""An Azure lab's own record fields, and its power history (every start and stop labctl made or noticed, also
summed up in a tag on the resource group so that a lost state file loses no spend)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any, TypedDict, cast

from labctl.errors import LabctlError
from labctl.spend import (
    BILLED_STATES,
    UNBILLED_STATES,
    Interval,
    SpendEstimate,
    allocated_seconds,
    estimate,
    intervals_from_events,
)
from labctl.state import LabRecord, now_iso

TAG_HISTORY = "labctl-allocated"  # "<seconds allocated in closed intervals>;<ISO start of the open one or ->"


class AzureData(TypedDict, total=False):
    subscription: str
    resource_group: str  # recorded before it exists: from then on `down` has something to remove
    vm_name: str
    vm_id: str
    region: str
    size: str
    image: str  # the marketplace URN
    image_version: str
    spot: bool
    usd_per_hour: float
    allow_ip: str  # the CIDR the NSG admits to SSH
    created_at: str
    started_at: str  # when the VM was last started by labctl (uptime when ARM does not date it)
    shutdown_at: str | None  # HH:MM local time of the daily auto-shutdown, None without one
    shutdown_time_zone: str | None
    owner: str  # the object id of the principal that made the lab (tag labctl-owner)
    owner_name: str  # its sign-in or application name
    power_events: list[list[str]]  # [ISO time, power state] when compute billing started or stopped
    nodes: int  # VMs the lab is made of (node 0 and its workers, all of ``size``); absent: one
    placement_group: str | None  # the proximity placement group's id, None where the VMs are in none


def azure_data(record: LabRecord) -> AzureData:
    """The same dict, typed: a misspelt key is a mypy error."""
    return cast(AzureData, record.target_data)


def node_count(record: LabRecord) -> int:
    """VMs the lab has or is being made with (recorded before they exist, so `down` and `stop` reach each)."""
    recorded = azure_data(record).get("nodes")
    return max(recorded if isinstance(recorded, int) and recorded > 0 else 1, len(record.nodes))


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


def _billed(state: str) -> bool | None:
    code = state.lower().removeprefix("powerstate/")
    return True if code in BILLED_STATES else False if code in UNBILLED_STATES else None


def note_power(record: LabRecord, state: str, when: str | None = None) -> bool:
    """Record a power state seen or caused at ``when``; True when it changed whether compute is billed."""
    billed = _billed(state)
    events = azure_data(record).setdefault("power_events", [])
    if billed is None or (events and _billed(events[-1][1]) == billed):
        return False
    events.append([when or now_iso(), state.lower().removeprefix("powerstate/")])
    return True


def intervals(record: LabRecord) -> list[Interval]:
    return intervals_from_events(
        (parse_time(when), state) for when, state in azure_data(record).get("power_events") or []
    )


def power_tag(record: LabRecord, now: datetime) -> str:
    spans = intervals(record)
    open_start = spans[-1].start if spans and spans[-1].stop is None else None
    closed = [s for s in spans if s.stop is not None]
    seconds = allocated_seconds(closed, min((s.start for s in spans), default=now), now)
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


def lab_spend(record: LabRecord, prices: Any, now: datetime | None = None) -> SpendEstimate:
    """Every node's: they start and stop together."""
    td = azure_data(record)
    created = parse_time(str(td.get("created_at") or record.created_at))
    return estimate(
        created, intervals(record), prices, spot=bool(td.get("spot")), now=now or datetime.now(timezone.utc)
    )


def save_power_tag(azure: Any, record: LabRecord) -> None:
    """Merged into the resource group's tags; a refusal only loses the copy."""
    from labctl.targets.azure.clients import arm

    rg = azure_data(record).get("resource_group")
    if not rg:
        return
    try:
        with arm("tagging the lab's power history"):
            group = azure.resources.resource_groups.get(rg)
            group.tags = {**(group.tags or {}), TAG_HISTORY: power_tag(record, datetime.now(timezone.utc))}
            azure.resources.resource_groups.create_or_update(rg, group)
    except LabctlError:
        pass
