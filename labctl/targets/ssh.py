"""`--target ssh`: an existing Linux machine the user can already log in to. labctl never deletes it."""

from __future__ import annotations

import getpass
from dataclasses import replace
from pathlib import Path
from typing import Any

from labctl.errors import UsageError
from labctl.keys import confirm_host_key, fingerprint
from labctl.machine import connect
from labctl.spec import LabSpec
from labctl.state import LabRecord, NodeRecord, SaveFn
from labctl.targets.base import Target
from labctl.ui import Outcome, Reporter


def default_key() -> Path:
    for path in (Path.home() / ".ssh" / name for name in ("id_ed25519", "id_ecdsa", "id_rsa")):
        if path.is_file():
            return path
    raise UsageError(
        "No SSH key was given and none of ~/.ssh/id_ed25519, id_ecdsa, id_rsa exists.",
        hint="Point --ssh-key at the private key you log in to that machine with.",
    )


class SSHTarget(Target):
    """labctl neither powers, finds nor deletes a machine it did not make."""

    kind = "ssh"
    label = "an SSH host"

    def plan(self, spec: LabSpec) -> Outcome:
        assert spec.host is not None
        gpu = " with the NVIDIA container runtime" if spec.gpu else ""
        hosts = [str(h) for h in [spec.host, *spec.workers]]
        machines = ", ".join(hosts)
        steps = [
            f"connect to {machines} (host keys from ~/.ssh/known_hosts, --host-key-fingerprint, or confirmed by you)",
            f"make sure Docker runs there{gpu}",
            f"build the lab image on each machine (once) and start the Jupyter container on {spec.host}'s "
            "127.0.0.1 and a lab container on each other machine, all on the machines' own networks: every "
            "machine must reach the others at the address given here"
            if spec.workers
            else "build the lab image there (once) and start the Jupyter container on its 127.0.0.1",
        ]
        text = "\n".join([f"labctl up --target ssh would, on {machines}:", *[f"  - {s}" for s in steps]])
        data = {"target": "ssh", "host": hosts[0], "workers": hosts[1:], "gpu": spec.gpu, "steps": steps}
        return Outcome(data, text)

    def provision(self, spec: LabSpec, record: LabRecord, ui: Reporter, save: SaveFn) -> LabRecord:
        _check_same_workers(record, spec)
        key = spec.ssh_key or (Path(record.ssh_key_path) if record.ssh_key_path else None) or default_key()
        record.ssh_key_path = str(key.expanduser().resolve())
        record.nodes[0] = _pinned(record, spec, 0, ui)  # first: the workers' user defaults to its
        record.nodes[1:] = [_pinned(record, spec, i, ui) for i in range(1, 1 + len(spec.workers))]
        save(record)
        for node in range(len(record.nodes)):
            with connect(record, ui, node=node, wait=30.0) as machine:
                ui.info(f"Connected to {machine.describe()} with {'its' if node else 'the'} pinned host key.")
        return record

    def destroy(self, record: LabRecord, ui: Reporter, keep_workspace: bool = False) -> None:
        if not record.nodes[0].host_key:
            ui.info("The lab never reached its machine; nothing to remove there.")
            return
        super().destroy(record, ui, keep_workspace)

    def describe(self, record: LabRecord) -> dict[str, Any]:
        head = record.nodes[0]
        return {"host": f"{head.user}@{head.host}:{head.port}"}

    def removal(self, record: LabRecord, keep: bool = False) -> str:
        if len(record.nodes) > 1:
            hosts = ", ".join(str(n.host) for n in record.nodes)
            return f"the lab containers on {hosts} (the machines themselves stay)"
        return f"the lab container on {record.nodes[0].host} (the machine itself stays)"

    def where(self, record: LabRecord) -> tuple[str, str | None]:
        return record.nodes[0].host or "(not reached yet)", None


def _check_same_workers(record: LabRecord, spec: LabSpec) -> None:
    """A lab's other machines are the ones it was made with: `up` again converges, it never moves a lab."""
    if record.nodes[0].host is None or not (record.nodes[1:] or spec.workers):
        return
    had = [(w.host, w.port) for w in record.nodes[1:]]
    asked = [(h.host, h.port) for h in spec.workers]
    if had != asked:
        shown = ", ".join(f"{h}:{p}" for h, p in had) or "no other machine"
        raise UsageError(
            f"Lab '{record.name}' has {shown} besides {record.nodes[0].host}; this 'up' names other machines.",
            hint="Give the same --host values in the same order to bring it up to date, or 'labctl down --name "
            f"{record.name}' and create it again on the machines you want.",
        )


def _pinned(record: LabRecord, spec: LabSpec, index: int, ui: Reporter) -> NodeRecord:
    """Node ``index`` at its address (0: --host). Its host key is kept from an earlier `up` at the same address, else
    from known_hosts, --host-key-fingerprint (node 0) or confirmed (--yes never pins one)."""
    assert spec.host is not None
    address, want = [spec.host, *spec.workers][index], spec.host_key_fingerprint if index == 0 else None
    kept = record.nodes[index] if index < len(record.nodes) else NodeRecord()
    host_key = kept.host_key if (kept.host, kept.port) == (address.host, address.port) else None
    if host_key is not None and want is not None and fingerprint(host_key) != want:
        raise UsageError(
            f"Lab '{record.name}' has pinned the host key {fingerprint(host_key)} for {address.host}, not {want}.",
            hint="Check the fingerprint on the machine; to pin another machine's key, use another --name.",
        )
    if host_key is None:
        host_key = confirm_host_key(
            address.host, address.port, ui, expected=want, assume_yes=spec.yes, one_of_several=index > 0
        )
    return replace(
        kept,
        host=address.host,
        port=address.port,
        user=address.user or kept.user or (record.nodes[0].user if index else getpass.getuser()),
        host_key=host_key,
        # Every machine reaches the others at the address given: it is where the runs' ranks meet.
        private_address=address.host if spec.workers else None,
    )
