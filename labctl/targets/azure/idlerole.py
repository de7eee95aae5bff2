"""The rights an Azure lab's VM needs to deallocate itself when idle, and nothing more: a custom role on the VM's
own scope for its system-assigned identity (bodies and names from :mod:`labctl.idle`). Granting it needs
``roleDefinitions/write`` and ``roleAssignments/write``, which a Contributor lacks: checked before anything exists.
"""

from __future__ import annotations

import fnmatch
import json
import time
from typing import Any

from labctl import idle
from labctl.errors import LabctlError
from labctl.targets.azure import settings
from labctl.targets.azure.clients import Azure, arm, arm_error_code
from labctl.ui import Reporter

PRINCIPAL_WAIT = 180.0  # a new identity or role can take a minute or two to reach the directory's replicas
# What ARM answers while one of them has not replicated yet, and what the user is told meanwhile.
NOT_REPLICATED = {
    "PrincipalNotFound": "The VM's identity is not in the directory yet; trying again.",
    "RoleDefinitionDoesNotExist": "The lab's new idle-stop role is not known everywhere yet; trying again.",
}


def call(azure: Azure, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """Through the resources client's pipeline; ARM errors raise HttpResponseError with ARM's code, as the SDK does."""
    from azure.core.exceptions import HttpResponseError
    from azure.core.rest import HttpRequest
    from azure.mgmt.core.exceptions import ARMErrorFormat

    request = HttpRequest(
        method, f"{azure.endpoint}{path}", params={"api-version": idle.AUTHORIZATION_API_VERSION}, json=body
    )
    response = azure.resources.send_request(request)
    if response.status_code >= 400:
        raise HttpResponseError(response=response, error_format=ARMErrorFormat)
    text = response.text()
    return response.status_code, json.loads(text) if text else None


def _allows(permissions: list[dict[str, Any]], action: str) -> bool:
    """ARM's rule: some permission's actions match (wildcards, any case) and none of its notActions do."""
    wanted = action.lower()
    for permission in permissions:
        allowed = any(fnmatch.fnmatchcase(wanted, str(a).lower()) for a in permission.get("actions") or [])
        denied = any(fnmatch.fnmatchcase(wanted, str(a).lower()) for a in permission.get("notActions") or [])
        if allowed and not denied:
            return True
    return False


def missing_grant_rights(azure: Azure, resource_group: str) -> list[str]:
    scope = f"/subscriptions/{azure.subscription_id}"
    with arm("checking whether you may give the lab's VM its idle-stop role"):
        _, answer = call(azure, "GET", f"{scope}/providers/Microsoft.Authorization/permissions")
    permissions = list((answer or {}).get("value") or [])
    return [action for action in idle.GRANT_ACTIONS if not _allows(permissions, action)]


def grant(
    azure: Azure,
    resource_group_id: str,
    vm_id: str,
    lab: str,
    principal: str,
    ui: Reporter,
    workers: tuple[str, ...] = (),
) -> None:
    """Idempotent; also on ``workers``, the lab's other VMs, which node 0 deallocates with itself."""
    with arm("creating the lab's idle-stop role"):
        call(
            azure,
            "PUT",
            idle.role_definition_url(resource_group_id, vm_id),
            idle.role_definition(resource_group_id, vm_id, lab),
        )
    for scope in (vm_id, *workers):
        _assign(azure, scope, idle.role_assignment(azure.subscription_id, scope, principal, role_of=vm_id), ui)


def _assign(azure: Azure, scope: str, body: dict[str, Any], ui: Reporter) -> None:
    from azure.core.exceptions import HttpResponseError

    deadline = time.monotonic() + PRINCIPAL_WAIT
    delay = max(settings.poll_interval(), 0.01)
    while True:
        try:
            with arm("assigning the idle-stop role to the VM's identity"):
                call(azure, "PUT", idle.role_assignment_url(scope), body)
            return
        except LabctlError as exc:
            code = arm_error_code(exc.__cause__) if isinstance(exc.__cause__, HttpResponseError) else None
            if code == "RoleAssignmentExists":
                return
            if code not in NOT_REPLICATED or time.monotonic() > deadline:
                raise
            ui.info(f"  {NOT_REPLICATED[code]}")
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def revoke_assignment(azure: Azure, vm_id: str) -> None:
    with arm("removing the idle-stop role assignment"):
        call(azure, "DELETE", idle.role_assignment_url(vm_id))


def delete_role(azure: Azure, vm_id: str) -> None:
    with arm("deleting the lab's idle-stop role"):
        call(azure, "DELETE", idle.role_definition_id(azure.subscription_id, vm_id))
