"""`labctl up`: the record is saved after every step, so that a second `up` resumes and `down` can clean up."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from labctl import idle
from labctl.errors import UsageError
from labctl.labhost import prepare_lab
from labctl.locks import lab_lock
from labctl.spec import LabSpec, Settings
from labctl.state import LabRecord, StateStore
from labctl.targets import get_target
from labctl.targets.base import Target
from labctl.ui import Outcome, Reporter
from labctl.validate import check_image_ref


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
    # A region only counts as asked for when something set it: a re-run of `up` for a lab made elsewhere
    # (--region westus2, --region auto) must converge on where the lab is, not on the built-in default.
    region = settings.lookup("region", asked.region)
    if "region" in own and region.source != "default":
        spec.region = region.value
    if "subscription" in own:
        spec.subscription = settings.get("subscription", asked.subscription)
    if "allow_ip" in own:
        spec.allow_ip = _allow_ip(settings, asked.allow_ip)
    _idle_settings(spec, asked, settings)
    return spec.validate()


def _idle_settings(spec: LabSpec, asked: LabSpec, settings: Settings) -> None:
    window = settings.lookup("idle_stop", asked.idle_stop)
    if window.source != "default" and window.value is not None:
        spec.idle_stop = idle.parse_window(window.value, f"idle_stop from {window.source}")
        spec.idle_explicit = True
    budget = settings.lookup("budget", asked.budget)
    if budget.value is not None:
        spec.budget = idle.parse_budget(budget.value, f"budget from {budget.source}")


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
    if dry_run:
        _idle_rules(spec, LabRecord(name=spec.name, target=spec.target), target)
        return target.plan(spec)
    with lab_lock(spec.name, "up", ui):
        return _up(spec, target, ui)


def _up(spec: LabSpec, target: Target, ui: Reporter) -> Outcome:
    store = StateStore()
    record = store.load(spec.name) if store.exists(spec.name) else None
    if record is not None and record.status == "creating" and record.nodes[0].host is None:
        # An earlier `up` that never reached its machine left nothing behind to keep, unless the target makes
        # machines: then it may have created some of it already, and the record is what `down` removes.
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
        ui.info(f"Lab '{spec.name}' exists; bringing it up to date.")

    _idle_rules(spec, record, target)
    record = target.provision(spec, record, ui, store.save)
    store.save(record)

    record = prepare_lab(record, ui, image=spec.image)
    idle_line = idle.settle(record, target, ui)
    record.status = "ready"
    store.save(record)
    flag = store.name_flag(spec.name)
    text = (
        f"Lab '{spec.name}' is ready.\nNext:\n"
        f"  labctl open{flag}      # Jupyter in your browser, through an SSH tunnel\n"
        f"  labctl run-lab{flag}   # train the CIFAR-10 classifier there and fetch the results\n"
        f"  labctl down{flag}      # delete everything when you are done"
    )
    return Outcome(record.public_json(), f"{idle_line}\n{text}" if idle_line else text)
