"""`labctl stop` / `labctl start`: switch a lab's machine off (no compute charges) and bring it back unchanged."""

from __future__ import annotations

import sys
from typing import Any

from labctl.errors import LabctlError, UsageError
from labctl.locks import lab_lock
from labctl.state import LabRecord, StateStore
from labctl.targets.base import Target
from labctl.ui import Outcome, Reporter
from labctl.workflows.ownership import Override, check_owner


def _owned(name: str | None, verb: str, override: Override | None, ui: Reporter) -> tuple[LabRecord, Target]:
    from labctl.targets import get_target

    record = StateStore().resolve(name)
    target = get_target(record.target)
    check_owner(record, target, verb, override or Override(), ui)
    return record, target


def _switch(record: LabRecord, target: Target, verb: str, ui: Reporter) -> tuple[LabRecord, dict[str, Any]]:
    store = StateStore()
    with lab_lock(record.name, verb, ui):
        record = store.load(record.name)
        if verb == "stop":
            info, record.status = target.power_off(record, ui), "stopped"
        else:
            info, record.status = target.power_on(record, ui), "ready"
        store.save(record)
    return record, info


def _may_stop_a_run(record: LabRecord, yes: bool, ui: Reporter) -> bool:
    from labctl.workflows.runlab import unfetched_runs

    try:
        running, _ = unfetched_runs(record, ui)
    except LabctlError as exc:  # most often already off (auto-shutdown): nothing is training there
        ui.info(f"Could not look for a run in progress ({exc.message}).")
        return True
    if not running:
        return True
    what = f"Lab '{record.name}' is training (run {', '.join(running)}): stopping it ends the run unfinished"
    if yes:
        ui.warn(f"{what}, as --yes confirms.")
        return True
    if not sys.stdin.isatty():
        raise UsageError(
            f"{what}.", hint=f"Wait with 'labctl logs --follow {running[0]}', or add --yes to stop it anyway."
        )
    return input(f"{what}. Stop it anyway? [y/N] ").strip().lower() in ("y", "yes")


def stop(name: str | None, ui: Reporter, override: Override | None = None, *, yes: bool = False) -> Outcome:
    record, target = _owned(name, "stop", override, ui)
    # A target that cannot switch machines off (no off_means) refuses in power_off, before anything connects.
    if target.off_means and record.status == "ready" and not _may_stop_a_run(record, yes, ui):
        return Outcome({"stopped": False, "name": record.name}, "Nothing was stopped.", exit_code=1)
    record, info = _switch(record, target, "stop", ui)
    text = (
        f"Lab '{record.name}' is stopped ({target.off_means}). 'labctl start{_flag(record)}' brings it back, "
        f"'labctl down{_flag(record)}' deletes it."
    )
    return Outcome({"name": record.name, **info}, text)


def start(name: str | None, ui: Reporter, override: Override | None = None) -> Outcome:
    record, info = _switch(*_owned(name, "start", override, ui), "start", ui)
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
