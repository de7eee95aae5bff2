"""What a lab has cost since it was made. Azure bills compute for every second a VM is allocated (also "stopped"
after an OS shutdown; only deallocated stops it), and the OS disk and public IP for the lab's whole life."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from labctl.pricing import LabPrices

# Power states (the instance view's ``PowerState/...`` codes) during which Azure bills compute.
BILLED_STATES = frozenset({"starting", "running", "stopping", "stopped"})
UNBILLED_STATES = frozenset({"deallocating", "deallocated"})


@dataclass(frozen=True)
class Interval:
    start: datetime
    stop: datetime | None = None  # None: still allocated


@dataclass(frozen=True)
class SpendEstimate:
    total_usd: float
    compute_usd: float
    disk_usd: float
    public_ip_usd: float
    allocated_hours: float
    life_hours: float
    compute_per_hour: float  # what another hour allocated costs (compute plus the fixed parts)
    spot: bool
    source: str

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def intervals_from_events(events: Iterable[tuple[datetime, str]]) -> list[Interval]:
    """Allocated intervals from power-state changes ``(when, state)``; unknown states are ignored."""
    intervals: list[Interval] = []
    opened: datetime | None = None
    for when, state in sorted(events, key=lambda e: e[0]):
        code = state.lower().removeprefix("powerstate/")
        if code in BILLED_STATES and opened is None:
            opened = when
        elif code in UNBILLED_STATES and opened is not None:
            intervals.append(Interval(opened, when))
            opened = None
    if opened is not None:
        intervals.append(Interval(opened, None))
    return intervals


def allocated_seconds(intervals: Iterable[Interval], created_at: datetime, now: datetime) -> float:
    """Overlaps count once."""
    total, counted_to = 0.0, created_at
    for start, end in sorted((max(i.start, created_at), min(i.stop or now, now)) for i in intervals):
        start = max(start, counted_to)
        if end > start:
            total += (end - start).total_seconds()
            counted_to = end
    return total


def estimate(
    created_at: datetime, intervals: Iterable[Interval], prices: LabPrices, *, spot: bool, now: datetime
) -> SpendEstimate:
    life = max(0.0, (now - created_at).total_seconds()) / 3600
    allocated = allocated_seconds(intervals, created_at, now) / 3600
    rate = prices.compute_per_hour(spot)
    compute = allocated * rate
    disk = life * prices.disk_per_hour
    ip = life * prices.public_ip_per_hour
    return SpendEstimate(
        total_usd=round(compute + disk + ip, 6),
        compute_usd=round(compute, 6),
        disk_usd=round(disk, 6),
        public_ip_usd=round(ip, 6),
        allocated_hours=allocated,
        life_hours=life,
        compute_per_hour=rate + prices.fixed_per_hour,
        spot=spot,
        source=prices.source,
    )
