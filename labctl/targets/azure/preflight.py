"""Size offered, vCPU quota free, image, terms: checked before any resource exists; each refusal says the way out."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from labctl.errors import LabctlError
from labctl.labhost import side_by_side
from labctl.pricing import SIZES, VmSize, lookup
from labctl.state import LabRecord
from labctl.targets.azure import settings
from labctl.targets.azure.clients import Azure, arm, attempt, finish, poll
from labctl.targets.azure.plan import AzurePlan, azure_data, grid_only, group_and_name
from labctl.ui import agreed
from labctl.validate import env_yes

# The resource providers a lab calls; a new subscription may lack some (Microsoft.DevTestLab, for auto-shutdown).
PROVIDERS = ("Microsoft.Compute", "Microsoft.Network", "Microsoft.DevTestLab", "Microsoft.Authorization")


@dataclass
class Choice:
    region: str
    size: VmSize
    image_version: str
    purchase_plan: dict[str, str] | None = None
    trusted_launch: bool = True  # False where resource SKUs say TrustedLaunchDisabled or the image does not declare it
    accelerated_networking: bool = False  # the size's resource SKU says AcceleratedNetworkingEnabled: True


@dataclass(frozen=True)
class Image:  # what a version of the lab's image says of itself
    version: str
    plan: dict[str, str] | None = None
    trusted_launch: bool = False  # its features declare Trusted Launch (SecurityType: TrustedLaunch...)
    generation: str = "V2"  # its hyperVGeneration: a size boots it only if its HyperVGenerations name it


@dataclass
class Problem:
    region: str
    size: VmSize
    kind: str  # "unknown-region" | "not-offered" | "misfit" | "no-spot" | "quota" | "image"
    message: str
    free: int | None = None


@dataclass
class RegionFacts:  # what one region tells this subscription
    region: str
    skus: dict[str, dict[str, Any]] = field(default_factory=dict)  # lower-case size name -> SKU JSON
    usages: dict[str, tuple[int, int]] = field(default_factory=dict)  # usage name -> (current, limit)

    def sku(self, size: VmSize) -> dict[str, Any] | None:
        return self.skus.get(size.name.lower())


def load_region(azure: Azure, region: str) -> RegionFacts:
    facts = RegionFacts(region)

    def skus() -> None:
        with arm(f"listing the VM sizes offered in {region}"):
            for item in azure.compute.resource_skus.list(filter=f"location eq '{region}'"):
                data = item.as_dict()
                if data.get("resourceType") == "virtualMachines":
                    facts.skus[str(data.get("name", "")).lower()] = data

    def usages() -> None:
        with arm(f"reading the vCPU quota in {region}"):
            for item in azure.compute.usage.list(region):
                data = item.as_dict()
                name = str(data.get("name", {}).get("value", ""))
                facts.usages[name.lower()] = (int(data.get("currentValue", 0)), int(data.get("limit", 0)))

    found: list[Any] = side_by_side([skus, functools.partial(attempt, usages)])
    if isinstance(found[1], LabctlError) and facts.skus:  # an unknown region has no usages either; said once, below
        raise found[1]
    return facts


def capability(sku: dict[str, Any] | None, name: str) -> str:
    """A resource SKU's capability as ARM writes it; an absent one is "" (so not "True", and 0 as a number)."""
    caps = (sku or {}).get("capabilities") or []
    return next((str(c.get("value")) for c in caps if str(c.get("name", "")).lower() == name.lower()), "")


def _number(sku: dict[str, Any] | None, name: str) -> float:
    try:
        return float(capability(sku, name))
    except ValueError:
        return 0.0


def spot_capable(sku: dict[str, Any] | None) -> bool:
    return capability(sku, "LowPriorityCapable").lower() == "true"  # absent means no


def _listed(sku: dict[str, Any] | None, name: str, absent: str) -> list[str]:
    return [part.strip().upper() for part in (capability(sku, name) or absent).split(",")]


def misfit(sku: dict[str, Any] | None, generation: str | None) -> str:
    """Why a size cannot boot the lab's VMs ("" if it can): the image's Hyper-V generation (None: not known), and the
    SCSI disk controller they are made with (none is asked, so ARM gives SCSI where the size has it; a resize keeps
    it)."""
    generations = _listed(sku, "HyperVGenerations", "V1")  # sizes older than generation 2 list V1 alone
    if generation and generation.upper() not in generations:
        listed = ",".join(generations)
        return f"boots no generation {generation[1:]} image, which the lab's is (HyperVGenerations {listed})"
    if "SCSI" not in _listed(sku, "DiskControllerTypes", "SCSI"):  # the v6 families: NVMe only
        return "takes its disks over NVMe only, and the lab's VMs take theirs over SCSI"
    return ""


def alternatives(
    skus: dict[str, dict[str, Any]], size: VmSize, fits: Callable[[VmSize, dict[str, Any] | None], bool]
) -> list[str]:
    """Up to three sizes of the catalog with the same kind of GPU (or none), offered here, that ``fits``."""
    found = []
    for candidate in SIZES.values():
        sku = skus.get(candidate.name.lower())
        restricted = any(r.get("type") == "Location" for r in (sku or {}).get("restrictions") or [])
        if candidate.gpu == size.gpu and not grid_only(candidate) and sku and not restricted and fits(candidate, sku):
            found.append(candidate)
    want = int(_number(skus.get(size.name.lower()), "vCPUs")) or size.vcpus  # a size the catalog lacks: its SKU's
    found.sort(key=lambda s: (abs(s.vcpus - want), s.vcpus))
    return [s.name for s in found[:3]]


def from_sku(size: VmSize, sku: dict[str, Any], region: str) -> VmSize:
    """A size the catalog lacks, completed from its resource SKU (shape, quota family) and the price list."""
    from labctl.pricing import lab_prices

    if size.catalogued:
        return size
    payg, spot = 0.0, None
    with contextlib.suppress(LabctlError):  # "price unknown": the lab is still made; status says so
        prices = lab_prices(region, str(sku.get("name") or size.name), timeout=5.0)
        payg, spot = prices.payg_per_hour, prices.spot_per_hour
    gpus, family = int(_number(sku, "GPUs")), str(sku.get("family") or "")
    shape = int(_number(sku, "vCPUs")), _number(sku, "MemoryGB")
    return VmSize(size.name, *shape, family, payg, spot, "GPU" if gpus else None, gpus, catalogued=False)


def free_vcpus(facts: RegionFacts, size: VmSize, spot: bool) -> tuple[int, str, int, int]:
    """(free vCPUs for this size, the binding quota's name, its use, its limit)."""
    family = str((facts.sku(size) or {}).get("family") or size.family)
    found = []
    for name in ["lowprioritycores"] if spot else [family.lower(), "cores"]:
        if name in facts.usages:
            current, limit = facts.usages[name]
            found.append((limit - current, family if name == family.lower() else name, current, limit))
    return min(found, key=lambda entry: entry[0], default=(0, family, 0, 0))


def check_size(facts: RegionFacts, size: VmSize, spot: bool, nodes: int, generation: str | None) -> Problem | None:
    """What stops ``nodes`` VMs of ``size`` booting an image of ``generation`` (None: not known yet) in this region
    (None: nothing); quota is counted for all of them."""
    region = facts.region
    if not facts.skus:
        return Problem(region, size, "unknown-region", f"the region '{region}' offers no VM sizes to this subscription")
    sku = facts.sku(size)
    if sku is None:
        return Problem(region, size, "not-offered", f"{size.name} is not offered in {region}")
    for restriction in sku.get("restrictions") or []:  # zone restrictions aside: labctl does not pin a zone
        values = [str(v).lower() for v in restriction.get("values") or []]
        if restriction.get("type") == "Location" and (not values or region in values):
            reason = str(restriction.get("reasonCode") or "NotAvailable")
            return Problem(region, size, "not-offered", f"{size.name} is not available in {region} ({reason})")
    if generation and (why := misfit(sku, generation)):  # ARM refuses it only at a VM's PUT: a resize, once stopped
        return Problem(region, size, "misfit", f"{size.name} {why}")
    if capability(sku, "PremiumIO").lower() == "false":  # the lab's disks are Premium SSD (bodies.py)
        return Problem(region, size, "not-offered", f"{size.name} takes no Premium SSD, which the lab's disk is")
    if spot and not spot_capable(sku):
        why = f"{size.name} cannot run as Spot in {region} (LowPriorityCapable is False)"
        return Problem(region, size, "no-spot", why)
    each = int(_number(sku, "vCPUs")) or size.vcpus
    need = each * nodes
    free, quota, current, limit = free_vcpus(facts, size, spot)
    if free < need:
        label = "Spot (low-priority)" if quota == "lowprioritycores" else ("regional" if quota == "cores" else quota)
        what = size.name if nodes == 1 else f"{nodes} nodes of {size.name} ({nodes} x {each} vCPUs)"
        why = f"no {label} vCPU quota for {what} in {region} ({current} of {limit} vCPUs in use, {need} needed)"
        return Problem(region, size, "quota", why, free=free)
    return None


def check_resize(azure: Azure, record: LabRecord, vms: list[Any], size: VmSize) -> dict[str, Any]:
    """The new size's resource SKU once it fits every VM of the lab as they are (their cores freed, their Hyper-V
    generation, Trusted Launch and network interfaces kept); else the refusal, with sizes that fit."""
    td, held_name = azure_data(record), str(vms[0].hardware_profile.vm_size)
    region, spot, nodes = str(td.get("region")), bool(td.get("spot")), len(vms)
    group, name = group_and_name(str(vms[0].id))

    def generation() -> str | None:  # the VM's own, which its image gave it (an image version may be gone since)
        with arm("reading the lab's VM"):
            found = azure.compute.virtual_machines.instance_view(group, name).hyper_v_generation
        return str(getattr(found, "value", found)) if found else None  # None: not said, ARM checks the size itself

    both: list[Any] = side_by_side([functools.partial(load_region, azure, region), generation])
    facts, booted = both
    held = facts.skus.get(held_name.lower()) or {}
    cores = int(capability(held, "vCPUs") or lookup(held_name).vcpus) * nodes
    quotas = (str(held.get("family")).lower(), "cores", "lowprioritycores")  # deallocated, its cores still count
    facts.usages = {key: (used - cores * (key in quotas), limit) for key, (used, limit) in facts.usages.items()}
    trusted = getattr(vms[0].security_profile, "security_type", None) == "TrustedLaunch"
    accelerated = capability(held, "AcceleratedNetworkingEnabled").lower() == "true"  # the NICs were made so

    def refusals(candidate: VmSize, sku: dict[str, Any] | None) -> list[str]:
        problem = check_size(facts, candidate, spot, nodes, booted)
        why = [problem.message] if problem else []
        if not (problem or booted) and (controller := misfit(sku, None)):  # the generation unsaid: the disks still
            why.append(f"{candidate.name} {controller}")
        if trusted and capability(sku, "TrustedLaunchDisabled").lower() == "true":
            why.append(f"{candidate.name} has no Trusted Launch, which the lab's VMs have")
        if sku and accelerated and capability(sku, "AcceleratedNetworkingEnabled").lower() != "true":
            why.append(f"{candidate.name} has no accelerated networking, which the lab's network interfaces have")
        return why

    if why := refusals(size, sku := facts.sku(size)):
        others = alternatives(
            facts.skus, size, lambda other, found: other.name != held_name and not refusals(other, found)
        )
        such = f", such as {', '.join(others)}" if others else ""
        raise LabctlError(
            f"Cannot resize lab '{record.name}': {'; '.join(why)}. Nothing was stopped.",
            hint=f"Pick another --size offered in {region}{such}, or request quota: {settings.QUOTA_URL}",
        )
    return sku or {}


def latest_image(azure: Azure, region: str, urn: str) -> Image:
    """The image's newest version in the region (or the version the URN names), as it describes itself."""
    publisher, offer, sku, version = urn.split(":")
    images = azure.compute.virtual_machine_images
    with arm(f"looking up the image {urn} in {region}"):
        if version == "latest":
            versions = images.list(region, publisher, offer, sku, top=1, orderby="name desc")
            names = [str(v.as_dict().get("name")) for v in versions]
            if not names:
                raise LabctlError(
                    f"The image {urn} has no versions in {region}.",
                    hint="Pick another --region (or --region auto).",
                )
            version = names[0]
        image = images.get(region, publisher, offer, sku, version).as_dict()
    props = image.get("properties") or {}
    plan, features = props.get("plan"), props.get("features")
    # ARM refuses Trusted Launch on an image unless its features say so (SecurityType: TrustedLaunch...).
    trusted = any(f.get("name") == "SecurityType" and "TrustedLaunch" in str(f.get("value")) for f in features or [])
    plan = {k: str(v) for k, v in plan.items()} if plan else None
    return Image(version, plan, trusted, str(props.get("hyperVGeneration") or "V1"))  # absent: generation 1


def ensure_providers(azure: Azure, namespaces: tuple[str, ...] = PROVIDERS) -> None:
    """Register each provider the subscription lacks and wait until it is (bounded), before anything bills."""

    def state(namespace: str) -> str:
        with arm(f"reading whether the subscription may use {namespace}"):
            return str(azure.resources.providers.get(namespace).registration_state)

    def register(namespace: str) -> None:
        now = state(namespace)
        if now == "Registered":
            return
        try:
            with arm(f"registering the resource provider {namespace}"):
                if now != "Registering":
                    azure.resources.providers.register(namespace)
        except LabctlError as exc:
            raise LabctlError(
                f"The subscription is not registered to use {namespace}, which labctl needs, and registering it was "
                f"refused: {exc.message} Nothing was created.",
                hint=f"Run (or ask an owner to run) 'az provider register --namespace {namespace}', then 'labctl up'.",
            ) from exc
        poll(lambda: state(namespace), lambda now: now == "Registered", 300, f"registering {namespace}")

    side_by_side([functools.partial(register, namespace) for namespace in namespaces])


def ensure_terms(azure: Azure, plan: dict[str, str], urn: str, consent: bool = False) -> None:
    ensure_providers(azure, ("Microsoft.MarketplaceOrdering",))
    resources, version = azure.resources.resources, settings.AGREEMENT_API_VERSION
    agreement = (
        f"/subscriptions/{azure.subscription_id}/providers/Microsoft.MarketplaceOrdering/offerTypes/virtualmachine"
        f"/publishers/{plan['publisher']}/offers/{plan['product']}/plans/{plan['name']}/agreements/current"
    )
    with arm("reading the image's marketplace terms"):
        current = resources.get_by_id(agreement, api_version=version).as_dict()
    if (current.get("properties") or {}).get("accepted"):
        return
    refusal = LabctlError(
        f"The image {urn} has marketplace terms that this subscription has not accepted.",
        hint=f"Read and accept them with 'az vm image terms accept --urn {urn}', or let labctl accept them "
        "with 'labctl up --yes' (or LABCTL_ACCEPT_IMAGE_TERMS=1), then run 'labctl up' again.",
    )
    terms = f"The image {urn} has marketplace terms ({plan['publisher']}/{plan['product']}). Accept?"
    if not (consent or env_yes("LABCTL_ACCEPT_IMAGE_TERMS") or agreed(terms, refusal)):
        raise refusal
    body = {"properties": {**(current.get("properties") or {}), "accepted": True}}  # no read-only systemData
    with arm("accepting the image's marketplace terms"):
        finish(resources.begin_create_or_update_by_id(agreement, body, api_version=version))


def choose(azure: Azure, plan: AzurePlan, tried: set[tuple[str, str]], cache: dict[str, RegionFacts]) -> Choice:
    """The first (region, size) not yet ``tried`` that passes every check, else the first region's refusal."""
    refused: list[tuple[AzurePlan, list[Problem], Image | None] | LabctlError] = []  # region by region: first told
    for region in plan.regions:
        if not (sizes := [s for s in plan.sizes if (region, s.name) not in tried]):
            continue
        load = functools.partial(attempt, functools.partial(load_region, azure, region))
        image = functools.partial(attempt, functools.partial(latest_image, azure, region, plan.image))
        both: list[Any] = side_by_side([load, image] if region not in cache else [image])
        if isinstance(both[0], RegionFacts):
            cache[region] = both[0]
        elif region not in cache:  # this region could not be read: the next one may
            refused.append(both[0])
            continue
        facts, found, problems = cache[region], both[-1], []
        for size in sizes:
            known = found.generation if isinstance(found, Image) else None  # an image not found is told once, next
            if problem := check_size(facts, size, plan.spot, plan.nodes, known):
                problems.append(problem)
                if problem.kind == "unknown-region":
                    break
                continue
            if isinstance(found, LabctlError):
                problems.append(Problem(region, size, "image", found.message))
                break
            if found.plan:
                ensure_terms(azure, found.plan, plan.image, consent=plan.accept_terms)
            sku = facts.sku(size)
            trusted = found.trusted_launch and capability(sku, "TrustedLaunchDisabled").lower() != "true"
            accelerated = capability(sku, "AcceleratedNetworkingEnabled").lower() == "true"
            return Choice(region, from_sku(size, sku or {}, region), found.version, found.plan, trusted, accelerated)
        refused.append((replace(plan, sizes=sizes, regions=[region]), problems, found if known else None))
    first = refused[0]
    raise first if isinstance(first, LabctlError) else _explain(azure, *first, cache)


def _explain(
    azure: Azure, plan: AzurePlan, problems: list[Problem], image: Image | None, cache: dict[str, RegionFacts]
) -> LabctlError:
    first, size = problems[0], plan.sizes[0]

    def fits(here: RegionFacts, candidate: VmSize) -> bool:
        return check_size(here, candidate, plan.spot, plan.nodes, image.generation if image else None) is None

    what = "; ".join(p.message for p in problems[:4])
    if first.kind == "unknown-region":
        return LabctlError(
            f"Cannot create the lab: {what}.",
            hint="Check the region name ('az account list-locations -o table') or use --region auto.",
        )
    if first.kind in ("no-spot", "misfit"):  # the size is the matter, not the region: others that fit here
        there = cache[first.region]
        others = alternatives(there.skus, first.size, lambda candidate, sku: fits(there, candidate))
        spot = ", or drop --spot" if first.kind == "no-spot" else ""
        hint = f"Use a size that fits, such as {', '.join(others)} (--size NAME){spot}." if others else ""
        return LabctlError(f"Cannot create the lab: {what}.", hint=hint or f"Pick another --size{spot}.")
    # The ways out: other regions where the first size is offered with free quota, quota, a smaller size, fewer nodes.
    others = [r for r in settings.AUTO_REGIONS if r not in plan.regions][:8]
    missing = [r for r in others if r not in cache]
    loaded = side_by_side([functools.partial(attempt, functools.partial(load_region, azure, r)) for r in missing])
    cache.update((r, found) for r, found in zip(missing, loaded, strict=True) if isinstance(found, RegionFacts))
    room = [
        f"{region} ({free_vcpus(facts, size, plan.spot)[0]} vCPUs free for {size.name})"
        for region in others
        if (facts := cache.get(region)) is not None and fits(facts, size)
    ]
    ways = [f"try {', '.join(room[:4])} (--region NAME, or --region auto)"] if room else []
    if first.kind == "quota":
        ways.append(f"request quota: {settings.QUOTA_URL}")
    smaller = [s for s in SIZES.values() if s.gpu == first.size.gpu and s.vcpus < first.size.vcpus and not grid_only(s)]
    if smaller:
        ways.append(f"or a smaller size (--size {max(smaller, key=lambda s: s.vcpus).name})")
    fitting = (first.free or 0) // max(first.size.vcpus, 1) if first.kind == "quota" else 0
    if plan.nodes > 1 and fitting >= 1:
        ways.append(f"or fewer nodes (--nodes {min(fitting, plan.nodes - 1)} fits the free quota)")
    hint = ("; ".join(ways) + ".") if ways else "Pick another --size or --region."
    return LabctlError(f"Cannot create the lab: {what}.", hint=hint[0].upper() + hint[1:])
