"""A VM identity's one right, to deallocate it: a custom role named by GUIDs of the VM id (up converges, down finds)."""

from __future__ import annotations

import fnmatch
import json
import time
import uuid
from typing import Any

from labctl.errors import LabctlError
from labctl.spec import LabSpec
from labctl.state import LabRecord
from labctl.targets.azure import settings
from labctl.targets.azure.clients import Azure, arm, arm_error_code
from labctl.targets.azure.plan import LabNames
from labctl.ui import Reporter

AUTHORIZATION_API_VERSION = "2022-04-01"
ROLE_ACTIONS = ("Microsoft.Compute/virtualMachines/deallocate/action", "Microsoft.Compute/virtualMachines/read")
# What a caller needs to give a VM's identity its role (Owner and User Access Administrator have both).
GRANT_ACTIONS = ("Microsoft.Authorization/roleDefinitions/write", "Microsoft.Authorization/roleAssignments/write")
ASK_FOR = (
    "Ask an owner of the subscription for the Owner or User Access Administrator role, or for a role that "
    "includes Microsoft.Authorization/roleAssignments/write and roleDefinitions/write, on the subscription or "
    "the lab's resource group"
)
_NAMESPACE = uuid.UUID("6f1d3c1e-5b0a-4f7e-9a51-1abc0c7d1e01")
PRINCIPAL_WAIT = 180.0  # a new identity or role can take a minute or two to reach the directory's replicas
# What ARM answers while one of them has not replicated yet, and what the user is told meanwhile.
NOT_REPLICATED = {
    "PrincipalNotFound": "The VM's identity is not in the directory yet; trying again.",
    "RoleDefinitionDoesNotExist": "The lab's new idle-stop role is not known everywhere yet; trying again.",
}


def role_definition_name(vm_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"role:{vm_id.lower()}"))


def role_definition_url(scope: str, vm_id: str) -> str:
    """Custom roles live at the subscription's scope whatever scope made them (`up` PUTs at the group's), past it."""
    return f"{scope}/providers/Microsoft.Authorization/roleDefinitions/{role_definition_name(vm_id)}"


def role_assignment_url(vm_id: str, own: bool = False) -> str:
    """``own``: a worker's assignment to its own identity, beside node 0's identity's on it."""
    name = uuid.uuid5(_NAMESPACE, f"assignment:{vm_id.lower()}{':own' if own else ''}")
    return f"{vm_id}/providers/Microsoft.Authorization/roleAssignments/{name}"


def role_definition(resource_group_id: str, vm_id: str, lab: str) -> dict[str, Any]:
    """Assignable on no narrower scope than a group (the assignment narrows it); its name unique in the directory."""
    return {
        "properties": {
            "roleName": f"labctl idle stop {lab} {role_definition_name(vm_id)[:8]}",
            "description": f"Lets the labctl lab '{lab}' deallocate its own VM when it is idle.",
            "type": "CustomRole",
            "permissions": [{"actions": list(ROLE_ACTIONS), "notActions": [], "dataActions": [], "notDataActions": []}],
            "assignableScopes": [resource_group_id],
        }
    }


def role_assignment(subscription_id: str, vm_id: str, principal_id: str, role_of: str | None = None) -> dict[str, Any]:
    """``principalType`` avoids a PrincipalNotFound while the new identity replicates; ``role_of``: node 0's VM."""
    return {
        "properties": {
            "roleDefinitionId": role_definition_url(f"/subscriptions/{subscription_id}", role_of or vm_id),
            "principalId": principal_id,
            "principalType": "ServicePrincipal",
        }
    }


def call(azure: Azure, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Through the resources client's pipeline; ARM errors raise HttpResponseError, as the SDK's do."""
    from azure.core.exceptions import HttpResponseError
    from azure.core.rest import HttpRequest
    from azure.mgmt.core.exceptions import ARMErrorFormat

    request = HttpRequest(
        method, f"{azure.endpoint}{path}", params={"api-version": AUTHORIZATION_API_VERSION}, json=body
    )
    response = azure.resources.send_request(request)
    if response.status_code >= 400:
        raise HttpResponseError(response=response, error_format=ARMErrorFormat)
    return json.loads(response.text() or "null")


def _allows(permissions: list[dict[str, Any]], action: str) -> bool:
    """ARM's rule: some permission's actions match (wildcards, any case) and none of its notActions do."""
    wanted = action.lower()
    for permission in permissions:
        allowed = any(fnmatch.fnmatchcase(wanted, str(a).lower()) for a in permission.get("actions") or [])
        denied = any(fnmatch.fnmatchcase(wanted, str(a).lower()) for a in permission.get("notActions") or [])
        if allowed and not denied:
            return True
    return False


def may_grant(azure: Azure, spec: LabSpec, record: LabRecord, ui: Reporter) -> bool:
    """Whether the lab gets idle stop, asked before anything is created."""
    record.idle.pop("why_not", None)
    if not spec.idle_stop and spec.budget is None:
        return False
    with arm("checking whether you may give the lab's VM its idle-stop role"):
        answer = call(
            azure, "GET", f"/subscriptions/{azure.subscription_id}/providers/Microsoft.Authorization/permissions"
        )
    permissions = list((answer or {}).get("value") or [])
    missing = [action for action in GRANT_ACTIONS if not _allows(permissions, action)]
    if not missing:
        return True
    why = (
        f"Idle stop needs the VM's own identity to hold a role that may deallocate it, and giving it one "
        f"needs {' and '.join(missing)} in subscription {azure.subscription_id}, which your login lacks."
    )
    if spec.idle_explicit or spec.budget is not None:
        raise LabctlError(
            f"{why} Nothing was created.",
            hint=f"{ASK_FOR}. Or run 'labctl up --idle-stop 0' (and no --budget) to rely on the daily auto-shutdown.",
        )
    ui.warn(
        f"{why} The lab is made without idle stop (no identity, no role); its daily auto-shutdown stays. "
        f"{ASK_FOR}, then 'labctl down' and 'labctl up' to add it."
    )
    record.idle["why_not"] = "your Azure login may not assign roles (Owner or User Access Administrator is needed)"
    return False


def grant(azure: Azure, names: LabNames, found: list[str], record: LabRecord, ui: Reporter) -> None:
    """Node 0's identity may deallocate every VM, and each worker's its own (for when node 0 is gone)."""
    vm_id, nodes = names.id("vm"), len(found)
    if not found[0]:
        ui.warn(
            f"The VM {names.name('vm')} was made without an identity, so it cannot stop itself when idle; its daily "
            f"auto-shutdown stays. 'labctl down --name {names.lab}' and 'labctl up' again to add idle stop."
        )
        record.idle["why_not"] = "the VM was created without a managed identity"
        return
    rg_id = f"/subscriptions/{azure.subscription_id}/resourceGroups/{names.resource_group}"
    what = "this VM" if nodes == 1 else f"this VM and the lab's {nodes - 1} other VMs"
    with ui.step(f"Idle stop: a role that may only deallocate {what}, for the VM's own identity"):
        with arm("creating the lab's idle-stop role"):
            call(azure, "PUT", role_definition_url(rg_id, vm_id), role_definition(rg_id, vm_id, names.lab))
        for node in range(nodes):
            scope, own = names.id("vm", node), found[node] if node else ""
            for who, url in [(found[0], role_assignment_url(scope)), (own, role_assignment_url(scope, True))]:
                if who:
                    _assign(azure, url, role_assignment(azure.subscription_id, scope, who, role_of=vm_id), ui)
    record.idle["granted"] = True


def _assign(azure: Azure, url: str, body: dict[str, Any], ui: Reporter) -> None:
    deadline, delay = time.monotonic() + PRINCIPAL_WAIT, max(settings.poll_interval(), 0.01)
    while True:
        try:
            with arm("assigning the idle-stop role to the VM's identity"):
                call(azure, "PUT", url, body)
            return
        except LabctlError as exc:
            code = arm_error_code(exc.__cause__)
            if code == "RoleAssignmentExists":
                return
            if code not in NOT_REPLICATED or time.monotonic() > deadline:
                raise
            ui.info(f"  {NOT_REPLICATED[code]}")
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def remove_rights(azure: Azure, vm_ids: list[str], record: LabRecord, ui: Reporter, *, before_group: bool) -> None:
    """Assignments before the group, the role after (roles outlive groups); tried unrecorded, warned only if made."""
    for vm_id in vm_ids:
        try:
            if before_group:
                with arm("removing the idle-stop role assignment"):
                    for own in (False, True):
                        call(azure, "DELETE", role_assignment_url(vm_id, own))
            else:
                with ui.step("Deleting the lab's idle-stop role"), arm("deleting the lab's idle-stop role"):
                    call(azure, "DELETE", role_definition_url(f"/subscriptions/{azure.subscription_id}", vm_id))
        except LabctlError as exc:
            if record.idle.get("granted"):
                what = "role assignment" if before_group else "custom role"
                ui.warn(f"The idle-stop {what} of lab '{record.name}' could not be deleted: {exc.message}")
