"""Whether a VM size fits a lab, from resource SKU capabilities: a GPU the image's driver can use, Spot, Trusted
Launch (which the image must declare too), accelerated networking."""

from __future__ import annotations

import re
from typing import Any

from labctl.catalog import SIZES, VmSize
from labctl.errors import UsageError

# NVadsA10_v5 sizes carry an NVIDIA A10 served through NVIDIA's GRID (vGPU) driver, which Azure's size page
# requires; the Data Science VM image ships the CUDA data-center driver instead, so their GPU stays unusable.
_GRID_ONLY = re.compile(r"^standard_nv\d+adm?s_a10_v5$")
CUDA_ALTERNATIVES = ("Standard_NC4as_T4_v3", "Standard_NC24ads_A100_v4", "Standard_NC40ads_H100_v5")


def grid_only(size: VmSize) -> bool:
    return bool(_GRID_ONLY.match(size.name.lower()))


def refuse_grid_only(sizes: list[VmSize]) -> None:
    """A GPU size whose GPU the lab's image cannot drive is refused, naming CUDA-capable sizes instead."""
    bad = [s for s in sizes if grid_only(s)]
    if not bad:
        return
    names = ", ".join(s.name for s in bad)
    alternatives = ", ".join(SIZES[a.lower()].describe() for a in CUDA_ALTERNATIVES)
    raise UsageError(
        f"{names} has an NVIDIA A10 that needs NVIDIA's GRID driver, but the Data Science VM image ships the "
        "CUDA driver, so the lab could not use its GPU.",
        hint=f"Pick a CUDA-capable size instead: {alternatives}.",
    )


def _says_true(sku: dict[str, Any] | None, capability: str) -> bool:
    caps = (sku or {}).get("capabilities") or []
    return any(
        str(c.get("name", "")).lower() == capability.lower() and str(c.get("value")).lower() == "true" for c in caps
    )


def spot_capable(sku: dict[str, Any] | None) -> bool:
    return _says_true(sku, "LowPriorityCapable")  # absent means no


def accelerated_networking(sku: dict[str, Any] | None) -> bool:
    return _says_true(sku, "AcceleratedNetworkingEnabled")


def trusted_launch_allowed(sku: dict[str, Any] | None) -> bool:
    return not _says_true(sku, "TrustedLaunchDisabled")


def trusted_launch_declared(image: dict[str, Any]) -> bool:
    """ARM refuses Trusted Launch on an image unless its ``features`` say so (``SecurityType: TrustedLaunch...``)."""
    features = (image.get("properties") or {}).get("features") or []
    return any(f.get("name") == "SecurityType" and "TrustedLaunch" in str(f.get("value")) for f in features)


def spot_alternatives(skus: dict[str, dict[str, Any]], size: VmSize, limit: int = 3) -> list[str]:
    """Sizes of the same kind (GPU or not) that the region offers as Spot, closest in vCPUs first."""
    found = []
    for candidate in SIZES.values():
        sku = skus.get(candidate.name.lower())
        if candidate.gpu != size.gpu or grid_only(candidate) or not spot_capable(sku):
            continue
        if any(r.get("type") == "Location" for r in (sku or {}).get("restrictions") or []):
            continue
        found.append(candidate)
    found.sort(key=lambda s: (abs(s.vcpus - size.vcpus), s.vcpus))
    return [s.name for s in found[:limit]]
