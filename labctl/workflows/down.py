"""`labctl down`, `stop`, `start` and `idle-stop`: the lab deleted (the user's work saved first, then everything it
created removed, checked, forgotten), its machine off (no compute charges), back unchanged, or off by itself when idle;
none of them acts on a colleague's lab by accident."""

from __future__ import annotations

import sys
from typing import Any

from labctl import idle, sshconfig
from labctl.errors import LabctlError, NotFound, UsageError
from labctl.locks import lab_lock
from labctl.state import DEFAULT_NAME, LabRecord, StateStore
from labctl.targets import all_targets, get_target
from labctl.targets.base import Target
from labctl.ui import Outcome, Reporter, agreed
from labctl.workflows.runlab import unfetched_runs
from labctl.workflows.workspace import save_before_down


def check_owner(
    record: LabRecord, target: Target, verb: str, ui: Reporter, force: bool = False, confirm_name: str | None = None
) -> bool:
    """Refuse ``verb`` on someone else's lab unless forced and its name typed; True when so confirmed."""
    owner = target.owner_of(record)
    if owner is None or owner.mine:
        return False
    action = {"down": "delete"}.get(verb, verb)
    whose = f"belongs to {owner.name}" if owner.name else "does not say who made it (it predates per-person labs)"
    what = f"Lab '{record.name}' {whose}, and you are signed in as {owner.you}"
    flags = f"--name {record.name} --force --confirm-name {record.name}"
    if not force:
        raise UsageError(
            f"{what}; labctl does not {action} a lab that is not yours.",
            hint=f"Ask its owner, or, if you mean to {action} it anyway, run 'labctl {verb} {flags}'.",
        )
    typed = confirm_name
    if typed is None:
        if not sys.stdin.isatty():
            raise UsageError(
                f"{what}; to {action} it, its name must be typed as confirmation.",
                hint=f"Add --confirm-name {record.name} to confirm from a script.",
            )
        try:
            typed = input(f"{what}. Type the lab's name to {action} it anyway: ").strip()
        except EOFError:
            typed = ""
    if typed != record.name:
        raise UsageError(
            f"'{typed}' is not the lab's name '{record.name}'; nothing was done to the lab.",
            hint=f"Type '{record.name}' exactly, or leave the lab to its owner.",
        )
    ui.warn(f"Going to {action} lab '{record.name}', which {whose}, as --force and the typed name confirm.")
    return True


def down(
    ui: Reporter,
    name: str | None = None,
    yes: bool = False,
    force: bool = False,
    confirm_name: str | None = None,
    no_save: bool = False,
) -> Outcome:
    store = StateStore()
    try:
        record = store.resolve(name)
    except NotFound as missing:
        record = _found_elsewhere(name, missing)
    with lab_lock(record.name, "down", ui):
        if store.exists(record.name):  # as the command this one may have waited for left it
            record = store.load(record.name)
        return _down(store, record, ui, yes, force, confirm_name, not no_save)


def _down(
    store: StateStore, record: LabRecord, ui: Reporter, yes: bool, force: bool, confirm_name: str | None, save: bool
) -> Outcome:
    target = get_target(record.target)
    what = target.removal(record)
    confirmed = check_owner(record, target, "down", ui, force, confirm_name)
    if save and not store.exists(record.name):
        _refuse_unreachable(record, target.label)
    if not yes and not confirmed:
        if not sys.stdin.isatty():
            raise UsageError(f"'labctl down' would delete {what}.", hint="Add --yes to confirm from a script.")
        if not agreed(f"Delete {what}?"):
            return Outcome({"deleted": False, "name": record.name}, "Nothing was deleted.", exit_code=1)
    if not force:
        _protect_results(record, ui)
    saved = None
    if save:
        saved = save_before_down(record, ui)
    record.status = "deleting"
    store.save(record)
    try:
        target.destroy(record, ui)
    except LabctlError as exc:
        if not force or target.owns_machine:
            raise  # the record stays, so `down` can be run again once the cause is fixed
        store.delete(record.name)
        raise LabctlError(
            f"Lab '{record.name}' is forgotten here as --force asked, but something is left behind: {exc.message}",
            hint=exc.hint,
        ) from None
    store.delete(record.name)
    try:  # the lab's `ssh labctl-<lab>` entry and pinned key go with it; a failure here is worth a warning only
        if sshconfig.remove_entry(record.name):
            ui.info(f"Removed the SSH entry {sshconfig.ALIAS_PREFIX}{record.name}.")
    except (OSError, LabctlError) as exc:
        ui.warn(f"Could not remove the SSH entry of lab '{record.name}' from ~/.ssh/labctl/config: {exc}")
    text = f"Lab '{record.name}' is gone; nothing is left running."
    if saved is not None and (saved.files or saved.already_here):
        text += f" Your work from its workspace is in {saved.copy_dir}."
    return Outcome({"deleted": True, "name": record.name, "saved": saved.to_json() if saved else None}, text)


def _refuse_unreachable(record: LabRecord, where: str) -> None:
    node = record.nodes[0]
    known = {"address": node.host, "admin user": node.user, "pinned host key": node.host_key}
    missing = [what for what, value in known.items() if not value]
    if missing:
        raise UsageError(
            f"Lab '{record.name}' has no record on this computer, and what {where} keeps of it lacks its "
            f"{', '.join(missing)}: labctl cannot reach it to save the work in its workspace, or results never "
            "fetched, before deleting it.",
            hint=f"Copy what you need yourself, then delete it without saving: 'labctl down --name {record.name} "
            "--no-save'.",
        )


def _protect_results(record: LabRecord, ui: Reporter) -> None:
    if record.status == "deleting" or (record.status not in ("ready", "stopped") and not record.runs):
        return  # an earlier `down` passed this check; a lab that never became ready has no runs to lose
    try:
        running, unfetched = unfetched_runs(record, ui)
    except LabctlError as exc:
        known = [r.run_id for r in record.runs if not r.fetched_to]
        if not known:
            ui.warn(f"Could not look for unfetched results ({exc.message}); none are recorded here.")
            return
        running, unfetched = [], known
    if running:
        raise LabctlError(
            f"Lab '{record.name}' is still training (run {', '.join(running)}).",
            hint=f"Wait with 'labctl logs --follow {running[0]}', or delete anyway with 'labctl down --force'.",
        )
    if unfetched:
        raise LabctlError(
            f"Lab '{record.name}' holds results that were never fetched: {', '.join(unfetched)}.",
            hint=f"Bring them back with 'labctl fetch {unfetched[0]}' (one command per run), or delete anyway "
            "with 'labctl down --force'.",
        )


def _found_elsewhere(name: str | None, missing: NotFound) -> LabRecord:
    """A target may find it (Azure: by its tags)."""
    not_searched, answer = [], missing
    for target in all_targets():
        try:
            return target.recover_record(name or DEFAULT_NAME)
        except NotFound as exc:
            if type(target).recover_record is not Target.recover_record:
                answer = exc  # the target searched: its answer says where (and whose labs it found instead)
        except LabctlError as exc:
            not_searched.append(f"{target.label} was not searched: {exc.message}")
    if not_searched:
        raise NotFound(answer.message, hint=f"{answer.hint} ({'; '.join(not_searched)})") from None
    raise answer from None


def _owned(
    name: str | None, verb: str, ui: Reporter, force: bool, confirm_name: str | None
) -> tuple[LabRecord, Target]:
    record = StateStore().resolve(name)
    target = get_target(record.target)
    check_owner(record, target, verb, ui, force, confirm_name)
    return record, target


def _switch(record: LabRecord, target: Target, verb: str, ui: Reporter) -> tuple[LabRecord, dict[str, Any]]:
    store = StateStore()
    with lab_lock(record.name, verb, ui):
        record = store.load(record.name)
        info = (target.power_off if verb == "stop" else target.power_on)(record, ui)
        record.status = "stopped" if verb == "stop" else "ready"
        store.save(record)
    return record, info


def _may_stop_a_run(record: LabRecord, yes: bool, ui: Reporter) -> bool:
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
    return agreed(f"{what}. Stop it anyway?")


def stop(
    ui: Reporter, name: str | None = None, yes: bool = False, force: bool = False, confirm_name: str | None = None
) -> Outcome:
    record, target = _owned(name, "stop", ui, force, confirm_name)
    # A target that cannot switch machines off (no off_means) refuses in power_off, before anything connects.
    if target.off_means and record.status == "ready" and not _may_stop_a_run(record, yes, ui):
        return Outcome({"stopped": False, "name": record.name}, "Nothing was stopped.", exit_code=1)
    record, info = _switch(record, target, "stop", ui)
    flag = StateStore().name_flag(record.name)
    text = (
        f"Lab '{record.name}' is stopped ({target.off_means}). 'labctl start{flag}' brings it back, "
        f"'labctl down{flag}' deletes it."
    )
    return Outcome({"name": record.name, **info}, text)


def start(ui: Reporter, name: str | None = None, force: bool = False, confirm_name: str | None = None) -> Outcome:
    record, info = _switch(*_owned(name, "start", ui, force, confirm_name), "start", ui)
    left = info.get("budget_left_usd")
    if isinstance(left, (int, float)) and left <= 0:
        flag = StateStore().name_flag(record.name)
        ui.warn(
            f"Lab '{record.name}' has spent its budget (${record.idle.get('budget_usd', 0):.2f}; "
            f"${-left:.2f} over): its idle agent stops it again within minutes. Raise it with "
            f"'labctl up{flag} --budget USD' or delete the lab with 'labctl down{flag}'."
        )
    price = info.get("usd_per_hour_when_running")
    cost = f" (~${price:.2f}/h)" if isinstance(price, (int, float)) else ""
    text = f"Lab '{record.name}' is running again at {record.nodes[0].host}{cost}, with the same address and keys."
    return Outcome({"name": record.name, **info}, text)


def set_idle_stop(ui: Reporter, minutes: str, name: str | None = None) -> Outcome:
    window = idle.parse_window(minutes, "The idle window")
    store = StateStore()
    record = store.resolve(name)
    record.require_ready()  # the agent's config is rewritten on the machine
    before = record.idle.get("window_minutes")
    record.idle["window_minutes"] = window
    try:
        line = idle.settle(record, get_target(record.target), ui, only_config=True)
    except LabctlError:
        record.idle["window_minutes"] = before
        raise
    store.save(record)
    text = line or f"Idle stop of lab '{record.name}' is off."
    return Outcome({"name": record.name, "idle_stop_minutes": window, **record.idle}, text)
