"""What the fake ARM knows about VM sizes (their published shapes) and Windows time-zone ids.

Sizes follow Microsoft's size pages: vCPUs, memory (GiB), GPUs, the quota family compute usages report, and
whether Spot is supported (the ``LowPriorityCapable`` capability of resource SKUs: B-series, ND-series and the
H100 ND sizes have no Spot), whether Trusted Launch is (``TrustedLaunchDisabled``: ND96asr_v4 has none), and
whether accelerated networking is (``AcceleratedNetworkingEnabled``: the B-series has none), the Hyper-V
generations it boots (``HyperVGenerations``: "V1" alone on Av2) and its disk controllers (``DiskControllerTypes``,
"NVMe" alone on the v6 families, whose pages say they take no SCSI).
NVadsA10_v5 sizes carry an A10 that needs NVIDIA's GRID driver (their page says so).

A resource SKU is rendered in the shape of ``ResourceSkus_List_ForARegion.json`` (capabilities as name/value
strings, ``locationInfo`` with zones) and ``FromDoc_ResourceSkus_List_Item.json`` (``restrictions``, possibly
empty, and ``zoneDetails``). Restrictions are of ``type`` ``Location`` or ``Zone`` with ``restrictionInfo``, as
the SKU-not-available page shows them (``NotAvailableForSubscription, type: Zone``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Shape:
    vcpus: int
    memory_gb: float
    family: str
    gpus: int = 0
    spot: bool = True  # the LowPriorityCapable capability
    grid_only: bool = False  # a GPU that needs NVIDIA's GRID driver (NVadsA10_v5)
    trusted_launch: bool = True  # False: the TrustedLaunchDisabled capability (the size boots no Trusted Launch)
    accelerated_networking: bool = True  # the AcceleratedNetworkingEnabled capability (B-series: none)
    premium_io: bool = True  # the PremiumIO capability: False on sizes without an "s" (Premium SSD)
    generations: str = "V1,V2"  # the HyperVGenerations capability: "V1" alone on the A and older D series
    controllers: str | None = None  # the DiskControllerTypes capability, where listed: "NVMe" alone on v6 sizes


SIZE_TABLE: dict[str, Shape] = {
    "Standard_B2s": Shape(2, 4, "standardBSFamily", spot=False, accelerated_networking=False),
    "Standard_D2s_v5": Shape(2, 8, "standardDSv5Family"),
    "Standard_D4s_v5": Shape(4, 16, "standardDSv5Family"),
    "Standard_D8s_v5": Shape(8, 32, "standardDSv5Family"),
    "Standard_D4_v5": Shape(4, 16, "standardDv5Family", premium_io=False),
    "Standard_D4s_v6": Shape(4, 16, "standardDSv6Family", generations="V2", controllers="NVMe"),
    "Standard_A4_v2": Shape(
        4, 8, "standardAv2Family", accelerated_networking=False, premium_io=False, generations="V1"
    ),
    "Standard_E4s_v5": Shape(4, 32, "standardESv5Family"),
    "Standard_NC4as_T4_v3": Shape(4, 28, "standardNCASv3_T4Family", 1),
    "Standard_NC8as_T4_v3": Shape(8, 56, "standardNCASv3_T4Family", 1),
    "Standard_NC16as_T4_v3": Shape(16, 110, "standardNCASv3_T4Family", 1),
    "Standard_NC64as_T4_v3": Shape(64, 440, "standardNCASv3_T4Family", 4),
    "Standard_NV6ads_A10_v5": Shape(6, 55, "StandardNVADSA10v5Family", 1, grid_only=True),  # 1/6 of an A10
    "Standard_NV36ads_A10_v5": Shape(36, 440, "StandardNVADSA10v5Family", 1, grid_only=True),
    "Standard_NV72ads_A10_v5": Shape(72, 880, "StandardNVADSA10v5Family", 2, grid_only=True),
    "Standard_NC24ads_A100_v4": Shape(24, 220, "StandardNCADSA100v4Family", 1),
    "Standard_NC48ads_A100_v4": Shape(48, 440, "StandardNCADSA100v4Family", 2),
    "Standard_NC96ads_A100_v4": Shape(96, 880, "StandardNCADSA100v4Family", 4),
    "Standard_NC40ads_H100_v5": Shape(40, 320, "standardNCadsH100v5Family", 1),
    "Standard_NC80adis_H100_v5": Shape(80, 640, "standardNCadsH100v5Family", 2),
    "Standard_ND96asr_v4": Shape(96, 900, "standardNDASv4_A100Family", 8, spot=False, trusted_launch=False),
    "Standard_ND96isr_H100_v5": Shape(96, 1900, "standardNDSH100v5Family", 8, spot=False),
}

# ARM is not consistent about a region's spelling: resource SKUs name some locations as the region's display
# key ("EastUS"), other answers lower-case it ("eastus"). Clients must compare case-insensitively.
_MIXED_CASE = {
    "eastus": "EastUS",
    "eastus2": "EastUS2",
    "westus2": "WestUS2",
    "westus3": "WestUS3",
    "westeurope": "WestEurope",
    "northeurope": "NorthEurope",
}


def arm_case(region: str) -> str:
    return _MIXED_CASE.get(region.lower(), region)


def sku_json(size: str, region: str, restricted: str | None, zones_restricted: list[str]) -> dict[str, Any]:
    """One ``value[]`` element of ResourceSkus_List for a VM size in a region."""
    shape = SIZE_TABLE[size]
    # GPU sizes answer with the mixed-case spelling, the others lower-case, as real listings mix them.
    spelled = arm_case(region) if shape.gpus else region
    restrictions: list[dict[str, Any]] = []
    if restricted:
        restrictions.append(
            {
                "type": "Location",
                "values": [spelled],
                "restrictionInfo": {"locations": [spelled]},
                "reasonCode": restricted,
            }
        )
    if zones_restricted:
        restrictions.append(
            {
                "type": "Zone",
                "values": [spelled],
                "restrictionInfo": {"locations": [spelled], "zones": sorted(zones_restricted)},
                "reasonCode": "NotAvailableForSubscription",
            }
        )
    caps = [
        ("vCPUs", str(shape.vcpus)),
        ("MemoryGB", f"{shape.memory_gb:g}"),
        ("HyperVGenerations", shape.generations),
        ("LowPriorityCapable", "True" if shape.spot else "False"),
        ("PremiumIO", "True" if shape.premium_io else "False"),
        ("vCPUsAvailable", str(shape.vcpus)),
        ("AcceleratedNetworkingEnabled", "True" if shape.accelerated_networking else "False"),
    ]
    if shape.controllers:
        caps.append(("DiskControllerTypes", shape.controllers))
    if shape.gpus:
        caps.append(("GPUs", str(shape.gpus)))
    if not shape.trusted_launch:
        caps.append(("TrustedLaunchDisabled", "True"))
    return {
        "resourceType": "virtualMachines",
        "name": size,
        "tier": "Standard",
        "size": size.split("_", 1)[1],
        "family": shape.family,
        "locations": [spelled],
        "locationInfo": [
            {
                "location": spelled,
                "zones": [z for z in ("1", "2", "3") if z not in zones_restricted],
                "zoneDetails": [],
            }
        ],
        "capabilities": [{"name": n, "value": v} for n, v in caps],
        "restrictions": restrictions,
    }


# Windows time-zone ids (``tzutil /l``), which DevTestLab schedules take in ``timeZoneId``. IANA names such as
# "Europe/Berlin" are not among them.
WINDOWS_TIME_ZONES = frozenset(
    {
        "Dateline Standard Time",
        "UTC-11",
        "Hawaiian Standard Time",
        "Alaskan Standard Time",
        "Pacific Standard Time (Mexico)",
        "Pacific Standard Time",
        "US Mountain Standard Time",
        "Mountain Standard Time (Mexico)",
        "Mountain Standard Time",
        "Central America Standard Time",
        "Central Standard Time",
        "Central Standard Time (Mexico)",
        "Canada Central Standard Time",
        "SA Pacific Standard Time",
        "Eastern Standard Time",
        "US Eastern Standard Time",
        "Venezuela Standard Time",
        "Paraguay Standard Time",
        "Atlantic Standard Time",
        "Central Brazilian Standard Time",
        "SA Western Standard Time",
        "Pacific SA Standard Time",
        "Newfoundland Standard Time",
        "E. South America Standard Time",
        "Argentina Standard Time",
        "SA Eastern Standard Time",
        "Greenland Standard Time",
        "Montevideo Standard Time",
        "UTC-02",
        "Mid-Atlantic Standard Time",
        "Azores Standard Time",
        "Cape Verde Standard Time",
        "Morocco Standard Time",
        "UTC",
        "GMT Standard Time",
        "Greenwich Standard Time",
        "W. Europe Standard Time",
        "Central Europe Standard Time",
        "Romance Standard Time",
        "Central European Standard Time",
        "W. Central Africa Standard Time",
        "Namibia Standard Time",
        "Jordan Standard Time",
        "GTB Standard Time",
        "Middle East Standard Time",
        "Egypt Standard Time",
        "Syria Standard Time",
        "E. Europe Standard Time",
        "South Africa Standard Time",
        "FLE Standard Time",
        "Turkey Standard Time",
        "Israel Standard Time",
        "Kaliningrad Standard Time",
        "Libya Standard Time",
        "Arabic Standard Time",
        "Arab Standard Time",
        "Belarus Standard Time",
        "Russian Standard Time",
        "E. Africa Standard Time",
        "Iran Standard Time",
        "Arabian Standard Time",
        "Azerbaijan Standard Time",
        "Russia Time Zone 3",
        "Mauritius Standard Time",
        "Georgian Standard Time",
        "Caucasus Standard Time",
        "Afghanistan Standard Time",
        "West Asia Standard Time",
        "Ekaterinburg Standard Time",
        "Pakistan Standard Time",
        "India Standard Time",
        "Sri Lanka Standard Time",
        "Nepal Standard Time",
        "Central Asia Standard Time",
        "Bangladesh Standard Time",
        "N. Central Asia Standard Time",
        "Myanmar Standard Time",
        "SE Asia Standard Time",
        "North Asia Standard Time",
        "China Standard Time",
        "North Asia East Standard Time",
        "Singapore Standard Time",
        "W. Australia Standard Time",
        "Taipei Standard Time",
        "Ulaanbaatar Standard Time",
        "Tokyo Standard Time",
        "Korea Standard Time",
        "Yakutsk Standard Time",
        "Cen. Australia Standard Time",
        "AUS Central Standard Time",
        "E. Australia Standard Time",
        "AUS Eastern Standard Time",
        "West Pacific Standard Time",
        "Tasmania Standard Time",
        "Magadan Standard Time",
        "Vladivostok Standard Time",
        "Russia Time Zone 10",
        "Central Pacific Standard Time",
        "Russia Time Zone 11",
        "New Zealand Standard Time",
        "UTC+12",
        "Fiji Standard Time",
        "Tonga Standard Time",
        "Samoa Standard Time",
        "Line Islands Standard Time",
    }
)
