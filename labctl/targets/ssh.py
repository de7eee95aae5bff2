"""`--target ssh`: an existing Linux machine the user can already log in to. labctl never deletes it."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

from labctl.errors import UsageError
from labctl.hostkeys import confirm_host_key, fingerprint
from labctl.spec import LabSpec
from labctl.state import LabRecord, SaveFn
from labctl.ui import Outcome, Reporter

DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


def default_key() -> Path:
    for name in DEFAULT_KEYS:
        path = Path.home() / ".ssh" / name
        if path.is_file():
            return path
    raise UsageError(
        "No SSH key was given and none of ~/.ssh/id_ed25519, id_ecdsa, id_rsa exists.",
        hint="Point --ssh-key at the private key you log in to that machine with.",
    )


class SSHTarget:
    """Implements ``Target`` only: labctl neither powers, finds nor deletes a machine it did not make."""

    kind = "ssh"
    label = "an SSH host"
    owns_machine = False
    remote = True
    settings: tuple[str, ...] = ()

    def plan(self, spec: LabSpec) -> Outcome:
        assert spec.host is not None
        gpu = " with the NVIDIA container runtime" if spec.gpu else ""
        steps = [
            f"connect to {spec.host} (host key from ~/.ssh/known_hosts, --host-key-fingerprint, or confirmed by you)",
            f"make sure Docker runs there{gpu}",
            "build the lab image there (once) and start the Jupyter container on its 127.0.0.1",
        ]
        text = "\n".join([f"labctl up --target ssh would, on {spec.host}:", *[f"  - {s}" for s in steps]])
        return Outcome({"target": "ssh", "host": str(spec.host), "gpu": spec.gpu, "steps": steps}, text)

    def provision(self, spec: LabSpec, record: LabRecord, ui: Reporter, save: SaveFn) -> LabRecord:
        from labctl.machine.ssh import SSHMachine

        assert spec.host is not None
        address = spec.host
        user = address.user or record.user or getpass.getuser()
        if (record.host, record.port) != (address.host, address.port):
            record.host_key = None  # another machine: its key must be pinned anew
        key = spec.ssh_key or (Path(record.ssh_key_path) if record.ssh_key_path else None) or default_key()
        record.host, record.port, record.user = address.host, address.port, user
        record.ssh_key_path = str(key.expanduser().resolve())
        want = spec.host_key_fingerprint
        if record.host_key is not None and want is not None and fingerprint(record.host_key) != want:
            raise UsageError(
                f"Lab '{record.name}' has pinned the host key {fingerprint(record.host_key)} for {address.host}, "
                f"not {want}.",
                hint="Check the fingerprint on the machine; to pin another machine's key, use another --name.",
            )
        if record.host_key is None:
            record.host_key = confirm_host_key(address.host, address.port, ui, expected=want, assume_yes=spec.yes)
        save(record)
        SSHMachine(address.host, address.port, user, record.ssh_key_path, record.host_key, ui=ui).connect(
            wait=30.0
        ).close()
        ui.info(f"Connected to {user}@{address.host}:{address.port} with the pinned host key.")
        return record

    def destroy(self, record: LabRecord, ui: Reporter) -> None:
        from labctl.labhost import teardown_lab

        if not record.host_key:
            ui.info("The lab never reached its machine; nothing to remove there.")
            return
        teardown_lab(record, ui)  # a failure names what is left and how to remove it

    def describe(self, record: LabRecord) -> dict[str, Any]:
        from labctl.labhost import describe_lab

        facts: dict[str, Any] = {"host": f"{record.user}@{record.host}:{record.port}"}
        facts.update(describe_lab(record))
        return facts

    def removal(self, record: LabRecord) -> str:
        return f"the lab container on {record.host} (the machine itself stays)"

    def where(self, record: LabRecord) -> tuple[str, str | None]:
        return record.host or "(not reached yet)", None


__all__ = ["SSHTarget"]
