"""How labctl reaches the host of a lab: ``connect(record, ui)`` gives a ``Machine`` for any target."""

from __future__ import annotations

import getpass

from labctl.errors import LabctlError
from labctl.machine.base import CommandFailed, CommandResult, Machine
from labctl.state import LabRecord
from labctl.ui import Reporter

__all__ = ["CommandFailed", "CommandResult", "Machine", "connect"]

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
