"""What a lab costs per hour in its region: the Azure Retail Prices API, a dated local cache, the catalog offline.

The Retail Prices API (``https://prices.azure.com/api/retail/prices``) is public and needs no login. It answers
``{"Items": [...], "NextPageLink": ..., "Count": n}``; each item has ``retailPrice``, ``unitOfMeasure``
(``"1 Hour"`` for VMs and IPs, ``"1/Month"`` for disks), ``type`` (``Consumption``, ``DevTestConsumption``,
``Reservation``), ``armRegionName``, ``armSkuName``, ``productName`` (Windows meters end in ``" Windows"``) and
``skuName`` (Spot meters end in ``" Spot"``, the retired low-priority ones in ``" Low Priority"``). Filter values
are case-sensitive from api-version 2023-01-01-preview on, so sizes are asked for in Azure's own spelling.

A lab pays for compute while its VM is allocated, and for its OS disk and Standard public IP for its whole life.
:func:`lab_prices` returns all three with the source it used, so a spend shown to the user always says where its
prices came from. ``LABCTL_PRICES_URL`` points it at another endpoint (tests use one on 127.0.0.1) and
``LABCTL_CACHE_DIR`` moves the cache.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from labctl import catalog
from labctl.errors import LabctlError

PRICES_URL_ENV = "LABCTL_PRICES_URL"
CACHE_ENV = "LABCTL_CACHE_DIR"
DEFAULT_PRICES_URL = "https://prices.azure.com/api/retail/prices"
API_VERSION = "2023-01-01-preview"
HOURS_PER_MONTH = 730  # Azure's monthly prices are 730 hours
MAX_AGE = timedelta(days=7)
MAX_PAGES = 20
CACHE_FILE = "retail-prices.json"

# Premium SSD tiers (GiB): a disk is billed as the smallest tier it fits in. The DSVM's OS disk is 150 GiB: P15.
PREMIUM_TIERS = (("P4", 32), ("P6", 64), ("P10", 128), ("P15", 256), ("P20", 512), ("P30", 1024), ("P40", 2048))
DEFAULT_DISK_TIER = "P15"
# Offline fallbacks: approximate US pay-as-you-go list prices (USD).
FALLBACK_DISK_PER_MONTH = {"P4": 5.28, "P6": 10.21, "P10": 19.71, "P15": 38.02, "P20": 73.22, "P30": 135.17}
FALLBACK_PUBLIC_IP_PER_HOUR = 0.005
CATALOG_SOURCE = "labctl's built-in catalog (approximate US list prices)"


class PriceUnavailable(LabctlError):
    pass


@dataclass(frozen=True)
class LabPrices:
    """The prices of one lab's parts in one region, and where they came from."""

    region: str
    size: str
    payg_per_hour: float
    spot_per_hour: float | None
    disk_per_month: float
    public_ip_per_hour: float
    currency: str
    source: str
    fetched_on: str | None = None  # the date the API answered (None for the catalog)

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
        """The prices of a lab of ``nodes`` VMs of this size: compute and OS disks for each, one public IP."""
        if nodes == 1:
            return self
        return replace(
            self,
            payg_per_hour=self.payg_per_hour * nodes,
            spot_per_hour=None if self.spot_per_hour is None else self.spot_per_hour * nodes,
            disk_per_month=self.disk_per_month * nodes,
        )


def disk_tier_for(gib: float) -> str:
    for tier, size in PREMIUM_TIERS:
        if gib <= size:
            return tier
    return PREMIUM_TIERS[-1][0]


# --------------------------------------------------------------------------------------------- reading items


def _best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The primary-region meter with the latest start date."""
    ranked = sorted(rows, key=lambda r: (bool(r.get("isPrimaryMeterRegion", True)), str(r.get("effectiveStartDate"))))
    return ranked[-1] if ranked else None


def _consumption(items: list[dict[str, Any]], unit: str) -> list[dict[str, Any]]:
    return [
        i
        for i in items
        if i.get("type") == "Consumption" and i.get("unitOfMeasure") == unit and float(i.get("retailPrice") or 0) > 0
    ]


def vm_rates(items: list[dict[str, Any]], size: str) -> tuple[float | None, float | None]:
    """(pay-as-you-go, Spot) hourly Linux prices of ``size`` among the items; Windows and low-priority left out."""
    payg: list[dict[str, Any]] = []
    spot: list[dict[str, Any]] = []
    for item in _consumption(items, "1 Hour"):
        if str(item.get("armSkuName", "")).lower() != size.lower():
            continue
        if str(item.get("productName", "")).endswith("Windows"):
            continue
        sku = str(item.get("skuName", ""))
        if sku.endswith(" Low Priority"):
            continue
        (spot if sku.endswith(" Spot") else payg).append(item)
    best_payg, best_spot = _best(payg), _best(spot)
    return (
        float(best_payg["retailPrice"]) if best_payg else None,
        float(best_spot["retailPrice"]) if best_spot else None,
    )


def disk_rate(items: list[dict[str, Any]], tier: str) -> float | None:
    rows = [i for i in _consumption(items, "1/Month") if i.get("meterName") == f"{tier} LRS Disk"]
    best = _best(rows)
    return float(best["retailPrice"]) if best else None


def public_ip_rate(items: list[dict[str, Any]]) -> float | None:
    rows = [i for i in _consumption(items, "1 Hour") if i.get("meterName") == "Standard IPv4 Static Public IP"]
    best = _best(rows)
    return float(best["retailPrice"]) if best else None


# --------------------------------------------------------------------------------------------- the API


def prices_url() -> str:
    return os.environ.get(PRICES_URL_ENV, DEFAULT_PRICES_URL)


def fetch_items(odata_filter: str, *, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every item matching ``odata_filter``, following ``NextPageLink``."""
    query = urllib.parse.urlencode({"api-version": API_VERSION, "meterRegion": "'primary'", "$filter": odata_filter})
    url: str | None = f"{prices_url()}?{query}"
    items: list[dict[str, Any]] = []
    for _ in range(MAX_PAGES):
        if not url:
            return items
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            page = json.loads(answer.read().decode())
        items.extend(page.get("Items") or [])
        url = page.get("NextPageLink") or None
    return items


def _canonical(size: str) -> str:
    known = catalog.SIZES.get(size.strip().lower())
    return known.name if known else size.strip()


def fetch_lab_prices(region: str, size: str, disk_tier: str = DEFAULT_DISK_TIER, timeout: float = 10.0) -> LabPrices:
    """Ask the API (three small queries); PriceUnavailable when it does not know the size there."""
    size = _canonical(size)
    vm_filter = (
        f"serviceName eq 'Virtual Machines' and armRegionName eq '{region}' and armSkuName eq '{size}'"
        " and priceType eq 'Consumption'"
    )
    payg, spot = vm_rates(fetch_items(vm_filter, timeout=timeout), size)
    if payg is None:
        raise PriceUnavailable(f"The Azure price list has no Linux price for {size} in {region}.")
    disk_filter = (
        f"serviceName eq 'Storage' and armRegionName eq '{region}' and productName eq 'Premium SSD Managed Disks'"
        f" and skuName eq '{disk_tier} LRS'"
    )
    disk = disk_rate(fetch_items(disk_filter, timeout=timeout), disk_tier)
    ip_filter = (
        f"serviceName eq 'Virtual Network' and armRegionName eq '{region}' and productName eq 'IP Addresses'"
        " and skuName eq 'Standard'"
    )
    ip = public_ip_rate(fetch_items(ip_filter, timeout=timeout))
    today = datetime.now(timezone.utc).date().isoformat()
    return LabPrices(
        region=region,
        size=size,
        payg_per_hour=payg,
        spot_per_hour=spot,
        disk_per_month=disk if disk is not None else FALLBACK_DISK_PER_MONTH.get(disk_tier, 0.0),
        public_ip_per_hour=ip if ip is not None else FALLBACK_PUBLIC_IP_PER_HOUR,
        currency="USD",
        source=f"Azure Retail Prices API ({today})",
        fetched_on=today,
    )


def catalog_prices(region: str, size: str, disk_tier: str = DEFAULT_DISK_TIER) -> LabPrices:
    known = catalog.SIZES.get(size.strip().lower())
    if known is None:
        raise PriceUnavailable(
            f"No price is known for {size}: the Azure price list could not be read and the catalog lacks it.",
            hint="Check the network, or see https://azure.microsoft.com/pricing/details/virtual-machines/linux/.",
        )
    return LabPrices(
        region=region,
        size=known.name,
        payg_per_hour=known.usd_per_hour,
        spot_per_hour=known.hourly(True),
        disk_per_month=FALLBACK_DISK_PER_MONTH.get(disk_tier, 0.0),
        public_ip_per_hour=FALLBACK_PUBLIC_IP_PER_HOUR,
        currency="USD",
        source=CATALOG_SOURCE,
    )


# --------------------------------------------------------------------------------------------- the cache


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("labctl", appauthor=False))


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads((cache_dir() / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, prices: LabPrices) -> None:
    data = _read_cache()
    data[key] = asdict(prices)
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f".{CACHE_FILE}.{os.getpid()}"
        temporary.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(temporary, folder / CACHE_FILE)
    except OSError:
        pass  # a cache that cannot be written only costs a later lookup


def _cached(key: str) -> LabPrices | None:
    entry = _read_cache().get(key)
    try:
        return LabPrices(**entry) if isinstance(entry, dict) else None
    except TypeError:
        return None


def lab_prices(
    region: str,
    size: str,
    *,
    disk_tier: str = DEFAULT_DISK_TIER,
    max_age: timedelta = MAX_AGE,
    now: datetime | None = None,
    timeout: float = 10.0,
) -> LabPrices:
    """The lab's prices: a fresh cached answer, else the API (then cached), else a stale cache, else the catalog."""
    now = now or datetime.now(timezone.utc)
    key = f"{region.lower()}/{_canonical(size).lower()}/{disk_tier}"
    cached = _cached(key)
    if cached is not None and cached.fetched_on:
        age = now.date() - datetime.fromisoformat(cached.fetched_on).date()
        if age <= max_age:
            return _replace_source(cached, f"Azure Retail Prices API (cached {cached.fetched_on})")
    try:
        fresh = fetch_lab_prices(region, size, disk_tier, timeout)
    except (OSError, ValueError, PriceUnavailable) as exc:
        reason = "not listed there" if isinstance(exc, PriceUnavailable) else "price service unreachable"
        if cached is not None:
            return _replace_source(cached, f"Azure Retail Prices API (cached {cached.fetched_on}; {reason})")
        fallback = catalog_prices(region, size, disk_tier)
        return _replace_source(fallback, f"{CATALOG_SOURCE}; {reason}")
    _write_cache(key, fresh)
    return fresh


def _replace_source(prices: LabPrices, source: str) -> LabPrices:
    return replace(prices, source=source)
