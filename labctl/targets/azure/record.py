"""What an Azure lab's record holds beyond the common fields, as one typed view of ``LabRecord.target_data``.

The state file keeps these as plain JSON keys (files written by earlier versions read the same); the Azure
target reads and writes them only through ``azure_data``, so a misspelt key or a wrong type is a mypy error.
"""

from __future__ import annotations

from typing import TypedDict, cast

from labctl.state import LabRecord


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
    owner: str  # the object id of the principal that made the lab (tag labctl-owner)
    owner_name: str  # its sign-in or application name
    power_events: list[list[str]]  # [ISO time, power state] when compute billing started or stopped
    nodes: int  # VMs the lab is made of (node 0 and its workers, all of ``size``); absent: one
    placement_group: str | None  # the proximity placement group's id, None where the VMs are in none


def azure_data(record: LabRecord) -> AzureData:
    """The record's Azure fields, the same dict (changes land in the record)."""
    return cast(AzureData, record.target_data)


def node_count(record: LabRecord) -> int:
    """How many VMs the lab has or is being made with (recorded before they exist, so `down` and `stop`
    reach every one of them)."""
    recorded = azure_data(record).get("nodes")
    return max(recorded if isinstance(recorded, int) and recorded > 0 else 1, len(record.nodes))
