"""What a lab costs per hour in its region: the Azure Retail Prices API (public, no login), a dated local cache,
the catalog offline; a price always says where it came from. And what a lab has cost since it was made: Azure bills
compute for every second a VM is allocated (also "stopped" after an OS shutdown; only deallocated stops it), and the
OS disk and public IP for the lab's whole life."""

from __future__ import annotations

import contextlib
import json
import os
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from labctl import catalog
from labctl.errors import LabctlError
from labctl.files import write_private
from labctl.state import user_dir

PRICES_URL_ENV = "LABCTL_PRICES_URL"
API_VERSION = "2023-01-01-preview"  # from this one on, filter values are case-sensitive: Azure's own spelling
HOURS_PER_MONTH = 730  # Azure's monthly prices are 730 hours
MAX_AGE = timedelta(days=7)
MAX_PAGES = 20
CACHE_FILE = "retail-prices.json"
DISK_TIER = "P15"  # the DSVM's 150 GiB OS disk is billed as the Premium SSD tier it fits in
CATALOG_SOURCE = "labctl's built-in catalog (approximate US list prices)"
# What a lab pays besides its VMs: the field, the price list's filter, unit and meter, and the approximate US
# list price (USD) used offline.
_DISK = f"serviceName eq 'Storage' and productName eq 'Premium SSD Managed Disks' and skuName eq '{DISK_TIER} LRS'"
_IP = "serviceName eq 'Virtual Network' and productName eq 'IP Addresses' and skuName eq 'Standard'"
_NAT = "productName eq 'NAT Gateway' and skuName eq 'Standard'"
EXTRAS = (
    ("disk_per_month", _DISK, "1/Month", f"{DISK_TIER} LRS Disk", 38.02),
    ("public_ip_per_hour", _IP, "1 Hour", "Standard IPv4 Static Public IP", 0.005),
    ("nat_gateway_per_hour", _NAT, "1 Hour", "Standard Gateway", 0.045),
)
OFFLINE: dict[str, Any] = {field: usd for field, *_, usd in EXTRAS}
# Power states (the instance view's ``PowerState/...`` codes) during which Azure bills compute, and those it does not.
BILLED_STATES = frozenset({"starting", "running", "stopping", "stopped"})
UNBILLED_STATES = frozenset({"deallocating", "deallocated"})


class PriceUnavailable(LabctlError):
    pass


@dataclass(frozen=True)
class LabPrices:
    region: str
    size: str
    payg_per_hour: float
    spot_per_hour: float | None
    disk_per_month: float
    public_ip_per_hour: float
    source: str
    fetched_on: str | None = None  # the date the API answered (None for the catalog)
    nat_gateway_per_hour: float = OFFLINE["nat_gateway_per_hour"]

    def compute_per_hour(self, spot: bool) -> float:
        if spot:
            if self.spot_per_hour is None:
                raise PriceUnavailable(f"There is no Spot price for {self.size} in {self.region}.")
            return self.spot_per_hour
        return self.payg_per_hour

    @property
    def disk_per_hour(self) -> float:
        return self.disk_per_month / HOURS_PER_MONTH

    @property
    def fixed_per_hour(self) -> float:
        """What the lab costs per hour even while deallocated: its OS disk and public IP."""
        return self.disk_per_hour + self.public_ip_per_hour

    def for_nodes(self, nodes: int) -> LabPrices:
        """Compute and an OS disk for each VM, one public IP; several nodes add the workers' way out, a NAT gateway
        with a public IP of its own (counted with the IPs)."""
        way_out = self.public_ip_per_hour + self.nat_gateway_per_hour if nodes > 1 else 0.0
        return replace(
            self,
            payg_per_hour=self.payg_per_hour * nodes,
            spot_per_hour=None if self.spot_per_hour is None else self.spot_per_hour * nodes,
            disk_per_month=self.disk_per_month * nodes,
            public_ip_per_hour=self.public_ip_per_hour + way_out,
        )


def _price(items: list[dict[str, Any]], unit: str) -> float | None:
    """The Linux consumption meter in ``unit``, primary region and latest first (Windows
    meters' ``productName`` ends in " Windows")."""
    rows = [
        i
        for i in items
        if i.get("type") == "Consumption"
        and i.get("unitOfMeasure") == unit
        and float(i.get("retailPrice") or 0) > 0
        and not str(i.get("productName", "")).endswith("Windows")
    ]
    ranked = sorted(rows, key=lambda r: (bool(r.get("isPrimaryMeterRegion", True)), str(r.get("effectiveStartDate"))))
    return float(ranked[-1]["retailPrice"]) if ranked else None


def _fetch_items(odata_filter: str, timeout: float) -> list[dict[str, Any]]:
    """Every page of ``{"Items": [...], "NextPageLink": ...}``."""
    query = urllib.parse.urlencode({"api-version": API_VERSION, "meterRegion": "'primary'", "$filter": odata_filter})
    url: str | None = f"{os.environ.get(PRICES_URL_ENV) or 'https://prices.azure.com/api/retail/prices'}?{query}"
    items: list[dict[str, Any]] = []
    for _ in range(MAX_PAGES):
        if not url:
            break
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            page = json.loads(answer.read().decode())
        items.extend(page.get("Items") or [])
        url = page.get("NextPageLink") or None
    return items


def _fetch_lab_prices(region: str, size: str, timeout: float) -> LabPrices:
    where = f"armRegionName eq '{region}'"
    query = f"serviceName eq 'Virtual Machines' and {where} and armSkuName eq '{size}' and priceType eq 'Consumption'"
    vms = _fetch_items(query, timeout)

    def vm(item: dict[str, Any], spot: bool) -> bool:  # Spot meters' skuName ends in " Spot"
        sku = str(item.get("skuName", ""))
        same_size = str(item.get("armSkuName", "")).lower() == size.lower()
        return same_size and sku.endswith(" Spot") == spot and not sku.endswith(" Low Priority")

    payg = _price([i for i in vms if vm(i, False)], "1 Hour")
    if payg is None:
        raise PriceUnavailable(f"The Azure price list has no Linux price for {size} in {region}.")
    extras = {}
    for field, odata, unit, meter, usd in EXTRAS:
        items = _fetch_items(f"{odata} and {where}", timeout)
        found = _price([i for i in items if i.get("meterName") == meter], unit)
        extras[field] = usd if found is None else found
    today = datetime.now(timezone.utc).date().isoformat()
    spot = _price([i for i in vms if vm(i, True)], "1 Hour")
    source = f"Azure Retail Prices API ({today})"
    return LabPrices(region, size, payg, spot, source=source, fetched_on=today, **extras)


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads((user_dir("cache") / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def lab_prices(region: str, size: str, *, now: datetime | None = None, timeout: float = 10.0) -> LabPrices:
    """A fresh cached answer, else the API (then cached), else a stale cache, else the catalog."""
    known = catalog.SIZES.get(size.strip().lower())
    size = known.name if known else size.strip()
    key = f"{region.lower()}/{size.lower()}/{DISK_TIER}"
    entry = _read_cache().get(key)
    try:
        known_keys = {f.name for f in fields(LabPrices)}  # an older labctl wrote keys no longer read (currency)
        cached = LabPrices(**{k: v for k, v in entry.items() if k in known_keys}) if isinstance(entry, dict) else None
    except TypeError:
        cached = None
    if cached is not None and cached.fetched_on:
        age = (now or datetime.now(timezone.utc)).date() - datetime.fromisoformat(cached.fetched_on).date()
        if age <= MAX_AGE:
            return replace(cached, source=f"Azure Retail Prices API (cached {cached.fetched_on})")
    try:
        fresh = _fetch_lab_prices(region, size, timeout)
    except (OSError, ValueError, PriceUnavailable) as exc:
        reason = "not listed there" if isinstance(exc, PriceUnavailable) else "price service unreachable"
        if cached is not None:
            return replace(cached, source=f"Azure Retail Prices API (cached {cached.fetched_on}; {reason})")
        if known is None:
            raise PriceUnavailable(
                f"No price is known for {size}: the Azure price list could not be read and the catalog lacks it.",
                hint="Check the network, or see https://azure.microsoft.com/pricing/details/virtual-machines/linux/.",
            ) from None
        payg, spot = known.usd_per_hour, known.hourly(True)
        return LabPrices(region, known.name, payg, spot, source=f"{CATALOG_SOURCE}; {reason}", **OFFLINE)
    with contextlib.suppress(OSError):  # a cache that cannot be written only costs a later lookup
        write_private(user_dir("cache") / CACHE_FILE, json.dumps({**_read_cache(), key: asdict(fresh)}, indent=1))
    return fresh


@dataclass(frozen=True)
class Interval:
    start: datetime
    stop: datetime | None = None  # None: still allocated


def billed(state: str) -> bool | None:
    """Whether Azure bills compute in a power state (``PowerState/running`` or ``running``); None: not known."""
    code = state.lower().removeprefix("powerstate/")
    return True if code in BILLED_STATES else False if code in UNBILLED_STATES else None


def intervals_from_events(events: Iterable[tuple[datetime, str]]) -> list[Interval]:
    """Allocated intervals from power-state changes ``(when, state)``; unknown states are ignored."""
    intervals: list[Interval] = []
    opened: datetime | None = None
    for when, state in sorted(events, key=lambda e: e[0]):
        compute_billed = billed(state)
        if compute_billed and opened is None:
            opened = when
        elif compute_billed is False and opened is not None:
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
) -> dict[str, Any]:
    """The spend so far, as ``status`` shows it; compute_per_hour: what another hour allocated costs (compute plus
    the fixed parts)."""
    life = max(0.0, (now - created_at).total_seconds()) / 3600
    allocated = allocated_seconds(intervals, created_at, now) / 3600
    rate = prices.compute_per_hour(spot)
    compute = allocated * rate
    disk = life * prices.disk_per_hour
    ip = life * prices.public_ip_per_hour
    return {
        "total_usd": round(compute + disk + ip, 6),
        "compute_usd": round(compute, 6),
        "disk_usd": round(disk, 6),
        "public_ip_usd": round(ip, 6),
        "allocated_hours": allocated,
        "life_hours": life,
        "compute_per_hour": rate + prices.fixed_per_hour,
        "spot": spot,
        "source": prices.source,
    }
