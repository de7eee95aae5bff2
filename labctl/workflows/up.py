"""`labctl up`: from a spec to a ready lab, whatever the target.

The target makes a reachable machine; the lab host layer (bootstrap + container) is the same for every
target. The record is saved after every step so that a second `up` resumes and `down` can clean up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from labctl.config import Settings
from labctl.errors import UsageError
from labctl.imageref import check_image_ref
from labctl.spec import DEFAULT_NAME, LabSpec, parse_host
from labctl.state import LabRecord, StateStore
from labctl.ui import Outcome, Reporter


@dataclass
class UpOptions:
    name: str | None = None
    target: str | None = None
    host: str | None = None
    gpu: bool = False
    sizes: list[str] = field(default_factory=list)
    region: str | None = None
    image: str | None = None
    subscription: str | None = None
    allow_ip: str | None = None
    ssh_key: Path | None = None
    shutdown_at: str | None = None
    no_shutdown: bool = False
    spot: bool = False
    dry_run: bool = False
    yes: bool = False


def build_spec(opts: UpOptions, settings: Settings | None = None) -> LabSpec:
    """Merge flags with LABCTL_* variables and config files; Azure-only settings apply to Azure labs only."""
    settings = settings or Settings()
    if opts.no_shutdown and opts.shutdown_at:
        raise UsageError("--shutdown-at and --no-shutdown contradict each other.", hint="Keep one of them.")
    target = opts.target or ("ssh" if opts.host else None) or settings.get("target")
    azure = target == "azure"
    ssh_key = settings.get("ssh_key", opts.ssh_key)
    size = settings.get("size") if azure and not opts.sizes else None
    # A region only counts as asked for when something set it: a re-run of `up` for a lab made elsewhere
    # (--region westus2, --region auto) must converge on where the lab is, not on the built-in default.
    region = settings.lookup("region", opts.region)
    image = settings.get("image", opts.image)
    _check_images(image, settings)
    spec = LabSpec(
        name=settings.get("name", opts.name),
        target=target,
        host=parse_host(opts.host) if opts.host else None,
        gpu=opts.gpu,
        sizes=list(opts.sizes) or ([size] if size else []),
        region=(region.value if region.source != "default" else None) if azure else opts.region,
        image=image,
        subscription=settings.get("subscription", opts.subscription) if azure else opts.subscription,
        allow_ip=_allow_ip(settings, opts.allow_ip) if azure else opts.allow_ip,
        ssh_key=Path(ssh_key).expanduser() if ssh_key else None,
        shutdown_at=None if opts.no_shutdown else settings.get("shutdown_at", opts.shutdown_at),
        spot=opts.spot,
        yes=opts.yes,
    )
    return spec.validate()


def _check_images(image: str | None, settings: Settings) -> None:
    """Refuse a malformed image before anything is created: both images end up in commands run as root."""
    from labctl.container import base_image

    if image is not None:
        check_image_ref(image, f"The image ({settings.lookup('image', image).source})")
    base_image(settings)


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


def up(opts: UpOptions, ui: Reporter) -> Outcome:
    from labctl.targets import get_target

    spec = build_spec(opts)
    target = get_target(spec.target)
    if opts.dry_run:
        return target.plan(spec)

    store = StateStore()
    record = store.load(spec.name) if store.exists(spec.name) else None
    if record is not None and record.status == "creating" and record.host is None and record.target != "azure":
        record = None  # an earlier `up` that never reached its machine left nothing behind to keep
    if record is None:
        record = LabRecord(name=spec.name, target=spec.target, gpu=spec.gpu, image=spec.image)
        store.save(record)
    else:
        if record.target != spec.target:
            raise UsageError(
                f"Lab '{spec.name}' already exists on target '{record.target}', not '{spec.target}'.",
                hint="Pick another --name, or 'labctl down --name " + spec.name + "' first.",
            )
        if spec.host is not None and record.host not in (None, spec.host.host):
            raise UsageError(
                f"Lab '{spec.name}' lives on {record.host}, not {spec.host.host}.",
                hint=f"'labctl down --name {spec.name}' removes it there first, or pick another --name.",
            )
        if spec.gpu and not record.gpu:
            ui.info(
                f"Lab '{spec.name}' becomes a GPU lab: the NVIDIA runtime is checked and the container gets the GPUs."
            )
            record.gpu = True
        ui.info(f"Lab '{spec.name}' exists; bringing it up to date.")

    record = target.provision(spec, record, ui, store.save)
    store.save(record)

    from labctl.labhost import prepare_lab

    record = prepare_lab(record, ui, image=spec.image)
    record.status = "ready"
    store.save(record)
    flag = "" if spec.name == DEFAULT_NAME and len(store.list()) == 1 else f" --name {spec.name}"
    text = "\n".join(
        [
            f"Lab '{spec.name}' is ready.",
            "Next:",
            f"  labctl open{flag}      # Jupyter in your browser, through an SSH tunnel",
            f"  labctl run-lab{flag}   # train the CIFAR-10 classifier there and fetch the results",
            f"  labctl down{flag}      # delete everything when you are done",
        ]
    )
    return Outcome(record.public_json(), text)
