"""An Azure lab's power history, for a spend that counts every hour its VM was allocated.

labctl records each start and stop it makes (`up`, `start`, `stop`) and, when it next looks at the VM, any change
it did not make (the idle agent's deallocation, the daily auto-shutdown), dated by the instance view. The events
live in the state file; a summary (hours allocated in closed intervals, and the start of the open one) lives in a
tag on the lab's resource group, so a lost state file loses no spend. :mod:`labctl.spend` does the arithmetic.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from labctl.spend import BILLED_STATES, UNBILLED_STATES, Interval, SpendEstimate, allocated_seconds, estimate
from labctl.state import LabRecord, now_iso
from labctl.targets.azure.record import azure_data


def parse_time(text: str) -> datetime:
    """Times as labctl writes them (ISO 8601 with an offset; ARM's are normalised before they are noted)."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


TAG_HISTORY = "labctl-allocated"  # "<seconds allocated in closed intervals>;<ISO start of the open one or ->"


def _billed(state: str) -> bool | None:
    code = state.lower().removeprefix("powerstate/")
    return True if code in BILLED_STATES else False if code in UNBILLED_STATES else None


def events(record: LabRecord) -> list[list[str]]:
    history: list[list[str]] = azure_data(record).setdefault("power_events", [])
    return history


def note(record: LabRecord, state: str, when: str | None = None) -> bool:
    """Record a power state seen or caused at ``when`` (ISO 8601 with an offset); True when it changed whether
    compute is billed."""
    billed = _billed(state)
    history = events(record)
    if billed is None or (history and _billed(history[-1][1]) == billed):
        return False
    history.append([when or now_iso(), state.lower().removeprefix("powerstate/")])
    return True


def intervals(record: LabRecord) -> list[Interval]:
    """The allocated intervals of the recorded events (with the tag's summary standing in for lost ones)."""
    found: list[Interval] = []
    opened: datetime | None = None
    for when, state in events(record):
        at = parse_time(when)
        if _billed(state) and opened is None:
            opened = at
        elif not _billed(state) and opened is not None:
            found.append(Interval(opened, at))
            opened = None
    if opened is not None:
        found.append(Interval(opened, None))
    return found


def summary_tag(record: LabRecord, now: datetime) -> str:
    """The tag value: seconds in closed intervals and the open interval's start."""
    spans = intervals(record)
    open_start = spans[-1].start if spans and spans[-1].stop is None else None
    closed = [s for s in spans if s.stop is not None]
    created = min((s.start for s in spans), default=now)
    seconds = allocated_seconds(closed, created, now)
    return f"{int(seconds)};{open_start.isoformat() if open_start else '-'}"


def restore(record: LabRecord, tag: str | None, created_at: str) -> None:
    """Events rebuilt from the tag when the state file was lost: one closed interval of the same length."""
    if not tag or events(record):
        return
    seconds_text, _, open_start = tag.partition(";")
    try:
        seconds = float(seconds_text)
        start = parse_time(created_at)
    except ValueError:
        return
    if seconds > 0:
        note(record, "running", start.isoformat())
        note(record, "deallocated", (start + timedelta(seconds=seconds)).isoformat())
    if open_start and open_start != "-":
        note(record, "running", open_start)


def lab_spend(record: LabRecord, prices: Any, now: datetime | None = None) -> SpendEstimate:
    """The spend of every node (they are started and stopped together, so one power history serves all)."""
    td = azure_data(record)
    created = parse_time(str(td.get("created_at") or record.created_at))
    return estimate(
        created, intervals(record), prices, spot=bool(td.get("spot")), now=now or datetime.now(timezone.utc)
    )


def save_tag(azure: Any, record: LabRecord) -> None:
    """Keep the summary on the resource group too (merged into its tags; a refusal only loses the copy)."""
    from labctl.errors import LabctlError
    from labctl.targets.azure.clients import arm

    rg = azure_data(record).get("resource_group")
    if not rg:
        return
    try:
        with arm("tagging the lab's power history"):
            group = azure.resources.resource_groups.get(rg)
            tags = dict(group.tags or {})
            tags[TAG_HISTORY] = summary_tag(record, datetime.now(timezone.utc))
            group.tags = tags
            azure.resources.resource_groups.create_or_update(rg, group)
    except LabctlError:
        pass


def plan_money(spec: Any, region: str, size: str) -> tuple[dict[str, Any], list[str]]:
    """What `up --dry-run` adds about money: the idle stop, the budget and which prices it used."""
    from labctl.pricing import lab_prices

    window = float(spec.idle_stop or 0)
    facts: dict[str, Any] = {"idle_stop_minutes": window, "budget_usd": spec.budget}
    lines = []
    if window or spec.budget is not None:
        lines.append(
            "  idle stop:      "
            + (f"after {window:g} idle minutes" if window else "off")
            + (f", or once ${spec.budget:.2f} is spent" if spec.budget is not None else "")
            + "; the VM deallocates itself with its own identity, whose role may only read and deallocate it"
        )
        lines.append("                  (giving it that role needs Owner or User Access Administrator; checked first)")
    else:
        lines.append("  idle stop:      off (--idle-stop 0); only the daily auto-shutdown stops the VM")
    nodes = int(getattr(spec, "nodes", None) or 1)
    prices = lab_prices(region, size, timeout=5.0).for_nodes(nodes)
    payg = prices.compute_per_hour(bool(spec.spot)) if prices.spot_per_hour or not spec.spot else None
    facts.update(price_source=prices.source, usd_per_hour=payg, fixed_usd_per_hour=round(prices.fixed_per_hour, 4))
    cost = f"${payg:.3f}/h while running" if payg is not None else "compute price unknown"
    parts = "disk and IP" if nodes == 1 else f"{nodes} disks and one IP"
    if nodes > 1 and payg is not None:
        cost += f" ({nodes} VMs x ${payg / nodes:.3f}/h)"
    lines.append(f"  prices:         {cost}, ${prices.fixed_per_hour:.3f}/h for {parts}; from {prices.source}")
    return facts, lines
