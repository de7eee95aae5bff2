"""`labctl stop` / `labctl start`: switch a lab's machine off (no compute charges) and bring it back unchanged."""

from __future__ import annotations

from typing import Any

from labctl.locks import lab_lock
from labctl.state import LabRecord, StateStore
from labctl.targets.base import Target
from labctl.ui import Outcome, Reporter
from labctl.workflows.ownership import Override, check_owner


def _switch(
    name: str | None, verb: str, override: Override | None, ui: Reporter
) -> tuple[LabRecord, Target, dict[str, Any]]:
    """Check the owner, then switch the machine and save the new status, all under the lab's lock."""
    from labctl.targets import get_target

    store = StateStore()
    record = store.resolve(name)
    target = get_target(record.target)
    check_owner(record, target, verb, override or Override(), ui)
    with lab_lock(record.name, verb, ui):
        record = store.load(record.name)  # as a command this one waited for left it
        if verb == "stop":
            info, record.status = target.power_off(record, ui), "stopped"
        else:
            info, record.status = target.power_on(record, ui), "ready"
        store.save(record)
    return record, target, info


def stop(name: str | None, ui: Reporter, override: Override | None = None) -> Outcome:
    record, target, info = _switch(name, "stop", override, ui)
    text = (
        f"Lab '{record.name}' is stopped ({target.off_means}). 'labctl start{_flag(record)}' brings it back, "
        f"'labctl down{_flag(record)}' deletes it."
    )
    return Outcome({"name": record.name, **info}, text)


def start(name: str | None, ui: Reporter, override: Override | None = None) -> Outcome:
    record, _, info = _switch(name, "start", override, ui)
    left = info.get("budget_left_usd")
    if isinstance(left, (int, float)) and left <= 0:
        ui.warn(
            f"Lab '{record.name}' has spent its budget (${record.idle.get('budget_usd', 0):.2f}; "
            f"${-left:.2f} over): its idle agent stops it again within minutes. Raise it with "
            f"'labctl up{_flag(record)} --budget USD' or delete the lab with 'labctl down{_flag(record)}'."
        )
    price = info.get("usd_per_hour_when_running")
    cost = f" (~${price:.2f}/h)" if isinstance(price, (int, float)) else ""
    text = f"Lab '{record.name}' is running again at {record.nodes[0].host}{cost}, with the same address and keys."
    return Outcome({"name": record.name, **info}, text)


def _flag(record: LabRecord) -> str:
    return "" if record.name == "lab" else f" --name {record.name}"
