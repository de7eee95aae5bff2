"""Remove a lab: delete its resource group, wait until it is gone, and check nothing tagged for it remains."""

from __future__ import annotations

import time

from labctl.errors import LabctlError
from labctl.targets.azure import settings
from labctl.targets.azure.clients import Azure, arm
from labctl.targets.azure.provision import get_or_none, wait_rg_gone
from labctl.ui import Reporter

FORCE_DELETION_TYPES = "Microsoft.Compute/virtualMachines"


def leftovers(azure: Azure, lab: str) -> list[str]:
    """Ids of every resource in the subscription still tagged for the lab."""
    flt = f"tagName eq '{settings.TAG_LAB}' and tagValue eq '{lab}'"
    with arm("looking for resources left behind"):
        return [str(r.as_dict().get("id")) for r in azure.resources.resources.list(filter=flt)]


def destroy_lab(azure: Azure, lab: str, resource_group: str, ui: Reporter) -> None:
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    with ui.step(f"Deleting resource group {resource_group} and everything in it"):
        with arm(f"reading the resource group {resource_group}"):
            rg = get_or_none(lambda: azure.resources.resource_groups.get(resource_group))
        if rg is not None:
            deleting = (rg.get("properties") or {}).get("provisioningState") == "Deleting"
            if not deleting:
                try:
                    with arm(f"deleting the resource group {resource_group}"):
                        # Force deletion powers the VMs off instead of shutting them down: faster, and the
                        # group holds nothing whose shutdown needs to be graceful.
                        azure.resources.resource_groups.begin_delete(
                            resource_group, force_deletion_types=FORCE_DELETION_TYPES
                        ).result()
                except LabctlError as exc:
                    cause = exc.__cause__
                    gone = isinstance(cause, ResourceNotFoundError)  # deleted meanwhile: what `down` wanted
                    if not gone and not (isinstance(cause, HttpResponseError) and "BeingDeleted" in str(cause)):
                        raise
            wait_rg_gone(azure, resource_group)
    with ui.step("Checking that nothing tagged for the lab is left"):
        left = leftovers(azure, lab)
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:  # tag index updates lag behind deletions a little
            time.sleep(max(settings.poll_interval(), 0.01))
            left = leftovers(azure, lab)
    if left:
        raise LabctlError(
            f"The resource group of lab '{lab}' is deleted, but {len(left)} resource(s) tagged for it remain: "
            + ", ".join(left[:5]),
            hint="Delete them in the Azure portal (they may still cost money), or run 'labctl down' again.",
        )
