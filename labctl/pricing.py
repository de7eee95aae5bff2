"""Azure VM sizes (so that `up --dry-run` needs no credentials and a typo or retired size is caught before Azure is
called) and what a lab costs: per hour from the Retail Prices API (no login), a dated cache or the catalog, each price
saying which; since creation, as Azure bills compute for every second a VM is allocated (also "stopped" after an OS
shutdown; only deallocated stops it), and the OS disk and public IP for the lab's whole life."""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from labctl.errors import LabctlError, UsageError
from labctl.files import read_json_object, write_private
from labctl.state import from_dict, user_dir

_SIZE_NAME = re.compile(r"^standard_[a-z][a-z0-9]*(_[a-z0-9]+)*$")
DEFAULT_CPU_SIZE = "Standard_D4s_v5"
DEFAULT_GPU_SIZE = "Standard_NC4as_T4_v3"


@dataclass(frozen=True)
class VmSize:
    name: str
    vcpus: int
    memory_gib: float
    family: str  # the quota family name as compute usages report it
    usd_per_hour: float
    spot_usd_per_hour: float | None = None
    gpu_model: str | None = None
    gpu_count: int = 0
    # False: not in this table, taken as typed; the preflight fills its shape (resource SKUs) and price (0: unknown).
    catalogued: bool = True

    @property
    def gpu(self) -> bool:
        return self.gpu_count > 0

    def describe(self) -> str:
        if not self.vcpus:
            return f"{self.name} (not in labctl's catalog: its shape and price come from Azure at 'up')"
        gpu = f", {self.gpu_count}x {self.gpu_model}" if self.gpu else ""
        price = f"~${self.usd_per_hour:.2f}/h" if self.usd_per_hour > 0 else "price unknown"
        return f"{self.name} ({self.vcpus} vCPU, {self.memory_gib:g} GiB{gpu}, {price})"

    def hourly(self, spot: bool) -> float:
        if spot:
            return self.spot_usd_per_hour if self.spot_usd_per_hour is not None else round(self.usd_per_hour * 0.3, 4)
        return self.usd_per_hour


SIZES: dict[str, VmSize] = {
    s.name.lower(): s
    for s in (  # name, vCPUs, GiB, quota family, $/h, Spot $/h, GPU, GPUs (A10: full GPU sizes only)
        VmSize("Standard_B2s", 2, 4, "standardBSFamily", 0.0416),
        VmSize("Standard_B4ms", 4, 16, "standardBSFamily", 0.166),
        VmSize("Standard_D2s_v5", 2, 8, "standardDSv5Family", 0.096, 0.0192),
        VmSize("Standard_D4s_v5", 4, 16, "standardDSv5Family", 0.192, 0.0384),
        VmSize("Standard_D8s_v5", 8, 32, "standardDSv5Family", 0.384, 0.0768),
        VmSize("Standard_D16s_v5", 16, 64, "standardDSv5Family", 0.768, 0.1536),
        VmSize("Standard_D32s_v5", 32, 128, "standardDSv5Family", 1.536, 0.3072),
        VmSize("Standard_D4as_v5", 4, 16, "standardDASv5Family", 0.172, 0.0344),
        VmSize("Standard_D8as_v5", 8, 32, "standardDASv5Family", 0.344, 0.0688),
        VmSize("Standard_E4s_v5", 4, 32, "standardESv5Family", 0.252, 0.0504),
        VmSize("Standard_E8s_v5", 8, 64, "standardESv5Family", 0.504, 0.1008),
        VmSize("Standard_F8s_v2", 8, 16, "standardFSv2Family", 0.338, 0.0676),
        VmSize("Standard_F16s_v2", 16, 32, "standardFSv2Family", 0.677, 0.1354),
        VmSize("Standard_NC4as_T4_v3", 4, 28, "standardNCASv3_T4Family", 0.526, 0.1578, "NVIDIA T4", 1),
        VmSize("Standard_NC8as_T4_v3", 8, 56, "standardNCASv3_T4Family", 0.752, 0.2256, "NVIDIA T4", 1),
        VmSize("Standard_NC16as_T4_v3", 16, 110, "standardNCASv3_T4Family", 1.204, 0.3612, "NVIDIA T4", 1),
        VmSize("Standard_NC64as_T4_v3", 64, 440, "standardNCASv3_T4Family", 4.352, 1.3056, "NVIDIA T4", 4),
        VmSize("Standard_NV36ads_A10_v5", 36, 440, "StandardNVADSA10v5Family", 3.20, 0.96, "NVIDIA A10", 1),
        VmSize("Standard_NC24ads_A100_v4", 24, 220, "StandardNCADSA100v4Family", 3.673, 1.1019, "NVIDIA A100 80GB", 1),
        VmSize("Standard_NC48ads_A100_v4", 48, 440, "StandardNCADSA100v4Family", 7.346, 2.2038, "NVIDIA A100 80GB", 2),
        VmSize("Standard_NC96ads_A100_v4", 96, 880, "StandardNCADSA100v4Family", 14.692, 4.4076, "NVIDIA A100 80GB", 4),
        VmSize("Standard_NC40ads_H100_v5", 40, 320, "standardNCadsH100v5Family", 6.98, 2.094, "NVIDIA H100 NVL", 1),
        VmSize("Standard_NC80adis_H100_v5", 80, 640, "standardNCadsH100v5Family", 13.96, 4.188, "NVIDIA H100 NVL", 2),
        VmSize("Standard_ND96asr_v4", 96, 900, "standardNDASv4_A100Family", 27.197, 8.16, "NVIDIA A100 40GB", 8),
    )
}

GPU_ALTERNATIVES = ("Standard_NC4as_T4_v3", "Standard_NC24ads_A100_v4", "Standard_NC40ads_H100_v5")

# Sizes Azure has retired, with the series name and GPU, so that old tutorials' sizes get a clear answer.
RETIRED = {
    f"standard_{name}".lower(): series
    for series, names in (
        ("NC (K80), NVIDIA K80", "NC6 NC12 NC24 NC24r"),
        ("NCv2 (P100), NVIDIA P100", "NC6s_v2 NC12s_v2 NC24s_v2 NC24rs_v2"),
        ("NCv3 (V100), NVIDIA V100", "NC6s_v3 NC12s_v3 NC24s_v3 NC24rs_v3"),
        ("ND (P40), NVIDIA P40", "ND6s ND12s ND24s ND24rs"),
        ("NV (M60), NVIDIA M60", "NV6 NV12 NV24"),
    )
    for name in names.split()
}


def lookup(name: str, what: str = "--size") -> VmSize:
    key = "standard_" + name.strip().lower().removeprefix("standard_")
    if key in SIZES:
        return SIZES[key]
    if key in RETIRED:
        raise UsageError(
            f"The VM size {name} belongs to the retired {RETIRED[key]} series; Azure no longer offers it.",
            hint=f"Use a current GPU size instead, for example {', '.join(GPU_ALTERNATIVES)} (see 'labctl up --help').",
        )
    if _SIZE_NAME.match(key) and len(key) <= 64:  # any size the subscription offers; the preflight checks it there
        typed = name.strip() if name.strip().lower().startswith("standard_") else f"Standard_{name.strip()}"
        return VmSize(typed, 0, 0, "", 0.0, catalogued=False)
    close = difflib.get_close_matches(key, list(SIZES), n=3, cutoff=0.6)
    suggestion = ", ".join(SIZES[c].name for c in close) if close else f"{DEFAULT_CPU_SIZE} or {DEFAULT_GPU_SIZE}"
    raise UsageError(
        f"labctl does not know the VM size {name!r} ({what}): Azure's size names are letters, digits and '_'.",
        hint=f"Did you mean {suggestion}? Known sizes: {', '.join(s.name for s in SIZES.values())}.",
    )


def choose_sizes(requested: list[str], gpu: bool) -> list[VmSize]:
    if not requested:
        return [SIZES[(DEFAULT_GPU_SIZE if gpu else DEFAULT_CPU_SIZE).lower()]]
    sizes = [lookup(name) for name in requested]
    if gpu:
        cpu_only = [s.name for s in sizes if not s.gpu]
        if cpu_only:
            raise UsageError(
                f"--gpu was given but {', '.join(cpu_only)} has no GPU.",
                hint=f"Pick GPU sizes (for example {', '.join(GPU_ALTERNATIVES)}) or drop --gpu.",
            )
    return list({size.name: size for size in sizes}.values())  # each once, in the order asked


PRICES_URL_ENV = "LABCTL_PRICES_URL"
API_VERSION = "2023-01-01-preview"  # from this one on, filter values are case-sensitive: Azure's own spelling
HOURS_PER_MONTH = 730  # Azure's monthly prices are 730 hours
MAX_AGE = timedelta(days=7)
MAX_PAGES = 20
CACHE_FILE = "retail-prices.json"
DISK_TIER = "P15"  # the DSVM's 150 GiB OS disk is billed as the Premium SSD tier it fits in
CATALOG_SOURCE = "labctl's built-in catalog (approximate US list prices)"
# The workspace disk an Azure lab keeps /workspace on: a Standard SSD of 64 GiB, billed as tier E6 whether attached or
# not; Azure's managed disk pricing page lists E6 LRS at $4.80 a month (East US, pay-as-you-go).
WORKSPACE_DISK_SKU, WORKSPACE_DISK_GB, WORKSPACE_DISK_USD_PER_MONTH = "StandardSSD_LRS", 64, 4.80
# What a lab pays besides its VMs: field, price list filter, unit, meter, and the US list price (USD) used offline.
_DISK = f"serviceName eq 'Storage' and productName eq 'Premium SSD Managed Disks' and skuName eq '{DISK_TIER} LRS'"
_IP = "serviceName eq 'Virtual Network' and productName eq 'IP Addresses' and skuName eq 'Standard'"
_NAT = "productName eq 'NAT Gateway' and skuName eq 'Standard'"
EXTRAS = (
    ("disk_per_month", _DISK, "1/Month", f"{DISK_TIER} LRS Disk", 38.02),
    ("public_ip_per_hour", _IP, "1 Hour", "Standard IPv4 Static Public IP", 0.005),
    ("nat_gateway_per_hour", _NAT, "1 Hour", "Standard Gateway", 0.045),
)
OFFLINE: dict[str, Any] = {field: usd for field, *_, usd in EXTRAS}
_BILLED = dict.fromkeys(("starting", "running", "stopping", "stopped"), True)
_BILLED.update(deallocating=False, deallocated=False)


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
    def fixed_per_hour(self) -> float:
        """What the lab costs per hour even while deallocated: its OS disk and public IP."""
        return self.disk_per_month / HOURS_PER_MONTH + self.public_ip_per_hour

    def for_nodes(self, nodes: int) -> LabPrices:
        """One public IP, compute and a disk per VM; workers go out through a NAT gateway, with its own public IP."""
        way_out = self.public_ip_per_hour + self.nat_gateway_per_hour if nodes > 1 else 0.0
        return replace(
            self,
            payg_per_hour=self.payg_per_hour * nodes,
            spot_per_hour=None if self.spot_per_hour is None else self.spot_per_hour * nodes,
            disk_per_month=self.disk_per_month * nodes,
            public_ip_per_hour=self.public_ip_per_hour + way_out,
        )


def _price(items: list[dict[str, Any]], unit: str) -> float | None:
    """Primary region and latest first; Windows meters' ``productName`` ends in " Windows"."""
    linux = [i for i in items if i.get("type") == "Consumption" and not str(i.get("productName")).endswith("Windows")]
    rows = [i for i in linux if i.get("unitOfMeasure") == unit and float(i.get("retailPrice") or 0) > 0]
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
    return LabPrices(region, size, payg, spot, source=f"Azure Retail Prices API ({today})", fetched_on=today, **extras)


def lab_prices(region: str, size: str, *, now: datetime | None = None, timeout: float = 10.0) -> LabPrices:
    """A fresh cached answer, else the API (then cached), else a stale cache, else the catalog."""
    known = SIZES.get(size.strip().lower())
    size = known.name if known else size.strip()
    key, cache = f"{region.lower()}/{size.lower()}/{DISK_TIER}", user_dir("cache") / CACHE_FILE
    try:  # read as a lab record is: a key an older labctl wrote (currency) is dropped
        cached: LabPrices | None = from_dict(LabPrices, read_json_object(cache).get(key), "the cached price")
    except ValueError:
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
        write_private(cache, json.dumps({**read_json_object(cache), key: asdict(fresh)}, indent=1))
    return fresh


@dataclass(frozen=True)
class Interval:
    start: datetime
    stop: datetime | None = None  # None: still allocated
    usd_per_hour: float | None = None  # the compute $/h in force while it ran (a resize changes it); None: today's


def billed(state: str) -> bool | None:
    """Whether Azure bills compute in a power state (``PowerState/running`` or ``running``); None: not known."""
    return _BILLED.get(state.lower().removeprefix("powerstate/"))


def intervals_from_events(events: Iterable[tuple[Any, ...]]) -> list[Interval]:
    """Allocated intervals from power-state changes ``(when, state[, $/h])``; unknown states are ignored."""
    intervals: list[Interval] = []
    for when, state, *rate in sorted(events, key=lambda e: e[0]):
        allocated = bool(intervals) and intervals[-1].stop is None
        if billed(state) and not allocated:
            intervals.append(Interval(when, None, float(rate[0]) if rate else None))
        elif billed(state) is False and allocated:
            intervals[-1] = replace(intervals[-1], stop=when)
    return intervals


def _stretches(intervals: Iterable[Interval], created_at: datetime, now: datetime) -> Iterator[Interval]:
    """The allocated time within the lab's life, each second once (overlaps count once), with its $/h."""
    counted_to = created_at
    for interval in sorted(intervals, key=lambda i: (i.start, i.stop or now)):
        start, end = max(interval.start, created_at, counted_to), min(interval.stop or now, now)
        if end > start:
            yield Interval(start, end, interval.usd_per_hour)
            counted_to = end


def allocated_seconds(intervals: Iterable[Interval], created_at: datetime, now: datetime) -> float:
    return sum((s.stop or now).timestamp() - s.start.timestamp() for s in _stretches(intervals, created_at, now))


def estimate(
    created_at: datetime, intervals: Iterable[Interval], prices: LabPrices, *, spot: bool, now: datetime
) -> dict[str, Any]:
    """compute_per_hour: what another hour allocated costs (compute plus the fixed parts)."""
    life = max(0.0, (now - created_at).total_seconds()) / 3600
    rate, stretches = prices.compute_per_hour(spot), list(_stretches(intervals, created_at, now))
    hours = [((s.stop or now) - s.start).total_seconds() / 3600 for s in stretches]
    compute = sum(
        h * (rate if s.usd_per_hour is None else s.usd_per_hour) for h, s in zip(hours, stretches, strict=True)
    )
    disk = life * prices.disk_per_month / HOURS_PER_MONTH
    ip = life * prices.public_ip_per_hour
    return {
        "total_usd": round(compute + disk + ip, 6),
        "compute_usd": round(compute, 6),
        "disk_usd": round(disk, 6),
        "public_ip_usd": round(ip, 6),
        "allocated_hours": sum(hours),
        "life_hours": life,
        "compute_per_hour": rate + prices.fixed_per_hour,
        "spot": spot,
        "source": prices.source,
    }
