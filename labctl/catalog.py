"""Azure VM sizes labctl knows, so that `up --dry-run` shows shape and cost without credentials and a typo or a
retired size is caught before any call to Azure. Prices are approximate US pay-as-you-go Linux list prices."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from labctl.errors import UsageError

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
    # False: a size this table lacks, taken as typed; the preflight fills its shape from the subscription's
    # resource SKUs and its price from the Azure price list (0: price unknown).
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
        typed = name.strip()
        return VmSize(
            typed if typed.lower().startswith("standard_") else f"Standard_{typed}", 0, 0, "", 0.0, catalogued=False
        )
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
