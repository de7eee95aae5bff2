"""What an Azure lab consists of, decided before any call: names, sizes, region, SSH from the caller, auto-shutdown."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import ssl
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict, cast
from zoneinfo import ZoneInfo

from tzlocal.windows_tz import tz_win, win_tz

from labctl.errors import LabctlError, UsageError
from labctl.pricing import (
    GPU_ALTERNATIVES,
    SIZES,
    WORKSPACE_DISK_GB,
    WORKSPACE_DISK_SKU,
    WORKSPACE_DISK_USD_PER_MONTH,
    VmSize,
    choose_sizes,
)
from labctl.spec import SETTINGS, LabSpec
from labctl.state import LabRecord
from labctl.targets.azure import settings
from labctl.targets.azure.clients import Principal
from labctl.validate import check_allow_ip, check_region

_INFINIBAND = re.compile(r"^standard_(nd|hb|hc)\d+[a-z]*r[a-z]*(_|$)", re.IGNORECASE)  # the "r" of RDMA sizes
SSH_PORT = 22
# IPv4 ranges (IPv6 is refused) wider than this get a warning: allowed (a campus or company network), but far more
# than one machine. Wider than labctl.validate.REFUSE_WIDER_THAN is refused unless the user types '--allow-ip any'.
WARN_WIDER_THAN = 24


def discover_public_ip(timeout: float = 10.0) -> str:
    url = os.environ.get("LABCTL_IP_ECHO_URL") or "https://api.ipify.org"
    try:
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE") or None
        context = ssl.create_default_context(cafile=bundle)
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            text = response.read(100).decode("ascii", "replace").strip()
        address = ipaddress.ip_address(text)
    except (OSError, ValueError) as exc:
        raise LabctlError(
            f"Could not find your public IP address from {url} ({exc}).",
            hint="Pass it yourself with --allow-ip YOUR.IP.ADDRESS (or a CIDR range); SSH is opened only to it.",
        ) from None
    return f"{address}/{address.max_prefixlen}"


def ssh_rule(source: str) -> dict[str, Any]:
    return {
        "name": "allow-ssh-from-caller",
        "properties": {
            "priority": 100,
            "direction": "Inbound",
            "access": "Allow",
            "protocol": "Tcp",
            "sourceAddressPrefix": source,
            "sourcePortRange": "*",
            "destinationAddressPrefix": "*",
            "destinationPortRange": str(SSH_PORT),
            "description": "SSH from the address that created the lab; Jupyter is reached through the tunnel.",
        },
    }


def check_rules(rules: list[dict[str, Any]], source: str) -> None:
    for rule in rules:
        props = rule.get("properties", rule)
        if props.get("direction") != "Inbound" or props.get("access") != "Allow":
            continue
        ports = props.get("destinationPortRanges") or [props.get("destinationPortRange")]
        sources = props.get("sourceAddressPrefixes") or [props.get("sourceAddressPrefix")]
        if [str(p) for p in ports] != [str(SSH_PORT)] or sources != [source]:
            raise LabctlError(
                f"The lab's network security group rule '{rule.get('name')}' admits more than SSH from {source}.",
                hint="Remove that rule in the Azure portal, or 'labctl down' and 'labctl up' again.",
            )


def local_iana_zone() -> str | None:
    tz = os.environ.get("TZ", "").lstrip(":")
    if (tz and "/" in tz) or tz in ("UTC", "GMT"):
        return tz
    with contextlib.suppress(OSError):
        if text := Path("/etc/timezone").read_text().strip():
            return text
    with contextlib.suppress(OSError):
        return os.readlink("/etc/localtime").partition("zoneinfo/")[2] or None
    return None


def schedule_time(hhmm: str, zone: str | None = None) -> tuple[str, str]:
    """The Windows zone ARM wants, by the CLDR's mapping; a zone without one is UTC at today's offset (DST moves it)."""
    zone = zone if zone is not None else local_iana_zone()
    hour, minute = (int(x) for x in hhmm.split(":"))
    if zone and zone in tz_win:
        return f"{hour:02d}{minute:02d}", tz_win[zone]
    offset = datetime.now().astimezone().utcoffset() or timedelta(0)
    if zone:
        with contextlib.suppress(Exception):  # an unknown zone name: keep the process's offset
            offset = datetime.now(ZoneInfo(zone)).utcoffset() or timedelta(0)
    total = (hour * 60 + minute - int(offset.total_seconds() // 60)) % (24 * 60)
    return f"{total // 60:02d}{total % 60:02d}", "UTC"


def agent_shutdown(at: str, hhmm: str | None, windows_zone: str) -> dict[str, str]:
    """The schedule's time as the idle agent reads it: "HH:MM" and an IANA zone (the VM's clock is UTC)."""
    if windows_zone != "UTC":
        return {"shutdown_at": at, "shutdown_zone": win_tz.get(windows_zone, "UTC")}
    hhmm = hhmm or schedule_time(at)[0]  # a lab recorded before the schedule's own time was
    return {"shutdown_at": f"{hhmm[:2]}:{hhmm[2:]}", "shutdown_zone": "UTC"}


# NVadsA10_v5 sizes carry an NVIDIA A10 served through NVIDIA's GRID (vGPU) driver, which Azure's size page
# requires; the Data Science VM image ships the CUDA data-center driver instead, so their GPU stays unusable.
_GRID_ONLY = re.compile(r"^standard_nv\d+adm?s_a10_v5$")


def grid_only(size: VmSize) -> bool:
    return bool(_GRID_ONLY.match(size.name.lower()))


def refuse_grid_only(sizes: list[VmSize]) -> None:
    bad = [s for s in sizes if grid_only(s)]
    if not bad:
        return
    names = ", ".join(s.name for s in bad)
    alternatives = ", ".join(SIZES[a.lower()].describe() for a in GPU_ALTERNATIVES)
    raise UsageError(
        f"{names} has an NVIDIA A10 that needs NVIDIA's GRID driver, but the Data Science VM image ships the "
        "CUDA driver, so the lab could not use its GPU.",
        hint=f"Pick a CUDA-capable size instead: {alternatives}.",
    )


class AzureData(TypedDict, total=False):
    subscription: str
    resource_group: str  # recorded before it exists: from then on `down` has something to remove
    vm_name: str
    vm_id: str
    region: str
    size: str
    image: str  # the marketplace URN
    image_version: str
    spot: bool
    usd_per_hour: float
    allow_ip: str  # the CIDR the NSG admits to SSH
    created_at: str
    started_at: str  # when the VM was last started by labctl (uptime when ARM does not date it)
    shutdown_at: str | None  # HH:MM local time of the daily auto-shutdown, None without one
    shutdown_time_zone: str | None
    shutdown_hhmm: str | None  # the schedule's own time, in shutdown_time_zone
    owner: str  # the object id of the principal that made the lab (tag labctl-owner)
    owner_name: str  # its sign-in or application name
    power_events: list[list[Any]]  # [ISO time, power state(, compute $/h from a start on)] when billing changed
    nodes: int  # VMs the lab is made of (node 0 and its workers, all of ``size``); absent: one
    placement_group: str | None  # the proximity placement group's id, None where the VMs are in none
    workspace_disk: str  # node 0's /workspace disk's id, in the owner's group (WORKSPACE_GROUP): it may outlive the lab
    workspace_region: str  # where that disk is
    workspace_unbound: bool  # the lab container's /workspace is not on that disk (check_workspace)
    workspace_kept: bool  # that disk came back from `down --keep-workspace`: its files are the user's


def azure_data(record: LabRecord) -> AzureData:
    """The same dict, typed: a misspelt key is a mypy error."""
    return cast(AzureData, record.target_data)


def node_count(record: LabRecord) -> int:
    """VMs the lab has or is being made with (recorded before they exist, so `down` and `stop` reach each)."""
    recorded = azure_data(record).get("nodes")
    return max(recorded if isinstance(recorded, int) and recorded > 0 else 1, len(record.nodes))


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
    "workspace": ("Microsoft.Compute/disks", "labctl-{lab}-workspace"),  # in WORKSPACE_GROUP, not the lab's group
}
SUBNET = "default"
# /workspace on a managed disk of its own, in a group per owner, so `down --keep-workspace` can delete the lab's group
# and keep it; node 0 sees it at its LUN (cloud-init makes a filesystem on it only where it has none, and mounts it).
WORKSPACE_GROUP = "labctl-workspaces-{owner}"
WORKSPACE_DEVICE = "/dev/disk/azure/scsi1/lun0"
WORKSPACE_MOUNT = "/var/lib/labctl/workspace"
WORKSPACE_COST = f"{WORKSPACE_DISK_GB} GiB {WORKSPACE_DISK_SKU}, ~${WORKSPACE_DISK_USD_PER_MONTH:.2f}/month"


def group_and_name(rid: str) -> tuple[str, str]:
    """An ARM resource id's resource group and the resource's own name."""
    parts = rid.split("/")
    return parts[4], parts[-1]


def workspace_words(disk: str, region: object) -> str:
    group, name = group_and_name(disk)
    return f"managed disk {name} in resource group {group} ({region}), {WORKSPACE_COST}"


def workspace_disk_id(subscription: str, owner_short: str, lab: str) -> str:
    return LabNames(lab, WORKSPACE_GROUP.format(owner=owner_short), subscription).id("workspace")


@dataclass(frozen=True)
class LabNames:
    lab: str
    # "labctl-<lab>-<first 8 hex digits of the owner's object id>" for labs made now, or what the record says (labs
    # made before labs were per person: "labctl-<lab>").
    group: str = ""
    subscription: str = ""  # for the ids

    @property
    def resource_group(self) -> str:
        return self.group or f"labctl-{self.lab}"

    def name(self, kind: str, node: int = 0) -> str:
        return RESOURCES[kind][1].format(lab=self.lab, n=node or "")

    def id(self, kind: str, node: int = 0) -> str:
        group = f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
        return f"{group}/providers/{RESOURCES[kind][0]}/{self.name(kind, node)}"


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
    identity: bool = False  # the VMs get a system-assigned identity, to stop themselves when idle (decided by `up`)

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
            "resources": self.resources(self.sizes[0]),
            "inbound_rules": [ssh_rule(self.source)],
            "shutdown_at": self.shutdown_at,
            "shutdown_time_zone": self.shutdown_tz,
            "tags": tags_for(self.names.lab, Principal("<your object id>", "<you>"), created_at="<now>"),
            "warnings": self.warnings,
        }

    def render(self) -> str:
        first = self.sizes[0]
        where = f"auto (first with room of: {', '.join(self.regions)})" if self.auto_region else self.regions[0]
        described = [s.describe() + (f", Spot ~${s.hourly(True):.2f}/h" if self.spot else "") for s in self.sizes]
        lines = [
            f"Plan for Azure lab '{self.names.lab}' (nothing is created by --dry-run):",
            f"  subscription:   {self.subscription or '(from your login)'}",
            f"  region:         {where}",
            f"  size:           {described[0]}",
        ]
        if self.nodes > 1:
            each = first.hourly(self.spot)
            lines.append(
                f"  nodes:          {self.nodes} VMs of that size, ~${self.nodes * each:.2f}/h together "
                f"({self.nodes} x ${each:.2f}/h), in one proximity placement group"
            )
        lines += [f"  then:           {fallback}" for fallback in described[1:]]
        lines += [f"  image:          {self.image}", "  resources:"]
        lines += [f"    {row['type']:<42} {row['name']}" for row in self.resources(first)]
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
    region = check_region(spec.region or SETTINGS["region"][0])
    auto = region == "auto"
    regions = list(settings.AUTO_REGIONS) if auto else [region]
    warnings: list[str] = []
    source = "<your public IP>/32"
    if spec.allow_ip:
        source = check_allow_ip(spec.allow_ip)
        if source == "*":
            warnings.append("SSH is open to the whole internet (--allow-ip any); key login only, but exposed.")
        elif (net := ipaddress.ip_network(source, strict=False)).prefixlen < WARN_WIDER_THAN:
            warnings.append(
                f"SSH is open to {net}, {net.num_addresses:,} addresses (wider than /{WARN_WIDER_THAN}); "
                "key login only, but give your own address with --allow-ip if that is more than you meant."
            )
        elif net.num_addresses > 1:
            warnings.append(f"SSH is open to {net}, {net.num_addresses:,} addresses, not only to yours.")
    elif discover_ip:
        try:
            source = discover_public_ip()
        except LabctlError as exc:  # a plan is still worth showing; `up` itself will stop on this
            warnings.append(exc.render())
    hhmm, tz = schedule_time(spec.shutdown_at) if spec.shutdown_at else (None, None)
    if not spec.shutdown_at:
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
