"""The idle agent on the lab's machine: installed from ``templates/`` as a systemd timer, its config rewritten by
`labctl idle-stop`, its state read back by `labctl status`; what only a target can do comes from
``Target.idle_agent``.

Each file is the stdin of ``install -D -m MODE /dev/stdin PATH`` (an argv list, through ``sudo -n`` unless labctl
logs in as root), so nothing of the user's is ever part of a command's text. Installing twice changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

from labctl import idle
from labctl.assets import template
from labctl.errors import LabctlError
from labctl.machine import Machine
from labctl.state import LabRecord
from labctl.targets.base import Target
from labctl.ui import Reporter

TIMER = "labctl-idle.timer"


def _as_root(machine: Machine) -> list[str]:
    return [] if machine.run(["id", "-u"], check=False).output.strip() == "0" else ["sudo", "-n"]


def _write(machine: Machine, sudo: list[str], files: list[tuple[str, bytes, int]]) -> None:
    for path, content, mode in files:
        machine.run([*sudo, "install", "-D", "-m", f"{mode:04o}", "/dev/stdin", path], stdin=content, timeout=60)


def install(machine: Machine, record: LabRecord, config: dict[str, Any]) -> str:
    """Write the agent, its config, the token and the units; enable the timer. Returns what now runs it."""
    assert record.jupyter_token
    units = {name: template(name).read_bytes() for name in idle.UNITS}
    sudo = _as_root(machine)
    _write(
        machine, sudo, idle.machine_files(config, template("idle_agent.py").read_bytes(), units, record.jupyter_token)
    )
    if not machine.run(["test", "-d", "/run/systemd/system"], check=False).ok:
        return "installed, but systemd does not run on the machine, so nothing starts it"
    machine.run([*sudo, "systemctl", "daemon-reload"], timeout=60)
    machine.run([*sudo, "systemctl", "enable", "--now", TIMER], timeout=60)
    return f"checks every minute ({TIMER})"


def settle(record: LabRecord, target: Target, ui: Reporter, *, only_config: bool = False) -> str | None:
    """Install (or update) the agent as ``record.idle`` says; returns a line for the user, None when none is wanted.

    A target that cannot (this computer; an Azure login without the right to assign roles) leaves the reason
    in ``record.idle['why_not']`` and a warning, never an error: the lab itself is fine.
    """
    from labctl.labhost import EVERYDAY_WAIT
    from labctl.machine import connect

    rules = idle.IdleRules.of(record)
    if not (rules.window_minutes or rules.budget_usd is not None or record.idle.get("installed")):
        return None  # nothing asked for (a machine labctl did not make gets an agent only when asked)
    known = record.idle.get("why_not")  # already told (e.g. by `up` before anything was created)
    try:
        extras = target.idle_agent(record)
    except LabctlError as exc:
        record.idle.update(installed=False, why_not=known or exc.message)
        if only_config:
            raise
        if not known:
            ui.warn(f"No idle stop: {exc.message}")
        return None
    config = idle.agent_config(record, extras)
    head = record.nodes[0]
    # An Azure lab's workers watch node 0 and deallocate themselves (their own identity) once it is gone.
    workers = range(1, len(record.nodes)) if config["mode"] == "azure" and head.private_address else range(0)
    for node in (0, *workers):
        on_node = config if node == 0 else {**config, "head": f"{head.private_address}:{head.port}", "node_vms": []}
        with connect(record, ui, wait=EVERYDAY_WAIT, node=node) as machine:
            if only_config and record.idle.get("installed"):
                _write(machine, _as_root(machine), [idle.config_file(on_node)])
                how = "config rewritten; the agent reads it on its next check"
            else:
                with ui.step("Idle agent on the machine" if node == 0 else f"Idle agent on node {node}"):
                    how = install(machine, record, on_node)
    record.idle.update(installed=True, mode=config["mode"])
    record.idle.pop("why_not", None)
    what = f"stops the lab after {rules.window_minutes:g} idle minutes" if rules.window_minutes else "idle stop off"
    return f"Idle agent ({config['mode']}): {what}; {how}."


def read_facts(machine: Machine) -> dict[str, Any]:
    """The agent's config and its state file as `labctl status` shows them."""

    def load(path: str) -> dict[str, Any] | None:
        result = machine.run(["cat", path], check=False, timeout=30)
        try:
            data = json.loads(result.output) if result.ok else None
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    return idle.agent_facts(load(idle.CONFIG_PATH), load(idle.STATE_PATH))
