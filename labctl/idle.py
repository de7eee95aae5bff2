"""What labctl puts on a lab machine and in Azure so that the machine stops itself when idle (pure data).

On the machine: ``templates/idle_agent.py`` with its config (JSON) and the Jupyter token, run each minute by
``templates/labctl-idle.timer``. In Azure: the VM's system-assigned identity, a custom role that may only read the
VM and deallocate it, and one assignment of that role to the identity at the VM's own scope. The names are GUIDs
derived from the lab's ids, so a second `up` converges on the same role and assignment and `down` finds them
without local state.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from labctl.errors import UsageError
from labctl.pricing import LabPrices

AGENT_PATH = "/opt/labctl/idle_agent.py"
CONFIG_PATH = "/etc/labctl/idle.json"
TOKEN_PATH = "/etc/labctl/jupyter-token"
SYSTEMD_DIR = "/etc/systemd/system"
UNITS = ("labctl-idle.service", "labctl-idle.timer")
STATE_PATH = "/var/lib/labctl-idle/state.json"
AUTHORIZATION_API_VERSION = "2022-04-01"
ROLE_ACTIONS = (
    "Microsoft.Compute/virtualMachines/deallocate/action",
    "Microsoft.Compute/virtualMachines/read",
)
# labctl runs this (a constant: nothing of the user's in it) first on each of its own SSH connections, so that the
# agent does not count them as someone working on the machine. The mark is removed when the connection closes.
SSH_MARKS = ".cache/labctl-ssh"
SSH_MARK_COMMAND = f'd="$HOME/{SSH_MARKS}"; mkdir -p "$d" && printf "%s\\n" "$SSH_CONNECTION" > "$d/$$"'
_NAMESPACE = uuid.UUID("6f1d3c1e-5b0a-4f7e-9a51-1abc0c7d1e01")
MAX_WINDOW_MINUTES = 7 * 24 * 60
# What a caller needs to give a VM's identity its role (Owner and User Access Administrator have both).
GRANT_ACTIONS = (
    "Microsoft.Authorization/roleDefinitions/write",
    "Microsoft.Authorization/roleAssignments/write",
)
ASK_FOR = (
    "Ask an owner of the subscription for the Owner or User Access Administrator role, or for a role that "
    "includes Microsoft.Authorization/roleAssignments/write and roleDefinitions/write, on the subscription or "
    "the lab's resource group"
)


def parse_window(value: object, where: str = "--idle-stop") -> float:
    """Minutes of idleness before the lab stops; 'off' or 0 turns idle stop off."""
    text = str(value).strip().lower()
    if text in ("off", "0", "no", "false"):
        return 0.0
    try:
        minutes = float(text)
    except ValueError:
        minutes = -1.0
    if minutes == 0:
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
    text = str(value).strip().lower().lstrip("$")
    if text in ("", "off", "none"):
        return None
    try:
        usd = float(text)
    except ValueError:
        usd = -1.0
    if not 0 < usd < 1_000_000:
        raise UsageError(
            f"{where} '{value}' is not an amount of US dollars.",
            hint="Give the most the lab may cost since its creation, e.g. 25 or 12.50, or 'off'.",
        )
    return usd


def role_definition_name(vm_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"role:{vm_id.lower()}"))


def role_definition_id(subscription_id: str, vm_id: str) -> str:
    """The role's full id as ARM returns it: custom roles live at subscription level whatever scope made them."""
    name = role_definition_name(vm_id)
    return f"/subscriptions/{subscription_id}/providers/Microsoft.Authorization/roleDefinitions/{name}"


def role_definition_url(resource_group_id: str, vm_id: str) -> str:
    """Where `up` PUTs the role and `down` DELETEs it (after the group is gone: roles outlive groups)."""
    return f"{resource_group_id}/providers/Microsoft.Authorization/roleDefinitions/{role_definition_name(vm_id)}"


def role_assignment_url(vm_id: str) -> str:
    name = uuid.uuid5(_NAMESPACE, f"assignment:{vm_id.lower()}")
    return f"{vm_id}/providers/Microsoft.Authorization/roleAssignments/{name}"


def role_definition(resource_group_id: str, vm_id: str, lab: str) -> dict[str, Any]:
    """The custom role: read and deallocate virtual machines, nothing else; assignable in the lab's group only.

    Custom roles take management-group, subscription or resource-group scopes as assignable scopes, so the role
    names the lab's group and the assignment narrows it to the one VM. Role names are unique in the directory,
    hence the VM id's hash in it.
    """
    return {
        "properties": {
            "roleName": f"labctl idle stop {lab} {role_definition_name(vm_id)[:8]}",
            "description": f"Lets the labctl lab '{lab}' deallocate its own VM when it is idle.",
            "type": "CustomRole",
            "permissions": [{"actions": list(ROLE_ACTIONS), "notActions": [], "dataActions": [], "notDataActions": []}],
            "assignableScopes": [resource_group_id],
        }
    }


def role_assignment(subscription_id: str, vm_id: str, principal_id: str, role_of: str | None = None) -> dict[str, Any]:
    """The assignment of the role to the VM's identity at the VM's own scope (``principalType`` avoids a
    PrincipalNotFound while the new identity replicates through the directory). For the other VMs of a lab of
    several, ``vm_id`` is the worker's and ``role_of`` node 0's: node 0's identity may deallocate each of them."""
    return {
        "properties": {
            "roleDefinitionId": role_definition_id(subscription_id, role_of or vm_id),
            "principalId": principal_id,
            "principalType": "ServicePrincipal",
        }
    }


@dataclass(frozen=True)
class IdleRules:
    window_minutes: float = 60.0  # 0: no idle stop
    budget_usd: float | None = None


def agent_config(
    mode: str,
    rules: IdleRules,
    *,
    jupyter_port: int,
    container: str,
    admin_user: str,
    created_at: str | None = None,
    prices: LabPrices | None = None,
    spot: bool = False,
) -> dict[str, Any]:
    """``mode``: azure, container or shutdown."""
    config: dict[str, Any] = {
        "mode": mode,
        "window_minutes": rules.window_minutes,
        "budget_usd": rules.budget_usd,
        "created_at": created_at,
        "jupyter_url": f"http://127.0.0.1:{jupyter_port}",
        "jupyter_token_file": TOKEN_PATH,
        "container": container,
        "runs_dir": "/workspace/runs",
        "ssh_marks_dir": f"/home/{admin_user}/{SSH_MARKS}" if admin_user != "root" else f"/root/{SSH_MARKS}",
        "state_file": STATE_PATH,
    }
    if prices is not None:
        config["usd_per_hour"] = prices.compute_per_hour(spot)
        config["fixed_usd_per_hour"] = prices.fixed_per_hour
    return config


def machine_files(
    config: dict[str, Any], agent_source: bytes, units: dict[str, bytes], token: str
) -> list[tuple[str, bytes, int]]:
    """(path, content, mode) of every file `up` writes on the machine, before enabling ``labctl-idle.timer``."""
    files = [
        (AGENT_PATH, agent_source, 0o755),
        (CONFIG_PATH, (json.dumps(config, indent=2) + "\n").encode(), 0o644),
        (TOKEN_PATH, token.encode(), 0o600),
    ]
    files += [(f"{SYSTEMD_DIR}/{name}", units[name], 0o644) for name in UNITS]
    return files


def agent_facts(config: dict[str, Any] | None, state: dict[str, Any] | None) -> dict[str, Any]:
    """What `labctl status` shows from the agent's config and state files on the machine (times in UTC)."""
    from datetime import datetime, timezone

    def when(epoch: object) -> str | None:
        if not isinstance(epoch, (int, float)):
            return None
        return datetime.fromtimestamp(float(epoch), timezone.utc).replace(microsecond=0).isoformat()

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
        facts["idle_checked_at"] = when(checked)
    if isinstance(checked, (int, float)) and isinstance(since, (int, float)):
        facts["idle_for_seconds"] = max(0.0, float(checked) - float(since))
        if window > 0:
            facts["idle_stop_due"] = when(float(since) + window)
    return facts
