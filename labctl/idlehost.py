"""The idle agent on the lab's machine: installed from ``templates/`` as a systemd timer, its config rewritten by
`labctl idle-stop`, its state read back by `labctl status`. The same for every target; what only a target can
do (an Azure VM deallocating itself with its own identity) comes from ``Target.idle_agent``.

Files go to the machine as data: each one is the stdin of ``install -D -m MODE /dev/stdin PATH`` (an argv list,
through ``sudo -n`` unless labctl logs in as root), so nothing of the user's is ever part of a command's text.
Installing twice writes the same files and enables the same timer: it is idempotent.
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


def rules(record: LabRecord) -> idle.IdleRules:
    return idle.IdleRules(float(record.idle.get("window_minutes") or 0), record.idle.get("budget_usd"))


def agent_extras(record: LabRecord, target: Target) -> dict[str, Any] | None:
    """The target's part of the agent config, or None when no agent is wanted; LabctlError when it cannot be."""
    wanted = rules(record).window_minutes or rules(record).budget_usd is not None or record.idle.get("installed")
    if not wanted:
        return None  # nothing asked for (a machine labctl did not make gets an agent only when asked)
    return target.idle_agent(record)


def config_for(record: LabRecord, extras: dict[str, Any]) -> dict[str, Any]:
    if not record.container_name:
        raise LabctlError(f"Lab '{record.name}' has no container yet.", hint="Run 'labctl up' to finish it.")
    extras = dict(extras)
    config = idle.agent_config(
        str(extras.pop("mode")),
        rules(record),
        jupyter_port=record.jupyter_port,
        container=record.container_name,
        admin_user=record.nodes[0].user or "root",
    )
    config["ssh_port"] = record.nodes[0].port
    config.update(extras)
    return config


def _as_root(machine: Machine) -> list[str]:
    uid = machine.run(["id", "-u"], check=False).output.strip()
    return [] if uid == "0" else ["sudo", "-n"]


def _write(machine: Machine, sudo: list[str], path: str, content: bytes, mode: int) -> None:
    machine.run([*sudo, "install", "-D", "-m", f"{mode:04o}", "/dev/stdin", path], stdin=content, timeout=60)


def install(machine: Machine, record: LabRecord, config: dict[str, Any]) -> str:
    """Write the agent, its config, the token and the units; enable the timer. Returns what now runs it."""
    assert record.jupyter_token
    units = {name: template(name).read_bytes() for name in idle.UNITS}
    files = idle.machine_files(config, template("idle_agent.py").read_bytes(), units, record.jupyter_token)
    sudo = _as_root(machine)
    for path, content, mode in files:
        _write(machine, sudo, path, content, mode)
    if not machine.run(["test", "-d", "/run/systemd/system"], check=False).ok:
        return "installed, but systemd does not run on the machine, so nothing starts it"
    machine.run([*sudo, "systemctl", "daemon-reload"], timeout=60)
    machine.run([*sudo, "systemctl", "enable", "--now", TIMER], timeout=60)
    return f"checks every minute ({TIMER})"


def write_config(machine: Machine, config: dict[str, Any]) -> None:
    """Only the config: the agent reads it afresh on its next run."""
    _write(machine, _as_root(machine), idle.CONFIG_PATH, (json.dumps(config, indent=2) + "\n").encode(), 0o644)


def settle(record: LabRecord, target: Target, ui: Reporter, *, only_config: bool = False) -> str | None:
    """Install (or update) the agent as ``record.idle`` says; returns a line for the user, None when none is wanted.

    A target that cannot (this computer; an Azure login without the right to assign roles) leaves the reason
    in ``record.idle['why_not']`` and a warning, never an error: the lab itself is fine.
    """
    from labctl.labhost import machine_for

    known = record.idle.get("why_not")  # already told (e.g. by `up` before anything was created)
    try:
        extras = agent_extras(record, target)
    except LabctlError as exc:
        record.idle.update(installed=False, why_not=known or exc.message)
        if only_config:
            raise
        if not known:
            ui.warn(f"No idle stop: {exc.message}")
        return None
    if extras is None:
        return None
    config = config_for(record, extras)
    with machine_for(record, ui) as machine:
        if only_config and record.idle.get("installed"):
            write_config(machine, config)
            how = "config rewritten; the agent reads it on its next check"
        else:
            with ui.step("Idle agent on the machine"):
                how = install(machine, record, config)
    record.idle.update(installed=True, mode=config["mode"])
    record.idle.pop("why_not", None)
    window = rules(record).window_minutes
    what = f"stops the lab after {window:g} idle minutes" if window else "idle stop off"
    return f"Idle agent ({config['mode']}): {what}; {how}."


def read_facts(machine: Machine) -> dict[str, Any]:
    """The agent's config and its state file as `labctl status` shows them."""

    def load(path: str) -> dict[str, Any] | None:
        result = machine.run(["cat", path], check=False, timeout=30)
        if not result.ok:
            return None
        try:
            data = json.loads(result.output)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    return idle.agent_facts(load(idle.CONFIG_PATH), load(idle.STATE_PATH))
