"""Remove a lab: delete its resource group, wait until it is gone, and check nothing tagged for it remains."""

from __future__ import annotations

import time

from labctl.errors import LabctlError
from labctl.targets.azure import settings
from labctl.targets.azure.clients import Azure, arm, finish
from labctl.targets.azure.provision import get_or_none, wait_rg_gone
from labctl.ui import Reporter

FORCE_DELETION_TYPES = "Microsoft.Compute/virtualMachines"
TAG_INDEX_POLLS = 30  # the tag index lags behind deletions a little: a minute at the default poll interval


def leftovers(azure: Azure, lab: str, resource_group: str = "", owner: str | None = None) -> list[str]:
    """Ids of every resource in the subscription still tagged for the lab (its owner's lab of that name:
    a colleague's lab with the same name is not a leftover of this one)."""
    flt = f"tagName eq '{settings.TAG_LAB}' and tagValue eq '{lab}'"
    inside = f"/resourcegroups/{resource_group.lower()}/"
    with arm("looking for resources left behind"):
        hits = [str(r.id) for r in azure.resources.resources.list(filter=flt)]
        outside = [rid for rid in hits if inside not in rid.lower()]
        # A tag-filtered list carries no tags (ARM's rule), so the owner is read from the hits' groups' listings.
        tags: dict[str, dict[str, str]] = {}
        for group in {rid.split("/")[4] for rid in outside}:
            for resource in azure.resources.resources.list_by_resource_group(group):
                tags[str(resource.id).lower()] = resource.tags or {}

    def ours(rid: str) -> bool:
        if inside in rid.lower():
            return True
        tagged = tags.get(rid.lower(), {}).get(settings.TAG_OWNER)
        return tagged is None if owner is None else str(tagged).lower() == owner.lower()

    return [rid for rid in hits if ours(rid)]


def destroy_lab(azure: Azure, lab: str, resource_group: str, ui: Reporter, owner: str | None = None) -> None:
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    with ui.step(f"Deleting resource group {resource_group} and everything in it"):
        with arm(f"reading the resource group {resource_group}"):
            rg = get_or_none(lambda: azure.resources.resource_groups.get(resource_group))
        if rg is not None:
            owner = (rg.get("tags") or {}).get(settings.TAG_OWNER, owner)  # the group's tag decides, not the record
            deleting = (rg.get("properties") or {}).get("provisioningState") == "Deleting"
            if not deleting:
                try:
                    with arm(f"deleting the resource group {resource_group}"):
                        # Force deletion powers the VMs off instead of shutting them down: faster, and the
                        # group holds nothing whose shutdown needs to be graceful.
                        finish(
                            azure.resources.resource_groups.begin_delete(
                                resource_group, force_deletion_types=FORCE_DELETION_TYPES
                            )
                        )
                except LabctlError as exc:
                    cause = exc.__cause__
                    gone = isinstance(cause, ResourceNotFoundError)  # deleted meanwhile: what `down` wanted
                    if not gone and not (isinstance(cause, HttpResponseError) and "BeingDeleted" in str(cause)):
                        raise
            wait_rg_gone(azure, resource_group)
    with ui.step("Checking that nothing tagged for the lab is left"):
        left = leftovers(azure, lab, resource_group, owner)
        deadline = time.monotonic() + TAG_INDEX_POLLS * settings.poll_interval()
        while left and time.monotonic() < deadline:
            time.sleep(max(settings.poll_interval(), 0.01))
            left = leftovers(azure, lab, resource_group, owner)
    if left:
        raise LabctlError(
            f"The resource group of lab '{lab}' is deleted, but {len(left)} resource(s) tagged for it remain: "
            + ", ".join(left[:5]),
            hint="Delete them in the Azure portal (they may still cost money), or run 'labctl down' again.",
        )
