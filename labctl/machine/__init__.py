"""How labctl reaches the host of a lab: ``connect(record, ui)`` gives a ``Machine`` for any target."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING

from labctl.errors import LabctlError
from labctl.machine.base import CommandFailed, CommandResult, Machine
from labctl.state import LabRecord
from labctl.ui import Reporter

if TYPE_CHECKING:
    from labctl.machine.ssh import SSHMachine

__all__ = ["CommandFailed", "CommandResult", "Machine", "connect", "connect_node"]

# How long `up` waits for a new VM's SSH by default: Azure VMs usually answer within two minutes.
DEFAULT_WAIT = 600.0


def connect(record: LabRecord, ui: Reporter, *, wait: float = 0.0, mark: bool = True) -> Machine:
    """The machine of ``record``, connected; ``wait`` seconds of retrying while it boots (0: one try)."""
    if record.target == "local":
        from labctl.machine.local import LocalMachine

        return LocalMachine()
    from labctl.keys import check_lab_key
    from labctl.machine.ssh import SSHMachine

    if not record.host or not record.ssh_key_path or not record.host_key:
        missing = [
            n
            for n, v in (("host", record.host), ("SSH key", record.ssh_key_path), ("host key", record.host_key))
            if not v
        ]
        raise LabctlError(
            f"Lab '{record.name}' does not record how to reach its machine ({', '.join(missing)} missing).",
            hint="Run 'labctl up' for it again to finish creating it, or 'labctl down' to remove it.",
        )
    check_lab_key(record.name, record.ssh_key_path)  # a key gone or replaced is named before any connection
    machine = SSHMachine(
        record.host,
        record.port,
        record.user or getpass.getuser(),
        record.ssh_key_path,
        record.host_key,
        ui=ui,
        mark=mark,
    )
    return machine.connect(wait=wait)


def connect_node(record: LabRecord, node: int, ui: Reporter, *, wait: float = 0.0, mark: bool = True) -> Machine:
    """Node ``node`` of a lab on several machines, connected (0: the lab's own machine, as ``connect``).

    A node without an address of its own is reached through node 0's SSH, with its own pinned host key: the
    jump only carries the connection, it is never trusted with the node's identity.
    """
    if node == 0:
        return connect(record, ui, wait=wait, mark=mark)
    if not 0 < node <= len(record.workers):
        raise LabctlError(
            f"Lab '{record.name}' has {record.nodes} node{'s' if record.nodes != 1 else ''}; there is no node {node}.",
            hint="'labctl status' lists the lab's nodes.",
        )
    from labctl.keys import check_lab_key
    from labctl.machine.ssh import SSHMachine

    worker = record.workers[node - 1]
    if not record.ssh_key_path or not worker.host_key:
        raise LabctlError(
            f"Lab '{record.name}' does not record how to reach node {node} ({worker.host}).",
            hint="Run 'labctl up' for it again to finish creating it, or 'labctl down' to remove it.",
        )
    check_lab_key(record.name, record.ssh_key_path)
    head = _ssh_head(record, ui, wait) if worker.via_head else None
    machine = SSHMachine(
        worker.host,
        worker.port,
        worker.user or record.user or getpass.getuser(),
        record.ssh_key_path,
        worker.host_key,
        ui=ui,
        mark=mark,
        via=head,
        own_via=True,
    )
    try:
        return machine.connect(wait=wait)
    except BaseException:
        machine.close()
        raise


def _ssh_head(record: LabRecord, ui: Reporter, wait: float) -> SSHMachine:
    from labctl.machine.ssh import SSHMachine

    head = connect(record, ui, wait=wait, mark=False)
    if not isinstance(head, SSHMachine):
        raise LabctlError(f"Lab '{record.name}' has workers behind a head node that is not reached over SSH.")
    return head
