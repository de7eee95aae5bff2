"""`labctl down`: save the user's work, delete everything the lab created, verify, forget."""

from __future__ import annotations

import sys

from labctl import sshconfig
from labctl.errors import LabctlError, NotFound, UsageError
from labctl.locks import lab_lock
from labctl.state import DEFAULT_NAME, LabRecord, StateStore
from labctl.targets import all_targets, get_target
from labctl.targets.base import Target
from labctl.ui import Outcome, Reporter, agreed
from labctl.workflows.power import check_owner
from labctl.workflows.runlab import unfetched_runs
from labctl.workflows.workspace import save_before_down


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
