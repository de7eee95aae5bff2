"""What labctl puts on a lab machine so that it stops itself when idle: the agent's files and config (pure data).

``templates/idle_agent.py`` runs each minute from ``templates/labctl-idle.timer``; what only Azure needs (the VM's
role) is in ``labctl.targets.azure.idlerole``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from labctl.errors import LabctlError, UsageError
from labctl.state import LabRecord

AGENT_PATH = "/opt/labctl/idle_agent.py"
CONFIG_PATH = "/etc/labctl/idle.json"
TOKEN_PATH = "/etc/labctl/jupyter-token"
SYSTEMD_DIR = "/etc/systemd/system"
UNITS = ("labctl-idle.service", "labctl-idle.timer")
STATE_PATH = "/var/lib/labctl-idle/state.json"
# labctl runs this (a constant: nothing of the user's in it) first on each of its own SSH connections, so that the
# agent does not count them as someone working on the machine. The mark is removed when the connection closes.
SSH_MARKS = ".cache/labctl-ssh"
SSH_MARK_COMMAND = f'd="$HOME/{SSH_MARKS}"; mkdir -p "$d" && printf "%s\\n" "$SSH_CONNECTION" > "$d/$$"'
MAX_WINDOW_MINUTES = 7 * 24 * 60


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
    """Minutes of idleness before the lab stops; 'off' or 0 turns idle stop off."""
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
    """A spend limit in US dollars since the lab's creation; None for 'off'."""
    usd = _number(str(value).strip().lstrip("$"), ("", "off", "none"))
    if usd is not None and not 0 < usd < 1_000_000:
        raise UsageError(
            f"{where} '{value}' is not an amount of US dollars.",
            hint="Give the most the lab may cost since its creation, e.g. 25 or 12.50, or 'off'.",
        )
    return usd


@dataclass(frozen=True)
class IdleRules:
    window_minutes: float = 60.0  # 0: no idle stop
    budget_usd: float | None = None

    @classmethod
    def of(cls, record: LabRecord) -> IdleRules:
        return cls(float(record.idle.get("window_minutes") or 0), record.idle.get("budget_usd"))


def agent_config(record: LabRecord, extras: dict[str, Any]) -> dict[str, Any]:
    """The agent's config for the lab, with the target's part (``extras``: its ``mode`` and what that needs)."""
    if not record.container_name:
        raise LabctlError(f"Lab '{record.name}' has no container yet.", hint="Run 'labctl up' to finish it.")
    rules, head = IdleRules.of(record), record.nodes[0]
    home = f"/home/{head.user}" if head.user and head.user != "root" else "/root"
    return {
        "window_minutes": rules.window_minutes,
        "budget_usd": rules.budget_usd,
        "created_at": None,
        "jupyter_url": f"http://127.0.0.1:{record.jupyter_port}",
        "jupyter_token_file": TOKEN_PATH,
        "container": record.container_name,
        "runs_dir": "/workspace/runs",
        "ssh_marks_dir": f"{home}/{SSH_MARKS}",
        "ssh_port": head.port,
        "state_file": STATE_PATH,
        **extras,
    }


def config_file(config: dict[str, Any]) -> tuple[str, bytes, int]:
    return CONFIG_PATH, (json.dumps(config, indent=2) + "\n").encode(), 0o644


def machine_files(
    config: dict[str, Any], agent_source: bytes, units: dict[str, bytes], token: str
) -> list[tuple[str, bytes, int]]:
    """(path, content, mode) of every file `up` writes on the machine, before enabling ``labctl-idle.timer``."""
    files = [(AGENT_PATH, agent_source, 0o755), config_file(config), (TOKEN_PATH, token.encode(), 0o600)]
    return files + [(f"{SYSTEMD_DIR}/{name}", units[name], 0o644) for name in UNITS]


def _utc(epoch: object) -> str | None:
    from datetime import datetime, timezone

    if not isinstance(epoch, (int, float)):
        return None
    return datetime.fromtimestamp(float(epoch), timezone.utc).replace(microsecond=0).isoformat()


def agent_facts(config: dict[str, Any] | None, state: dict[str, Any] | None) -> dict[str, Any]:
    """What `labctl status` shows from the agent's config and state files on the machine (times in UTC)."""
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
    if isinstance(checked, (int, float)) and isinstance(since, (int, float)):
        facts["idle_for_seconds"] = max(0.0, float(checked) - float(since))
        if window > 0:
            facts["idle_stop_due"] = _utc(float(since) + window)
    return facts
