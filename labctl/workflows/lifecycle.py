"""A lab's life: `up` makes or updates it, saving the record after every step so a second `up` resumes and `down`
cleans up; `down` saves the user's work, deletes all the lab made, checks nothing is left and forgets it; `stop`,
`start`, `idle-stop`: its machine off (no compute charges), back unchanged, off when idle. Never a colleague's lab."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from labctl import idle, sshconfig
from labctl.errors import LabctlError, NotFound, UsageError
from labctl.labhost import prepare_lab
from labctl.locks import lab_lock
from labctl.pricing import choose_sizes
from labctl.spec import LabSpec, Settings
from labctl.state import DEFAULT_NAME, LabRecord, SaveFn, StateStore, now_iso
from labctl.targets import all_targets, get_target
from labctl.targets.base import Target
from labctl.ui import Outcome, Reporter, agreed
from labctl.validate import check_image_ref
from labctl.workflows.reach import save_before_down
from labctl.workflows.runlab import BOOT_WAIT_S, head_runs, resume_runs, stop_runs
from labctl.workspace import PullResult


def build_spec(asked: LabSpec, settings: Settings | None = None) -> LabSpec:
    """A setting only one kind of target reads (a region, a size) applies to that target only."""
    settings = settings or Settings()
    spec = replace(asked, sizes=list(asked.sizes))
    if not spec.target and spec.host is None:
        spec.target = str(settings.get("target"))
    own = get_target(spec.target).settings if spec.target else ()  # no target yet: --host, so ssh's (none)
    spec.name = settings.get("name", asked.name or None)
    ssh_key = settings.get("ssh_key", asked.ssh_key)
    spec.ssh_key = Path(ssh_key).expanduser() if ssh_key else None
    spec.image = settings.get("image", asked.image)
    if spec.image is not None:  # both images end up in commands run as root
        check_image_ref(spec.image, f"The image ({settings.lookup('image', spec.image).source})")
    settings.get("base_image")  # refused here if a project file not trusted sets it
    if not asked.no_shutdown:
        spec.shutdown_at = settings.get("shutdown_at", asked.shutdown_at)
    if "size" in own and not asked.sizes and (size := settings.get("size")):
        spec.sizes = [size]
    # Only a region something set counts: re-running `up` for a lab made with --region X or auto keeps it there.
    region = settings.lookup("region", asked.region)
    if "region" in own and region.source != "default":
        spec.region = region.value
    if "subscription" in own:
        spec.subscription = settings.get("subscription", asked.subscription)
    if "allow_ip" in own:
        spec.allow_ip = _allow_ip(settings, asked.allow_ip)
    window = settings.lookup("idle_stop", asked.idle_stop)
    if window.source != "default" and window.value is not None:
        spec.idle_stop = idle.parse_window(window.value, f"idle_stop from {window.source}")
        spec.idle_explicit = True
    budget = settings.lookup("budget", asked.budget)
    if budget.value is not None:
        spec.budget = idle.parse_budget(budget.value, f"budget from {budget.source}")
    return spec.validate()


def _allow_ip(settings: Settings, flag: str | None) -> str | None:
    """Opening SSH to everyone is a decision typed on the command line, never one inherited from a file."""
    setting = settings.lookup("allow_ip", flag)
    value = settings.get("allow_ip", flag)
    if isinstance(value, str) and value.strip().lower() == "any" and setting.source != "flag":
        raise UsageError(
            f"{setting.source} sets allow_ip = 'any', which would open SSH to the whole internet.",
            hint="labctl takes that only from the command line: type '--allow-ip any' if you mean it, "
            "or set your own address or range there instead.",
        )
    return str(value) if value is not None else None


def _idle_rules(spec: LabSpec, record: LabRecord, target: Target) -> None:
    """The idle window and budget this `up` settles on: asked for, else what the lab had, else the target's default."""
    if spec.idle_stop is None:
        kept = record.idle.get("window_minutes")
        spec.idle_stop = float(kept) if kept is not None else target.default_idle_minutes
    if spec.budget is None and not spec.idle_explicit:
        spec.budget = record.idle.get("budget_usd")
    record.idle.update(window_minutes=spec.idle_stop, budget_usd=spec.budget, action=spec.idle_action)


def up(asked: LabSpec, ui: Reporter, *, dry_run: bool = False) -> Outcome:
    spec = build_spec(asked)
    target = get_target(spec.target)
    if not dry_run:
        with lab_lock(spec.name, "up", ui):
            return _up(spec, target, ui)
    _idle_rules(spec, LabRecord(name=spec.name, target=spec.target), target)
    plan = target.plan(spec)
    if spec.requirements_text:
        plan.data["requirements"] = str(spec.requirements)
        plan.text += f"\n  packages:       from {spec.requirements}, in a layer of their own over the lab image"
    # Which /workspace the lab gets, and what `down` does with it: copies it home, or keeps it where it lives.
    store = StateStore()
    if store.exists(spec.name) and (record := store.load(spec.name)).status == "kept":
        workspace = f"the one kept by an earlier 'down --keep-workspace': {target.workspace_home(record)}"
    else:
        workspace = (
            f"{target.workspace_kind}; 'down' copies what changed in it to this computer before it deletes anything, "
            "'down --keep-workspace' keeps it where it lives for the next 'up' of this name"
        )
    plan.data["workspace"] = workspace
    plan.text += f"\n  workspace:      {workspace}"
    return plan


def _up(spec: LabSpec, target: Target, ui: Reporter) -> Outcome:
    store = StateStore()
    record = store.load(spec.name) if store.exists(spec.name) else None
    if record is not None and record.status == "creating" and record.nodes[0].host is None:
        # An `up` that never reached its machine left nothing, unless the target makes machines: `down` removes those.
        record = record if get_target(record.target).owns_machine else None
    if record is None:
        # Not saved yet: the target saves it just before it creates the first thing `down` would have to remove,
        # so an `up` that stops before that (no login, no quota, an unreachable host) leaves no lab behind.
        record = LabRecord(name=spec.name, target=spec.target, gpu=spec.gpu, image=spec.image)
    else:
        if record.target != spec.target:
            raise UsageError(
                f"Lab '{spec.name}' already exists on target '{record.target}', not '{spec.target}'.",
                hint="Pick another --name, or 'labctl down --name " + spec.name + "' first.",
            )
        if spec.host is not None and record.nodes[0].host not in (None, spec.host.host):
            raise UsageError(
                f"Lab '{spec.name}' lives on {record.nodes[0].host}, not {spec.host.host}.",
                hint=f"'labctl down --name {spec.name}' removes it there first, or pick another --name.",
            )
        if spec.gpu and not record.gpu:
            ui.info(
                f"Lab '{spec.name}' becomes a GPU lab: the NVIDIA runtime is checked and the container gets the GPUs."
            )
            record.gpu = True
        if record.status == "kept":
            ui.info(f"Lab '{spec.name}' comes back with its kept workspace: {target.workspace_home(record)}.")
        else:
            ui.info(f"Lab '{spec.name}' exists; bringing it up to date.")

    _idle_rules(spec, record, target)
    record = target.provision(spec, record, ui, _remade(store, record))
    store.save(record)

    if spec.requirements_text is not None:  # saved with the lab once its layer is built: a failed build keeps the old
        record.requirements = spec.requirements_text or None
    record.image_asked = spec.image or record.image_asked
    record = prepare_lab(record, ui)
    target.check_workspace(record, ui)
    idle_line = idle.settle(record, target, ui)
    record.status = "ready"
    store.save(record)
    flag = store.name_flag(spec.name)
    resumed = resume_runs(store, record, ui)  # the machine's runs, which this record may not know (made elsewhere)
    text = (
        (f"Run {', '.join(resumed)} goes on from its checkpoint.\n" if resumed else "")
        + f"Lab '{spec.name}' is ready.\nNext:\n"
        f"  labctl open{flag}      # Jupyter in your browser, through an SSH tunnel\n"
        f"  labctl run-lab{flag}   # train the CIFAR-10 classifier there and fetch the results\n"
        f"  labctl down{flag}      # delete everything when you are done"
    )
    return Outcome(record.public_json(), f"{idle_line}\n{text}" if idle_line else text)


def _remade(store: StateStore, record: LabRecord) -> SaveFn:
    """A kept lab is 'creating' again from the target's first save on: from there a machine of its may run, and bill,
    and a failed `up` must not leave it shown as down."""
    if record.status != "kept":
        return store.save

    def save(made: LabRecord) -> None:
        if made.status == "kept":
            made.status, made.created_at = "creating", now_iso()
        store.save(made)

    return save


def check_owner(record: LabRecord, target: Target, verb: str, ui: Reporter, force: bool, typed: str | None) -> bool:
    """Refuse ``verb`` on someone else's lab unless forced and its name ``typed``; True when so confirmed."""
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
    keep_workspace: bool = False,
    delete_workspace: bool = False,
) -> Outcome:
    if keep_workspace and delete_workspace:
        raise UsageError(
            "--keep-workspace and --delete-workspace ask for opposite things; nothing was deleted.",
            hint="Give one: --keep-workspace keeps /workspace for the next 'labctl up' of the lab's name, "
            "--delete-workspace deletes it too.",
        )
    store = StateStore()
    try:
        record = store.resolve(name)
    except NotFound as missing:
        record = _found_elsewhere(name, missing)
    with lab_lock(record.name, "down", ui):
        if store.exists(record.name):  # as the command this one may have waited for left it
            record = store.load(record.name)
        target = get_target(record.target)
        home = _kept_home(record, target, keep_workspace, delete_workspace)
        if record.status == "kept":
            what = f"the kept workspace of lab '{record.name}', {target.workspace_home(record)}, without copying it"
        else:
            what = target.removal(record, keep=home is not None) + (f", keeping its workspace: {home}" if home else "")
        confirmed = check_owner(record, target, "down", ui, force, confirm_name)
        copy = not no_save and not home and record.status != "kept"  # a kept workspace stays where it lives
        if copy and not store.exists(record.name):
            _refuse_unreachable(record, target.label)
        if not yes and not confirmed:
            scripted = UsageError(f"'labctl down' would delete {what}.", hint="Add --yes to confirm from a script.")
            if not agreed(f"Delete {what}?", scripted):
                return Outcome({"deleted": False, "name": record.name}, "Nothing was deleted.", exit_code=1)
        if not force:
            _protect_results(record, ui, kept=home is not None)
        saved = save_before_down(record, ui) if copy else None
        record.status = "deleting"  # "kept" only once the VM is gone: until then it may run, and bill
        store.save(record)
        try:
            target.destroy(record, ui, keep_workspace=home is not None)
        except LabctlError as exc:
            if not force or target.owns_machine:
                raise  # the record stays, so `down` can be run again once the cause is fixed
            store.delete(record.name)
            raise LabctlError(
                f"Lab '{record.name}' is forgotten here as --force asked, but something is left behind: {exc.message}",
                hint=exc.hint,
            ) from None
        return _forget(store, record, home, saved, ui)


def _kept_home(record: LabRecord, target: Target, keep: bool, delete: bool) -> str | None:
    """Where the workspace `down` keeps lives (None: nothing kept); a workspace already kept goes only when asked."""
    home = target.workspace_home(record) if keep or record.status == "kept" else None
    flag = StateStore().name_flag(record.name)
    if keep and home is None:
        raise UsageError(
            f"The workspace of lab '{record.name}' cannot outlive it on {target.label}; nothing was deleted.",
            hint=f"'labctl down{flag}' copies what changed in it to this computer first, then deletes the lab.",
        )
    if record.status == "kept" and not (keep or delete):
        raise UsageError(
            f"Lab '{record.name}' is down already; only its workspace is kept: {home}. Nothing was deleted.",
            hint=f"'labctl up{flag}' brings the lab back with it ('labctl pull' then copies it here), or "
            f"'labctl down{flag} --delete-workspace' deletes it without copying it.",
        )
    return home if keep else None


def _forget(store: StateStore, record: LabRecord, home: str | None, saved: PullResult | None, ui: Reporter) -> Outcome:
    if home:
        record.status = "kept"
        record.idle.pop("installed", None)
        store.save(record)  # the kept workspace's record: `up` finds it, `list` and `status` show it
    else:
        store.delete(record.name)
    try:  # the lab's `ssh labctl-<lab>` entry and pinned key go with it; a failure here is worth a warning only
        if sshconfig.remove_entry(record.name):
            ui.info(f"Removed the SSH entry {sshconfig.ALIAS_PREFIX}{record.name}.")
    except (OSError, LabctlError) as exc:
        ui.warn(f"Could not remove the SSH entry of lab '{record.name}' from ~/.ssh/labctl/config: {exc}")
    text = f"Lab '{record.name}' is gone; nothing is left running."
    if saved is not None and (saved.files or saved.already_here):
        text += f" Your work from its workspace is in {saved.copy_dir}."
    if home:
        flag = store.name_flag(record.name)
        text += (
            f" Its workspace is kept, not copied here: {home}. 'labctl up{flag}' brings the lab back with it; "
            f"'labctl down{flag} --delete-workspace' deletes it."
        )
    data = {"deleted": True, "name": record.name, "saved": saved.to_json() if saved else None, "kept_workspace": home}
    return Outcome(data, text)


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


def _protect_results(record: LabRecord, ui: Reporter, kept: bool = False) -> None:
    """A kept workspace keeps the runs' results too: only a run still training is lost then."""
    if record.status in ("deleting", "kept") or (record.status not in ("ready", "stopped") and not record.runs):
        return  # an earlier `down` passed this check; a lab that never became ready has no runs to lose
    try:
        infos = head_runs(record, ui)
        fetched = {r.run_id for r in record.runs if r.fetched_to}
        running = [i.run_id for i in infos if i.state == "running"]
        unfetched = [i.run_id for i in infos if i.state != "running" and i.run_id not in fetched]
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
    if unfetched and not kept:
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


def _owned(name: str | None, verb: str, ui: Reporter, force: bool, typed: str | None) -> tuple[LabRecord, Target]:
    record = StateStore().resolve(name)
    record.require_machines()
    target = get_target(record.target)
    check_owner(record, target, verb, ui, force, typed)
    return record, target


def _switch(record: LabRecord, target: Target, verb: str, ui: Reporter) -> tuple[LabRecord, dict[str, Any]]:
    store = StateStore()
    with lab_lock(record.name, verb, ui):
        record = store.load(record.name)
        info = (target.power_off if verb == "stop" else target.power_on)(record, ui)
        record.status = "stopped" if verb == "stop" else "ready"
        store.save(record)
    return record, info


def _checkpoint_runs(record: LabRecord, yes: bool, ui: Reporter) -> dict[str, str] | None:
    """Before the machines go off (stop, resize), once a run in progress may stop (None: not agreed); bounded, so a
    run that does not end in time resumes from its last epoch's checkpoint."""
    try:
        running = [info for info in head_runs(record, ui) if info.state == "running"]
    except LabctlError as exc:  # most often already off (auto-shutdown): nothing is training there
        ui.info(f"Could not look for a run in progress ({exc.message}).")
        running = []
    if running:
        ends = [i.run_id for i in running if not i.resumable or i.resume_off]
        what = f"Lab '{record.name}' is training (run {', '.join(i.run_id for i in running)}): stopping it ends "
        what += f"run {', '.join(ends)} unfinished" if ends else "it after a checkpoint, and 'labctl start' resumes it"
        if yes:
            ui.warn(f"{what}, as --yes confirms.")
        else:
            wait = f"Wait with 'labctl logs --follow {running[0].run_id}', or add --yes to stop it anyway."
            if not agreed(f"{what}. Stop it anyway?", UsageError(f"{what}.", hint=wait)):
                return None
    try:
        stopped = stop_runs(record, "stop", ui)
        StateStore().save(record)
        return stopped
    except LabctlError as exc:
        ui.warn(f"Could not checkpoint the lab's runs before the stop ({exc.message}); they stop with it.")
        return {}


def stop(
    ui: Reporter, name: str | None = None, yes: bool = False, force: bool = False, confirm_name: str | None = None
) -> Outcome:
    record, target = _owned(name, "stop", ui, force, confirm_name)
    # A target that cannot switch machines off (no off_means) refuses in power_off, before anything connects.
    stopped_runs = _checkpoint_runs(record, yes, ui) if target.off_means and record.status == "ready" else {}
    if stopped_runs is None:
        return Outcome({"stopped": False, "name": record.name}, "Nothing was stopped.", exit_code=1)
    record, info = _switch(record, target, "stop", ui)
    flag = StateStore().name_flag(record.name)
    text = (
        f"Lab '{record.name}' is stopped ({target.off_means}). 'labctl start{flag}' brings it back, "
        f"'labctl down{flag}' deletes it."
    )
    return Outcome({"name": record.name, **info, **({"runs": stopped_runs} if stopped_runs else {})}, text)


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
    # Every run the machine holds to resume goes on, known here or not (a record found again, a run started from
    # another computer); for one this record knows unfinished, worth waiting for the machine to boot.
    unfinished = any(r.state in ("running", "lost") or r.state.startswith("interrupted") for r in record.runs)
    resumed = resume_runs(StateStore(), record, ui, BOOT_WAIT_S if unfinished else 0.0, expected=unfinished)
    return Outcome({"name": record.name, **info, "resumed": resumed}, text + _resumed_text(resumed))


def _resumed_text(resumed: list[str]) -> str:
    if not resumed:
        return ""
    return f"\nRun {', '.join(resumed)} goes on from its checkpoint: 'labctl logs --follow {resumed[0]}' shows it."


def resize(
    ui: Reporter,
    name: str | None = None,
    gpu: bool = False,
    size: str | None = None,
    yes: bool = False,
    force: bool = False,
    confirm_name: str | None = None,
) -> Outcome:
    if not (gpu or size):
        raise UsageError("'labctl resize' needs the size to change to.", hint="Add --size SIZE, or --gpu.")
    asked, store = choose_sizes([size] if size else [], gpu)[0], StateStore()
    record, target = _owned(name, "resize", ui, force, confirm_name)
    with lab_lock(record.name, "resize", ui):
        record = store.load(record.name)

        def may_stop() -> bool:  # once the size is known to fit: the runs checkpoint as for `stop`
            return record.status != "ready" or _checkpoint_runs(record, yes, ui) is not None

        try:
            info = target.resize(record, asked, ui, may_stop)
            if not info:
                return Outcome({"resized": False, "name": record.name}, "Nothing was resized.", exit_code=1)
            # As `up` again: the lab's image (configured now, or the one it was made from) with its packages layer.
            record = prepare_lab(record, ui, image=Settings().get("image"))
            idle.settle(record, target, ui)
            record.status = "ready"
        finally:
            store.save(record)  # a resize stopped half-way is recorded as it stands: stopped, at the size it has
        resumed = resume_runs(store, record, ui)
    text = f"Lab '{record.name}' runs as a {info.get('size')} now."
    return Outcome({"name": record.name, **info, "resumed": resumed}, text + _resumed_text(resumed))


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
