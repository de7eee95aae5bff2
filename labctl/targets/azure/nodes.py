"""A lab of several VMs: node 0 has the public IP, workers 1, 2, ... have private addresses in the lab's subnet.

Pure helpers for the provisioner and the inventory: what a worker's record holds, where a NIC's private
address is, which placement group a VM is in, and the refusal of a node count an existing lab cannot take.
Workers are reached through node 0's SSH, each with its own host key (generated here, sent in its cloud-init).
"""

from __future__ import annotations

from typing import Any

from labctl.errors import LabctlError, UsageError
from labctl.state import LabRecord, NodeRecord
from labctl.targets.azure import settings
from labctl.targets.azure.plan import LabNames
from labctl.targets.azure.record import node_count


def refuse_fewer_nodes(record: LabRecord, nodes: int) -> None:
    """A lab is never shrunk by `up`: removing a worker would lose what is on it. Said before any call."""
    has = node_count(record)
    if nodes >= has:
        return
    raise UsageError(
        f"Lab '{record.name}' has {has} nodes; 'labctl up' with --nodes {nodes} would have to delete "
        f"{has - nodes} of them, which up never does.",
        hint=f"Run 'labctl up --name {record.name} --nodes {has}' to converge it as it is, or 'labctl down' it "
        f"and 'labctl up --nodes {nodes}' to make it again with fewer.",
    )


def private_address(nic: dict[str, Any] | None) -> str | None:
    """The primary private IPv4 address of a NIC as ARM returns it (None while Azure has given it none)."""
    for config in ((nic or {}).get("properties") or {}).get("ipConfigurations") or []:
        address = (config.get("properties") or {}).get("privateIPAddress")
        if address:
            return str(address)
    return None


def placement_of(vm: dict[str, Any] | None) -> str | None:
    ref = ((vm or {}).get("properties") or {}).get("proximityPlacementGroup") or {}
    return str(ref["id"]) if ref.get("id") else None


def worker_record(names: LabNames, node: int, address: str, host_key: str | None) -> NodeRecord:
    """Worker ``node`` as the lab record keeps it: reached through node 0 at its private address."""
    return NodeRecord(
        host=address,
        port=settings.ssh_port(),
        user=settings.admin_user(),
        host_key=host_key,
        private_address=address,
        via_head=True,
        name=names.vm_of(node),
    )


def set_worker(record: LabRecord, node: int, worker: NodeRecord) -> None:
    """Put worker ``node`` (1, 2, ...) in the record, in order; a slot before it must be filled already."""
    if node < len(record.nodes):
        record.nodes[node] = worker
    elif node == len(record.nodes):
        record.nodes.append(worker)
    else:
        raise LabctlError(f"Node {node} of lab '{record.name}' came before node {len(record.nodes)}.")
