"""Idle stop on the lab's machines: ``templates/idle_agent.py``, run each minute by ``labctl-idle.timer``, its config
(rewritten by `labctl idle-stop`) and its state (read back by `labctl status`). Each file is the stdin of ``install``,
so nothing of the user's is ever part of a command's text; installing twice changes nothing."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from labctl.errors import LabctlError, UsageError
from labctl.files import template
from labctl.machine.base import SSH_MARKS
from labctl.state import LabRecord
from labctl.ui import Reporter

if TYPE_CHECKING:
    from labctl.machine import Machine
    from labctl.targets.base import Target

AGENT_PATH = "/opt/labctl/idle_agent.py"
RUN_STATE_PATH = "/opt/labctl/run_state.py"  # the agent checkpoints the runs with it before a stop
CONFIG_PATH = "/etc/labctl/idle.json"
TOKEN_PATH = "/etc/labctl/jupyter-token"
SYSTEMD_DIR = "/etc/systemd/system"
TIMER = "labctl-idle.timer"
UNITS = ("labctl-idle.service", TIMER)
STATE_PATH = "/var/lib/labctl-idle/state.json"
MAX_WINDOW_MINUTES = 7 * 24 * 60
CHECKPOINT_WORDS = {
    "idle": "before the idle stop",
    "budget": "before the budget stop",
    "shutdown": "before the daily shutdown",
    "spot": "on the Spot eviction notice",
}


def _number(value: object, off: tuple[str, ...]) -> float | None:
    """The number in ``value``, None for one of the ``off`` words, -1 for anything else."""
    text = str(value).strip().lower()
    if text in off:
        return None
    try:
        return float(text)
    except ValueError:
        return -1.0


def parse_window(value: object, where: str = "--idle-stop") -> float:
    minutes = _number(value, ("off", "no", "false"))
    if not minutes:
        return 0.0
    if not 0 < minutes <= MAX_WINDOW_MINUTES:
        raise UsageError(
            f"{where} '{value}' is not a number of minutes.",
            hint=f"Give the minutes of idleness before the lab stops (1-{MAX_WINDOW_MINUTES}, e.g. 60), "
            "or 'off' (or 0) to turn idle stop off.",
        )
    return minutes


def parse_budget(value: object, where: str = "--budget") -> float | None:
    usd = _number(str(value).strip().lstrip("$"), ("", "off", "none"))
    if usd is not None and not 0 < usd < 1_000_000:
        raise UsageError(
            f"{where} '{value}' is not an amount of US dollars.",
            hint="Give the most the lab may cost since its creation, e.g. 25 or 12.50, or 'off'.",
        )
    return usd


def _window(record: LabRecord) -> float:
    return float(record.idle.get("window_minutes") or 0)  # 0: no idle stop


def agent_config(record: LabRecord, extras: dict[str, Any]) -> dict[str, Any]:
    """The agent's config for the lab, with the target's part (``extras``: its ``mode`` and what that needs)."""
    if not record.container_name:
        raise LabctlError(f"Lab '{record.name}' has no container yet.", hint="Run 'labctl up' to finish it.")
    head = record.nodes[0]
    home = f"/home/{head.user}" if head.user and head.user != "root" else "/root"
    return {
        "window_minutes": _window(record),
        "budget_usd": record.idle.get("budget_usd"),
        "created_at": None,
        "jupyter_url": f"http://127.0.0.1:{record.jupyter_port}",
        "jupyter_token_file": TOKEN_PATH,
        "container": record.container_name,
        "runs_dir": "/workspace/runs",
        "ssh_marks_dir": f"{home}/{SSH_MARKS}",
        "ssh_port": head.port,
        "state_file": STATE_PATH,
        "run_state": RUN_STATE_PATH,
        **extras,
    }


def machine_files(config: dict[str, Any], token: str) -> list[tuple[str, bytes, int]]:
    """(path, content, mode) of every file `up` writes on the machine, before enabling the timer."""
    files = [
        (AGENT_PATH, template("idle_agent.py").read_bytes(), 0o755),
        (RUN_STATE_PATH, template("run_state.py").read_bytes(), 0o644),
        (CONFIG_PATH, (json.dumps(config, indent=2) + "\n").encode(), 0o644),
        (TOKEN_PATH, token.encode(), 0o600),
    ]
    return files + [(f"{SYSTEMD_DIR}/{name}", template(name).read_bytes(), 0o644) for name in UNITS]


def install(machine: Machine, config: dict[str, Any], token: str, *, only_config: bool = False) -> str:
    sudo = [] if machine.run(["id", "-u"], check=False).output.strip() == "0" else ["sudo", "-n"]
    files = [file for file in machine_files(config, token) if not only_config or file[0] == CONFIG_PATH]
    for path, content, mode in files:
        machine.run([*sudo, "install", "-D", "-m", f"{mode:04o}", "/dev/stdin", path], stdin=content, timeout=60)
    if only_config:
        return "config rewritten; the agent reads it on its next check"
    if not machine.run(["test", "-d", "/run/systemd/system"], check=False).ok:
        return "installed, but systemd does not run on the machine, so nothing starts it"
    machine.run([*sudo, "systemctl", "daemon-reload"], timeout=60)
    machine.run([*sudo, "systemctl", "enable", "--now", TIMER], timeout=60)
    return f"checks every minute ({TIMER})"


def settle(record: LabRecord, target: Target, ui: Reporter, *, only_config: bool = False) -> str | None:
    """Install (or update) the agent as ``record.idle`` says; a line for the user, None when none is wanted. A
    target that cannot leaves the reason in ``record.idle['why_not']`` and a warning: the lab itself is fine."""
    from labctl.labhost import EVERYDAY_WAIT
    from labctl.machine import connect

    window, budget = _window(record), record.idle.get("budget_usd")
    if not (window or budget is not None or record.idle.get("installed")):
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
    if not (token := record.jupyter_token):  # the agent asks Jupyter for activity: never without its token
        raise LabctlError(f"Lab '{record.name}' has no Jupyter token recorded.", hint="Run 'labctl up' again.")
    config, head = agent_config(record, extras), record.nodes[0]
    # An Azure lab's workers watch node 0 and deallocate themselves (their own identity) once it is gone.
    workers = range(1, len(record.nodes)) if config["mode"] == "azure" and head.private_address else range(0)
    for node in (0, *workers):
        on_node = config if node == 0 else {**config, "head": f"{head.private_address}:{head.port}", "node_vms": []}
        with connect(record, ui, wait=EVERYDAY_WAIT, node=node) as machine:
            if only_config and record.idle.get("installed"):
                how = install(machine, on_node, token, only_config=True)
            else:
                with ui.step("Idle agent on the machine" if node == 0 else f"Idle agent on node {node}"):
                    how = install(machine, on_node, token)
    record.idle.update(installed=True, mode=config["mode"])
    record.idle.pop("why_not", None)
    what = f"stops the lab after {window:g} idle minutes" if window else "idle stop off"
    return f"Idle agent ({config['mode']}): {what}; {how}."


def _utc(epoch: object) -> str | None:
    if not isinstance(epoch, (int, float)):
        return None
    return datetime.fromtimestamp(float(epoch), timezone.utc).replace(microsecond=0).isoformat()


def read_facts(machine: Machine) -> dict[str, Any]:
    def load(path: str) -> dict[str, Any] | None:
        result = machine.run(["cat", path], check=False, timeout=30)
        try:
            data = json.loads(result.output) if result.ok else None
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    return agent_facts(load(CONFIG_PATH), load(STATE_PATH))


def agent_facts(config: dict[str, Any] | None, state: dict[str, Any] | None) -> dict[str, Any]:
    """What `labctl status` shows from the agent's config and state files (times in UTC)."""
    if config is None:
        return {"idle_agent": "not installed"}
    seconds = config.get("window_seconds")
    window = float(seconds) if isinstance(seconds, (int, float)) else float(config.get("window_minutes") or 0) * 60
    facts: dict[str, Any] = {"idle_agent": config.get("mode"), "idle_stop_minutes": window / 60}
    if config.get("budget_usd") is not None:
        facts["budget_usd"] = config["budget_usd"]
    state = state or {}
    checked, since, last = state.get("checked_at"), state.get("idle_since"), state.get("last")
    if isinstance(last, str):
        facts["idle_last_decision"] = last.removeprefix("labctl-idle:").strip()
        facts["idle_checked_at"] = _utc(checked)
    point = state.get("checkpoint")
    if isinstance(point, dict) and point.get("reason") in CHECKPOINT_WORDS and isinstance(point.get("said"), str):
        facts["runs_checkpointed"] = f"{CHECKPOINT_WORDS[point['reason']]} ({_utc(point.get('at'))}): {point['said']}"
    if isinstance(checked, (int, float)) and isinstance(since, (int, float)):
        facts["idle_for_seconds"] = max(0.0, float(checked) - float(since))
        if window > 0:
            facts["idle_stop_due"] = _utc(float(since) + window)
    return facts
