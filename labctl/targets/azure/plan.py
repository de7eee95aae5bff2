"""What an Azure lab consists of: names, sizes, region, network rule and schedule, decided before any call."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from labctl.catalog import VmSize, choose_sizes
from labctl.errors import LabctlError
from labctl.spec import LabSpec
from labctl.state import LabRecord
from labctl.targets.azure import settings
from labctl.targets.azure.access import breadth_warning, discover_public_ip, parse_allow_ip, ssh_rule
from labctl.targets.azure.clients import Principal
from labctl.targets.azure.fit import refuse_grid_only
from labctl.targets.azure.record import azure_data
from labctl.targets.azure.shutdown import schedule_time
from labctl.validate import check_region

_INFINIBAND = re.compile(r"^standard_(nd|hb|hc)\d+[a-z]*r[a-z]*(_|$)", re.IGNORECASE)  # the "r" of RDMA sizes


# Each resource of a lab: its type and its name; "{n}" is the node's number, empty for node 0.
RESOURCES = {
    "vnet": ("Microsoft.Network/virtualNetworks", "{lab}-vnet"),
    "nsg": ("Microsoft.Network/networkSecurityGroups", "{lab}-nsg"),
    "public_ip": ("Microsoft.Network/publicIPAddresses", "{lab}-ip"),
    "nat_ip": ("Microsoft.Network/publicIPAddresses", "{lab}-nat-ip"),
    "nat_gateway": ("Microsoft.Network/natGateways", "{lab}-nat"),
    "ppg": ("Microsoft.Compute/proximityPlacementGroups", "{lab}-ppg"),
    "nic": ("Microsoft.Network/networkInterfaces", "{lab}-nic{n}"),
    "vm": ("Microsoft.Compute/virtualMachines", "{lab}-vm{n}"),
    "disk": ("Microsoft.Compute/disks", "{lab}-vm{n}-osdisk"),
    "schedule": ("Microsoft.DevTestLab/schedules", "shutdown-computevm-{lab}-vm{n}"),
}
SUBNET = "default"


@dataclass(frozen=True)
class LabNames:
    lab: str
    # "labctl-<lab>-<first 8 hex digits of the owner's object id>" for labs made now (``for_owner``), or what the
    # record says (labs made before labs were per person: "labctl-<lab>").
    group: str = ""
    subscription: str = ""  # for the ids

    @classmethod
    def for_owner(cls, lab: str, owner_short: str, subscription: str = "") -> LabNames:
        return cls(lab, f"labctl-{lab}-{owner_short}", subscription)

    @property
    def resource_group(self) -> str:
        return self.group or f"labctl-{self.lab}"

    def name(self, kind: str, node: int = 0) -> str:
        return RESOURCES[kind][1].format(lab=self.lab, n=node or "")

    def id(self, kind: str, node: int = 0) -> str:
        group = f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
        return f"{group}/providers/{RESOURCES[kind][0]}/{self.name(kind, node)}"

    @property
    def subnet_id(self) -> str:
        return f"{self.id('vnet')}/subnets/{SUBNET}"


@dataclass
class AzurePlan:
    names: LabNames
    sizes: list[VmSize]
    regions: list[str]  # one, or the ordered candidates of --region auto
    auto_region: bool
    source: str  # the CIDR SSH is opened to ("*" only when --allow-ip any was typed)
    shutdown_at: str | None
    shutdown_hhmm: str | None = None
    shutdown_tz: str | None = None
    spot: bool = False
    subscription: str | None = None
    image: str = settings.IMAGE_URN
    accept_terms: bool = False  # `up --yes`: consent to the image's marketplace terms, if it has any
    warnings: list[str] = field(default_factory=list)
    nodes: int = 1  # VMs of the one size: node 0 with the public IP, workers reached through it

    @property
    def group_shown(self) -> str:
        """A new lab's carries its owner's id, known after login."""
        return self.names.group or f"labctl-{self.names.lab}-<first 8 hex digits of your object id>"

    def resources(self, size: VmSize) -> list[dict[str, str]]:
        n = self.names.name
        image = f"{size.name}, {self.image}{', Spot' if self.spot else ''}"
        rows = [
            ("vnet", 0, f" (10.42.0.0/16, subnet {SUBNET})"),
            ("nsg", 0, ""),
            ("public_ip", 0, " (Standard, static)"),
        ]
        if self.nodes > 1:  # the workers' way out: a subnet made now has no default outbound access
            rows += [
                ("nat_ip", 0, " (Standard, static)"),
                ("nat_gateway", 0, " (the subnet's way out)"),
                ("ppg", 0, ""),
            ]
        for node in range(self.nodes):
            where = f" (node {node}, private address only)" if node else " (node 0, with the public IP)"
            where = where if self.nodes > 1 else ""
            rows += [("nic", node, where), ("vm", node, f" ({image})"), ("disk", node, " (deleted with the VM)")]
        rows += [("schedule", node, "") for node in range(self.nodes) if self.shutdown_at]
        return [
            {"type": "Microsoft.Resources/resourceGroups", "name": self.group_shown},
            *({"type": RESOURCES[kind][0], "name": n(kind, node) + more} for kind, node, more in rows),
        ]

    def to_json(self) -> dict[str, Any]:
        first = self.sizes[0]
        return {
            "target": "azure",
            "name": self.names.lab,
            "subscription": self.subscription,
            "resource_group": self.group_shown,
            "region": "auto" if self.auto_region else self.regions[0],
            "region_candidates": self.regions,
            "sizes": [
                {
                    "name": s.name,
                    "vcpus": s.vcpus,
                    "memory_gib": s.memory_gib,
                    "gpu": f"{s.gpu_count}x {s.gpu_model}" if s.gpu else None,
                    "usd_per_hour": s.hourly(self.spot),
                }
                for s in self.sizes
            ],
            "spot": self.spot,
            "image": self.image,
            "nodes": self.nodes,
            "resources": self.resources(first),
            "inbound_rules": [ssh_rule(self.source)],
            "shutdown_at": self.shutdown_at,
            "shutdown_time_zone": self.shutdown_tz,
            "tags": tags_for(self.names.lab, Principal("<your object id>", "<you>"), created_at="<now>"),
            "warnings": self.warnings,
        }

    def render(self) -> str:
        first = self.sizes[0]
        where = f"auto (first with room of: {', '.join(self.regions)})" if self.auto_region else self.regions[0]
        lines = [
            f"Plan for Azure lab '{self.names.lab}' (nothing is created by --dry-run):",
            f"  subscription:   {self.subscription or '(from your login)'}",
            f"  region:         {where}",
            f"  size:           {first.describe()}" + (f", Spot ~${first.hourly(True):.2f}/h" if self.spot else ""),
        ]
        if self.nodes > 1:
            each = first.hourly(self.spot)
            lines.append(
                f"  nodes:          {self.nodes} VMs of that size, ~${self.nodes * each:.2f}/h together "
                f"({self.nodes} x ${each:.2f}/h), in one proximity placement group"
            )
        for fallback in self.sizes[1:]:
            spot = f", Spot ~${fallback.hourly(True):.2f}/h" if self.spot else ""
            lines.append(f"  then:           {fallback.describe()}{spot}")
        lines.append(f"  image:          {self.image}")
        lines.append("  resources:")
        for row in self.resources(first):
            lines.append(f"    {row['type']:<42} {row['name']}")
        src = "anywhere (--allow-ip any)" if self.source == "*" else self.source
        lines.append(f"  inbound:        TCP 22 (SSH) from {src} only; Jupyter only through the SSH tunnel")
        if self.nodes > 1:
            lines.append(
                "  between nodes:  the lab's VNet only (Azure's default rule): SSH to the workers through node 0, "
                "the rendezvous on node 0's private address; the workers have no public IP and go out through the "
                "NAT gateway"
            )
        if self.shutdown_at:
            lines.append(f"  auto-shutdown:  daily at {self.shutdown_at} ({self.shutdown_tz})")
        else:
            lines.append("  auto-shutdown:  none (--no-shutdown): the VM costs money until 'labctl stop' or 'down'")
        lines.append("  Before creating anything, 'up' checks size availability, vCPU quota and the image.")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def names_of(record: LabRecord) -> LabNames:
    td = azure_data(record)
    return LabNames(record.name, td.get("resource_group") or "", td.get("subscription") or "")


def tags_for(lab: str, owner: Principal, created_at: str) -> dict[str, str]:
    return {
        settings.TAG_LAB: lab,
        settings.TAG_CREATED_BY: settings.CREATED_BY,
        settings.TAG_OWNER: owner.oid,
        settings.TAG_OWNER_NAME: owner.name[:256],
        settings.TAG_CREATED_AT: created_at,
    }


def make_plan(spec: LabSpec, discover_ip: bool = True) -> AzurePlan:
    """Everything that does not need Azure; ``discover_ip`` asks the echo service when there is no --allow-ip."""
    sizes = choose_sizes(spec.sizes, spec.gpu)
    refuse_grid_only(sizes)  # a GPU the image's driver cannot use is refused before anything else
    region = check_region(spec.region or settings.default_region())
    auto = region == "auto"
    regions = list(settings.AUTO_REGIONS) if auto else [region]
    warnings: list[str] = []
    if spec.allow_ip:
        source = parse_allow_ip(spec.allow_ip)
        if source == "*":
            warnings.append("SSH is open to the whole internet (--allow-ip any); key login only, but exposed.")
        elif wide := breadth_warning(source):
            warnings.append(wide)
        elif (net := ipaddress.ip_network(source, strict=False)).num_addresses > 1:
            warnings.append(f"SSH is open to {net}, {net.num_addresses:,} addresses, not only to yours.")
    elif discover_ip:
        try:
            source = discover_public_ip()
        except LabctlError as exc:  # a plan is still worth showing; `up` itself will stop on this
            source = "<your public IP>/32"
            warnings.append(exc.render())
    else:
        source = "<your public IP>/32"
    hhmm = tz = None
    if spec.shutdown_at:
        hhmm, tz = schedule_time(spec.shutdown_at)
    else:
        warnings.append("No auto-shutdown: remember 'labctl stop' or 'labctl down' to stop paying.")
    for size in [s for s in sizes if (spec.nodes or 1) > 1 and _INFINIBAND.match(s.name)]:
        warnings.append(
            f"{size.name} has InfiniBand, but it needs the VMs in one scale set with an HPC image; the lab's nodes "
            "are separate VMs, so NCCL goes between them over TCP (with accelerated networking)."
        )
    return AzurePlan(
        names=LabNames(spec.name),
        sizes=sizes,
        regions=regions,
        auto_region=auto,
        source=source,
        shutdown_at=spec.shutdown_at,
        shutdown_hhmm=hhmm,
        shutdown_tz=tz,
        spot=spec.spot,
        subscription=spec.subscription,
        accept_terms=bool(getattr(spec, "yes", False)),
        warnings=warnings,
        nodes=spec.nodes or 1,
    )
