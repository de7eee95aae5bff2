"""Which subscription a command uses when none was named: the only usable one, or the Azure CLI's default.

The Azure CLI keeps its default subscription in ``azureProfile.json`` (in ``$AZURE_CONFIG_DIR``, ``~/.azure``
when unset) as the entry with ``isDefault: true``; the CLI writes that file with a byte-order mark.
Subscriptions in state ``Warned`` or ``PastDue`` still work (Azure warns before it disables one); ``Disabled``,
``Expired`` and ``Deleted`` ones are read-only or gone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labctl.errors import LabctlError, UsageError

USABLE_STATES = ("enabled", "warned", "pastdue")


def cli_config_dir() -> Path:
    return Path(os.environ.get("AZURE_CONFIG_DIR") or Path.home() / ".azure")


def cli_default_subscription() -> str | None:
    """The id of the Azure CLI's default subscription, or None when there is no readable profile."""
    try:
        data = json.loads((cli_config_dir() / "azureProfile.json").read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return None
    subscriptions = data.get("subscriptions") if isinstance(data, dict) else None
    for entry in subscriptions if isinstance(subscriptions, list) else []:
        if isinstance(entry, dict) and entry.get("isDefault") and entry.get("id"):
            return str(entry["id"])
    return None


@dataclass
class Picked:
    subscription_id: str
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _label(sub: dict[str, Any]) -> str:
    return f"{sub['subscriptionId']} ({sub.get('displayName', '')})"


def pick_subscription(subs: list[dict[str, Any]], cli_default: str | None) -> Picked:
    """The subscription to use among those the login sees, with what to tell the user about the choice."""
    usable = [s for s in subs if str(s.get("state", "Enabled")).lower() in USABLE_STATES]
    if not usable:
        seen = "; ".join(f"{_label(s)}: {s.get('state')}" for s in subs)
        raise LabctlError(
            "Your Azure login sees no usable subscription" + (f" ({seen})." if seen else "."),
            hint="Re-enable one in the Azure portal, or create one or ask to be added to one, then log in again.",
        )
    picked: Picked | None = None
    if len(usable) == 1:
        picked = Picked(str(usable[0]["subscriptionId"]))
    else:
        default = next((s for s in usable if str(s["subscriptionId"]).lower() == (cli_default or "").lower()), None)
        if default is None:
            listing = "; ".join(_label(s) for s in usable)
            raise UsageError(
                f"Your Azure login sees several subscriptions: {listing}.",
                hint="Choose one with --subscription ID or the AZURE_SUBSCRIPTION_ID variable "
                "(or make it the Azure CLI's default with 'az account set --subscription ID').",
            )
        picked = Picked(
            str(default["subscriptionId"]),
            notes=[
                f"Using subscription {_label(default)}, the Azure CLI's default; pass --subscription to use another."
            ],
        )
    chosen = next(s for s in usable if str(s["subscriptionId"]) == picked.subscription_id)
    state = str(chosen.get("state", "Enabled"))
    if state.lower() != "enabled":
        picked.warnings.append(
            f"Subscription {_label(chosen)} is in state {state}: Azure may disable it soon (usually a billing "
            "problem). Resolve it in the Azure portal to keep the lab running."
        )
    return picked
