"""Spend since creation (pure arithmetic with fixed price tables) and the price client against a local price API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from labctl import pricing
from labctl.pricing import (
    Interval,
    LabPrices,
    PriceUnavailable,
    allocated_seconds,
    estimate,
    intervals_from_events,
    lab_prices,
)
from tests.fakearm.retail_prices import RetailPrices
from tests.support.sshd import free_port

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)
TABLE = LabPrices(
    region="eastus",
    size="Standard_NC4as_T4_v3",
    payg_per_hour=0.50,
    spot_per_hour=0.15,
    disk_per_month=36.50,  # 0.05 an hour at 730 hours a month
    public_ip_per_hour=0.005,
    source="test table",
)


# ------------------------------------------------------------------------------------------------- spend


def test_one_running_interval_pays_compute_disk_and_ip() -> None:
    spent = estimate(T0, [Interval(T0, None)], TABLE, spot=False, now=T0 + 10 * H)
    assert spent["compute_usd"] == pytest.approx(5.0)
    assert spent["disk_usd"] == pytest.approx(0.5)
    assert spent["public_ip_usd"] == pytest.approx(0.05)
    assert spent["total_usd"] == pytest.approx(5.55)
    assert (spent["allocated_hours"], spent["life_hours"]) == (10, 10)
    assert spent["compute_per_hour"] == pytest.approx(0.555)
    assert spent["source"] == "test table" and spent["spot"] is False


def test_deallocated_time_pays_disk_and_ip_only() -> None:
    # Running 2h, deallocated overnight (14h), running 3h more and still on.
    intervals = [Interval(T0, T0 + 2 * H), Interval(T0 + 16 * H, None)]
    spent = estimate(T0, intervals, TABLE, spot=False, now=T0 + 19 * H)
    assert spent["allocated_hours"] == pytest.approx(5)
    assert spent["compute_usd"] == pytest.approx(2.5)
    assert spent["disk_usd"] + spent["public_ip_usd"] == pytest.approx(19 * 0.055)
    assert spent["total_usd"] == pytest.approx(2.5 + 19 * 0.055)


def test_spot_uses_the_spot_price() -> None:
    spent = estimate(T0, [Interval(T0, T0 + 4 * H)], TABLE, spot=True, now=T0 + 4 * H)
    assert spent["compute_usd"] == pytest.approx(0.6) and spent["spot"] is True
    with pytest.raises(PriceUnavailable):
        estimate(T0, [], LabPrices("r", "s", 1, None, 0, 0, "x"), spot=True, now=T0)


def test_intervals_are_clipped_to_the_labs_life_and_overlaps_count_once() -> None:
    intervals = [
        Interval(T0 - 5 * H, T0 + H),  # before creation: only the part after counts
        Interval(T0 + 30 * 60 * timedelta(seconds=1), T0 + 2 * H),  # overlaps the first
        Interval(T0 + 3 * H, T0 + 3 * H),  # empty
        Interval(T0 + 5 * H, None),  # open: until now
        Interval(T0 + 9 * H, T0 + 12 * H),  # after now
    ]
    assert allocated_seconds(intervals, T0, T0 + 6 * H) == pytest.approx(3 * 3600)
    assert estimate(T0, [], TABLE, spot=False, now=T0 - H)["total_usd"] == 0


def test_power_events_become_billed_intervals_and_an_os_shutdown_keeps_billing() -> None:
    events = [
        (T0, "PowerState/starting"),
        (T0 + 60 * timedelta(seconds=1), "PowerState/running"),
        (T0 + 2 * H, "PowerState/stopped"),  # shut down from inside: still allocated, still billed
        (T0 + 3 * H, "PowerState/deallocating"),
        (T0 + 3 * H + 2 * timedelta(minutes=1), "PowerState/deallocated"),
        (T0 + 10 * H, "running"),
    ]
    assert intervals_from_events(reversed(events)) == [Interval(T0, T0 + 3 * H), Interval(T0 + 10 * H, None)]
    assert intervals_from_events([]) == []


def test_each_stretch_is_priced_at_the_size_it_ran_as_and_an_older_record_at_todays() -> None:
    from labctl.state import LabRecord
    from labctl.targets.azure.inventory import lab_spend, rates

    at = T0.isoformat
    resized = [  # 2h as a 0.192 $/h size, then resized (deallocated, started again) to a 0.384 $/h one
        [at(), "running", 0.192],
        [(T0 + 2 * H).isoformat(), "deallocated"],
        [(T0 + 2 * H + timedelta(minutes=6)).isoformat(), "running", 0.384],
    ]
    record = LabRecord("lab", "azure", created_at=at(), target_data={"created_at": at(), "power_events": resized})
    spent = lab_spend(record, TABLE, now=T0 + 4 * H)  # TABLE: 0.50 $/h today
    assert spent["compute_usd"] == pytest.approx(2 * 0.192 + 1.9 * 0.384)
    assert spent["allocated_hours"] == pytest.approx(3.9)
    assert rates(record, 0.5) == [[at(), 0.192], [(T0 + 2 * H + timedelta(minutes=6)).isoformat(), 0.384]]
    record.target_data["power_events"] = [[at(), "running"]]  # written before events carried their price
    assert lab_spend(record, TABLE, now=T0 + 4 * H)["compute_usd"] == pytest.approx(4 * 0.5)
    assert rates(record, 0.5) == [[at(), 0.5]]


# ------------------------------------------------------------------------------------------------- prices


@pytest.fixture
def price_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RetailPrices]:
    server = RetailPrices(page_size=4).start()
    monkeypatch.setenv(pricing.PRICES_URL_ENV, server.url)
    monkeypatch.setenv("LABCTL_CACHE_DIR", str(tmp_path / "cache"))
    yield server
    server.stop()


def test_prices_come_from_the_api_linux_only_with_paging(price_api: RetailPrices) -> None:
    prices = lab_prices("eastus", "standard_nc4as_t4_v3", now=T0)
    # Linux pay-as-you-go and Spot; not Windows, Low Priority, DevTest, Reservation, older or non-primary meters.
    assert (prices.payg_per_hour, prices.spot_per_hour) == (0.526, 0.1578)
    assert prices.disk_per_month == 38.016 and prices.public_ip_per_hour == 0.005
    assert prices.size == "Standard_NC4as_T4_v3"
    assert prices.source.startswith("Azure Retail Prices API (") and prices.fetched_on
    vm_pages = [q for q in price_api.requests if "Virtual Machines" in q["$filter"]]
    assert len(vm_pages) == 3, "9 items in pages of 4 are three requests"
    first = vm_pages[0]
    assert first["api-version"] == "2023-01-01-preview"
    assert "armSkuName eq 'Standard_NC4as_T4_v3'" in first["$filter"], "filter values are case-sensitive"
    assert "armRegionName eq 'eastus'" in first["$filter"]


def test_the_cache_is_reused_while_fresh_and_dated(price_api: RetailPrices, tmp_path: Path) -> None:
    first = lab_prices("eastus", "Standard_NC4as_T4_v3")
    asked = len(price_api.requests)
    again = lab_prices("eastus", "Standard_NC4as_T4_v3")
    assert len(price_api.requests) == asked, "a fresh cache answers without the API"
    assert again.payg_per_hour == first.payg_per_hour
    assert again.source == f"Azure Retail Prices API (cached {first.fetched_on})"
    cached = json.loads((tmp_path / "cache" / pricing.CACHE_FILE).read_text())
    assert cached["eastus/standard_nc4as_t4_v3/P15"]["fetched_on"] == first.fetched_on
    later = datetime.fromisoformat(str(first.fetched_on)).replace(tzinfo=timezone.utc) + timedelta(days=8)
    lab_prices("eastus", "Standard_NC4as_T4_v3", now=later)
    assert len(price_api.requests) > asked, "an old cache is refreshed"


def test_a_cache_written_by_an_older_labctl_is_still_read(price_api: RetailPrices, tmp_path: Path) -> None:
    first = lab_prices("eastus", "Standard_NC4as_T4_v3")
    path = tmp_path / "cache" / pricing.CACHE_FILE
    cached = json.loads(path.read_text())
    cached["eastus/standard_nc4as_t4_v3/P15"]["currency"] = "USD"  # a key it wrote that is no longer read
    path.write_text(json.dumps(cached))
    asked = len(price_api.requests)
    assert lab_prices("eastus", "Standard_NC4as_T4_v3").payg_per_hour == first.payg_per_hour
    assert len(price_api.requests) == asked, "the fresh cache answered"


def test_a_server_that_is_down_falls_back_to_the_cache_then_the_catalog(
    price_api: RetailPrices, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = lab_prices("eastus", "Standard_NC4as_T4_v3")
    monkeypatch.setenv(pricing.PRICES_URL_ENV, f"http://127.0.0.1:{free_port()}/api/retail/prices")
    stale = lab_prices("eastus", "Standard_NC4as_T4_v3", now=T0 + timedelta(days=400), timeout=2)
    assert stale.payg_per_hour == 0.526
    assert stale.source == f"Azure Retail Prices API (cached {first.fetched_on}; price service unreachable)"

    offline = lab_prices("westeurope", "Standard_D4s_v5", timeout=2)
    assert offline.payg_per_hour == 0.192 and offline.spot_per_hour == 0.0384
    assert offline.source == f"{pricing.CATALOG_SOURCE}; price service unreachable"
    with pytest.raises(PriceUnavailable, match="Standard_Unknown_v9"):
        lab_prices("eastus", "Standard_Unknown_v9", timeout=2)


def test_a_lab_of_several_nodes_pays_for_its_nat_gateway_and_its_ip(price_api: RetailPrices) -> None:
    prices = lab_prices("eastus", "Standard_NC4as_T4_v3")
    assert any("productName eq 'NAT Gateway'" in q["$filter"] for q in price_api.requests)
    assert prices.for_nodes(1).public_ip_per_hour == 0.005
    assert prices.for_nodes(3).public_ip_per_hour == pytest.approx(0.005 + 0.005 + 0.045)


def test_a_size_the_price_list_lacks_falls_back_to_the_catalog(price_api: RetailPrices) -> None:
    prices = lab_prices("eastus", "Standard_D4s_v5")  # the local API has no rows for it
    assert prices.payg_per_hour == 0.192 and prices.source.endswith("not listed there")


def test_prices_feed_the_spend(price_api: RetailPrices) -> None:
    prices = lab_prices("eastus", "Standard_NC4as_T4_v3")
    spent = estimate(T0, [Interval(T0, T0 + 2 * H)], prices, spot=False, now=T0 + 730 * H)
    assert spent["total_usd"] == pytest.approx(2 * 0.526 + 38.016 + 730 * 0.005)
    assert spent["source"].startswith("Azure Retail Prices API")
