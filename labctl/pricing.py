"""What a lab costs per hour in its region: the Azure Retail Prices API, a dated local cache, the catalog offline.

The API (public, no login) pages ``{"Items": [...], "NextPageLink": ...}``; Windows meters' ``productName`` ends in
" Windows", Spot meters' ``skuName`` in " Spot". Filter values are case-sensitive from api-version
2023-01-01-preview on, so sizes are asked for in Azure's own spelling. A price always says where it came from.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from labctl import catalog
from labctl.errors import LabctlError
from labctl.state import user_dir

PRICES_URL_ENV = "LABCTL_PRICES_URL"
API_VERSION = "2023-01-01-preview"
HOURS_PER_MONTH = 730  # Azure's monthly prices are 730 hours
MAX_AGE = timedelta(days=7)
MAX_PAGES = 20
CACHE_FILE = "retail-prices.json"
DISK_TIER = "P15"  # the DSVM's 150 GiB OS disk is billed as the Premium SSD tier it fits in
# Offline fallbacks: approximate US pay-as-you-go list prices (USD).
FALLBACK_DISK_PER_MONTH = 38.02
FALLBACK_PUBLIC_IP_PER_HOUR = 0.005
FALLBACK_NAT_GATEWAY_PER_HOUR = 0.045
CATALOG_SOURCE = "labctl's built-in catalog (approximate US list prices)"


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
    currency: str
    source: str
    fetched_on: str | None = None  # the date the API answered (None for the catalog)
    nat_gateway_per_hour: float = FALLBACK_NAT_GATEWAY_PER_HOUR

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
        """The prices of a lab of ``nodes`` VMs of this size: compute and OS disks for each, one public IP; several
        nodes add the workers' way out, a NAT gateway with a public IP of its own (counted with the IPs)."""
        way_out = self.public_ip_per_hour + self.nat_gateway_per_hour if nodes > 1 else 0.0
        return replace(
            self,
            payg_per_hour=self.payg_per_hour * nodes,
            spot_per_hour=None if self.spot_per_hour is None else self.spot_per_hour * nodes,
            disk_per_month=self.disk_per_month * nodes,
            public_ip_per_hour=self.public_ip_per_hour + way_out,
        )


def _price(items: list[dict[str, Any]], unit: str, keep: Callable[[dict[str, Any]], bool]) -> float | None:
    """The price of the primary-region Linux consumption meter in ``unit`` that ``keep`` accepts, latest first."""
    rows = [
        i
        for i in items
        if i.get("type") == "Consumption"
        and i.get("unitOfMeasure") == unit
        and float(i.get("retailPrice") or 0) > 0
        and not str(i.get("productName", "")).endswith("Windows")
        and keep(i)
    ]
    ranked = sorted(rows, key=lambda r: (bool(r.get("isPrimaryMeterRegion", True)), str(r.get("effectiveStartDate"))))
    return float(ranked[-1]["retailPrice"]) if ranked else None


def _fetch_items(odata_filter: str, timeout: float) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"api-version": API_VERSION, "meterRegion": "'primary'", "$filter": odata_filter})
    url: str | None = f"{os.environ.get(PRICES_URL_ENV, 'https://prices.azure.com/api/retail/prices')}?{query}"
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
    vms = _fetch_items(
        f"serviceName eq 'Virtual Machines' and {where} and armSkuName eq '{size}' and priceType eq 'Consumption'",
        timeout,
    )

    def vm(item: dict[str, Any], spot: bool) -> bool:
        sku = str(item.get("skuName", ""))
        same_size = str(item.get("armSkuName", "")).lower() == size.lower()
        return same_size and sku.endswith(" Spot") == spot and not sku.endswith(" Low Priority")

    payg = _price(vms, "1 Hour", lambda i: vm(i, False))
    spot = _price(vms, "1 Hour", lambda i: vm(i, True))
    if payg is None:
        raise PriceUnavailable(f"The Azure price list has no Linux price for {size} in {region}.")
    disks = _fetch_items(
        f"serviceName eq 'Storage' and {where} and productName eq 'Premium SSD Managed Disks'"
        f" and skuName eq '{DISK_TIER} LRS'",
        timeout,
    )
    disk = _price(disks, "1/Month", lambda i: i.get("meterName") == f"{DISK_TIER} LRS Disk")
    ips = _fetch_items(
        f"serviceName eq 'Virtual Network' and {where} and productName eq 'IP Addresses' and skuName eq 'Standard'",
        timeout,
    )
    ip = _price(ips, "1 Hour", lambda i: i.get("meterName") == "Standard IPv4 Static Public IP")
    nats = _fetch_items(f"productName eq 'NAT Gateway' and {where} and skuName eq 'Standard'", timeout)
    nat = _price(nats, "1 Hour", lambda i: i.get("meterName") == "Standard Gateway")
    today = datetime.now(timezone.utc).date().isoformat()
    return LabPrices(
        region=region,
        size=size,
        payg_per_hour=payg,
        spot_per_hour=spot,
        disk_per_month=FALLBACK_DISK_PER_MONTH if disk is None else disk,
        public_ip_per_hour=FALLBACK_PUBLIC_IP_PER_HOUR if ip is None else ip,
        currency="USD",
        source=f"Azure Retail Prices API ({today})",
        fetched_on=today,
        nat_gateway_per_hour=FALLBACK_NAT_GATEWAY_PER_HOUR if nat is None else nat,
    )


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads((user_dir("cache") / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, prices: LabPrices) -> None:
    data = {**_read_cache(), key: asdict(prices)}
    folder = user_dir("cache")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f".{CACHE_FILE}.{os.getpid()}"
        temporary.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(temporary, folder / CACHE_FILE)
    except OSError:
        pass  # a cache that cannot be written only costs a later lookup


def lab_prices(region: str, size: str, *, now: datetime | None = None, timeout: float = 10.0) -> LabPrices:
    """The lab's prices: a fresh cached answer, else the API (then cached), else a stale cache, else the catalog."""
    known = catalog.SIZES.get(size.strip().lower())
    size = known.name if known else size.strip()
    key = f"{region.lower()}/{size.lower()}/{DISK_TIER}"
    entry = _read_cache().get(key)
    try:
        cached = LabPrices(**entry) if isinstance(entry, dict) else None
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
        return LabPrices(
            region=region,
            size=known.name,
            payg_per_hour=known.usd_per_hour,
            spot_per_hour=known.hourly(True),
            disk_per_month=FALLBACK_DISK_PER_MONTH,
            public_ip_per_hour=FALLBACK_PUBLIC_IP_PER_HOUR,
            currency="USD",
            source=f"{CATALOG_SOURCE}; {reason}",
        )
    _write_cache(key, fresh)
    return fresh
