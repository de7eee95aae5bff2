"""How labctl reaches the nodes of a lab: ``connect(record, ui, node=n)`` gives a ``Machine`` for any target."""

from __future__ import annotations

from labctl.keys import check_lab_key
from labctl.machine.base import LocalMachine, Machine
from labctl.sshconfig import reach
from labctl.state import LabRecord
from labctl.ui import Reporter

DEFAULT_WAIT = 600.0  # how long `up` waits for a new VM's SSH: Azure VMs usually answer within two minutes


def connect(record: LabRecord, ui: Reporter, *, node: int = 0, wait: float = 0.0, mark: bool = True) -> Machine:
    """Node ``node`` of the lab (0: the one with Jupyter), connected; ``wait``: seconds of retrying while it boots.
    A node without an address of its own rides node 0's SSH, its own host key checked: the jump is not trusted."""
    from labctl.machine.ssh import SSHMachine

    if record.target == "local":
        return LocalMachine()
    found, user = reach(record, node)
    assert found.host and found.host_key and record.ssh_key_path
    check_lab_key(record.name, record.ssh_key_path)  # a key gone or replaced is named before any connection
    via = connect(record, ui, wait=wait, mark=False) if found.via_head and node != 0 else None
    assert via is None or isinstance(via, SSHMachine)  # node 0 of a lab with nodes is reached over SSH
    machine = SSHMachine(found.host, found.port, user, record.ssh_key_path, found.host_key, ui=ui, mark=mark, via=via)
    try:
        return machine.connect(wait=wait)
    except BaseException:
        machine.close()
        raise
