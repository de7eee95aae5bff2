# ruff: noqa: E501  (error messages are kept whole, as ARM words them)
"""Role-based access control and the instance metadata service of the fake ARM.

* ``Microsoft.Authorization/roleDefinitions`` and ``roleAssignments``: PUT/GET/DELETE at any scope and list with
  ``$filter``, in the shapes of the Authorization REST spec (2022-04-01): a custom role's id is subscription-level
  (``/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{guid}``) whatever scope it was put at,
  an assignment's id is ``{scope}/providers/Microsoft.Authorization/roleAssignments/{guid}``, both answer 201 to a
  PUT and 200 with the deleted body to a DELETE (204 when there was nothing). Custom roles outlive resource groups,
  as they do in Azure, and so do assignments, orphaned, after the resource (or group) they are scoped to is deleted
  (``FakeArm.assignments_outlive_scope``); a role with assignments cannot be deleted. A new custom role is unknown
  to assignments for ``FakeArm.role_replication_s`` seconds (``RoleDefinitionDoesNotExist``).
* The instance metadata service (IMDS) of the VM named by ``FakeArm.imds_vm``: ``/metadata/instance`` (compute
  section as documented for api-version 2021-02-01) and a managed-identity token for the VM's system-assigned
  identity. No published spec example exists for IMDS; the shapes follow the IMDS documentation page.
* Enforcement: a request made with a VM's managed-identity token is allowed only when that identity holds a role
  whose ``actions`` (minus ``notActions``) cover the operation, assigned at a scope that covers the resource;
  otherwise 403 ``AuthorizationFailed`` with ARM's wording. A user (service-principal) login holds the built-in
  role ``FakeArm.caller_role`` (Owner unless a test says Contributor) on the whole subscription.
* ``{scope}/providers/Microsoft.Authorization/permissions``: the caller's permissions, from those roles.
"""

from __future__ import annotations

import fnmatch
import re
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakearm.server import FakeArm

_SCOPE = r"(?P<scope>/subscriptions/(?P<sub>[^/]+)(?:/.+?)?)"
_AUTH = r"/providers/microsoft\.authorization"
RBAC_ROUTES: list[tuple[str, str, str]] = [
    ("GET", r"^/metadata/instance$", "imds_instance"),
    ("*", rf"^{_SCOPE}{_AUTH}/roledefinitions/(?P<id>[^/]+)$", "role_definition"),
    ("GET", rf"^{_SCOPE}{_AUTH}/roledefinitions$", "list_role_definitions"),
    ("*", rf"^{_SCOPE}{_AUTH}/roleassignments/(?P<id>[^/]+)$", "role_assignment"),
    ("GET", rf"^{_SCOPE}{_AUTH}/roleassignments$", "list_role_assignments"),
    ("GET", rf"^{_SCOPE}{_AUTH}/permissions$", "permissions"),
]
# The built-in roles a user login can hold here (``FakeArm.caller_role``), as Azure defines their permissions.
BUILTIN_ROLES: dict[str, list[dict[str, list[str]]]] = {
    "Owner": [{"actions": ["*"], "notActions": []}],
    "Contributor": [
        {
            "actions": ["*"],
            "notActions": [
                "Microsoft.Authorization/*/Delete",
                "Microsoft.Authorization/*/Write",
                "Microsoft.Authorization/elevateAccess/Action",
                "Microsoft.Blueprint/blueprintAssignments/write",
                "Microsoft.Blueprint/blueprintAssignments/delete",
                "Microsoft.Compute/galleries/share/action",
                "Microsoft.Purview/consents/write",
                "Microsoft.Purview/consents/delete",
            ],
        }
    ],
    "Reader": [{"actions": ["*/read"], "notActions": []}],
}
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
ROLE_DEFS = "Microsoft.Authorization/roleDefinitions"
ROLE_ASSIGNMENTS = "Microsoft.Authorization/roleAssignments"
Result = tuple[int, Any, dict[str, str]]


def covers(scope: str, target: str) -> bool:
    scope, target = scope.lower().rstrip("/"), target.lower().rstrip("/")
    return target == scope or target.startswith(scope + "/")


def role_allows(role: dict[str, Any], action: str) -> bool:
    wanted = action.lower()
    for permission in role["properties"].get("permissions") or []:
        allowed = any(fnmatch.fnmatchcase(wanted, str(p).lower()) for p in permission.get("actions") or [])
        denied = any(fnmatch.fnmatchcase(wanted, str(p).lower()) for p in permission.get("notActions") or [])
        if allowed and not denied:
            return True
    return False


def permitted(arm: FakeArm, principal: str, action: str, scope: str) -> bool:
    for assignment in arm.role_assignments.values():
        props = assignment["properties"]
        if props["principalId"] != principal or not covers(props["scope"], scope):
            continue
        role = arm.role_definitions.get(props["roleDefinitionId"].lower())
        if role is not None and role_allows(role, action):
            return True
    return False


_GROUP_ACTIONS = {"GET": "read", "HEAD": "read", "PUT": "write", "DELETE": "delete", "PATCH": "write"}


def required(handler: str, method: str, m: dict[str, str], type_names: dict[str, str]) -> tuple[str, str]:
    """The action a request needs and the scope it acts on, for checking a managed identity's roles."""
    sub = m.get("sub", "")
    rg = f"/subscriptions/{sub}/resourceGroups/{m.get('rg', '')}"
    vm = f"{rg}/providers/Microsoft.Compute/virtualMachines/{m.get('name', '')}"
    verb = _GROUP_ACTIONS.get(method, "action")
    if handler == "vm_action":
        action = {"deallocate": "deallocate", "start": "start", "poweroff": "powerOff"}[m["action"].lower()]
        return f"Microsoft.Compute/virtualMachines/{action}/action", vm
    if handler == "instance_view":
        return "Microsoft.Compute/virtualMachines/instanceView/read", vm
    if handler == "resource":
        rtype = type_names.get(f"{m['ns']}/{m['type']}".lower(), f"{m['ns']}/{m['type']}")
        return f"{rtype}/{verb}", f"{rg}/providers/{rtype}/{m['name']}"
    if handler == "group":
        return f"Microsoft.Resources/subscriptions/resourceGroups/{verb}", rg
    if handler in ("role_definition", "list_role_definitions"):
        return f"{ROLE_DEFS}/{verb}", m["scope"]
    if handler in ("role_assignment", "list_role_assignments"):
        return f"{ROLE_ASSIGNMENTS}/{verb}", m["scope"]
    if handler == "provider":  # reading a registration needs no more than Reader; registering, the action
        action = f"{m['ns']}/register/action" if method == "POST" else "Microsoft.Resources/subscriptions/read"
        return action, f"/subscriptions/{sub}"
    if handler == "permissions":
        return "Microsoft.Authorization/permissions/read", m["scope"]
    return f"*/{verb}", f"/subscriptions/{sub}" if sub else "/"  # a read is open to Reader


def _error(status: int, code: str, message: str) -> Exception:
    from tests.fakearm.server import ArmError

    return ArmError(status, code, message)


class RbacHandlers:
    """Mixed into the fake's request handler: IMDS and Microsoft.Authorization."""

    arm: FakeArm
    headers: Any

    def _checked_body(self, rtype: str, raw: bytes) -> dict[str, Any]:
        raise NotImplementedError

    def _stamp(self, props: dict[str, Any], old: dict[str, Any] | None) -> None:
        from tests.fakearm.server import utcnow

        now = utcnow()
        props["createdOn"] = (old or {}).get("properties", {}).get("createdOn") or now
        props["updatedOn"] = now
        props["createdBy"] = props["updatedBy"] = self.arm.client_id

    # ------------------------------------------------------------------ instance metadata

    def _imds_refusal(self, q: dict[str, str]) -> Result | None:
        if self.headers.get("Metadata") != "true":
            return 400, {"error": "Bad request. Required metadata header not specified"}, {}
        if self.headers.get("X-Forwarded-For"):
            return 400, {"error": "Bad request. Requests with X-Forwarded-For header are not allowed"}, {}
        if "api-version" not in q:
            return (
                400,
                {
                    "error": "Bad request. api-version was not specified in the request. For more information refer to aka.ms/azureimds",
                    "newest-versions": ["2021-02-01"],
                },
                {},
            )
        return None

    def _imds_vm(self) -> dict[str, Any] | None:
        vm_id = self.arm.imds_vm
        return self.arm.resources.get(vm_id.lower()) if vm_id else None

    def h_imds_instance(self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes) -> Result:
        refusal = self._imds_refusal(q)
        if refusal:
            return refusal
        vm = self._imds_vm()
        if vm is None:
            return 404, {"error": "Not found"}, {}
        props, parts = vm["properties"], vm["id"].split("/")
        tags = vm.get("tags") or {}
        compute = {
            "azEnvironment": "AzurePublicCloud",
            "location": vm["location"],
            "name": vm["name"],
            "osType": "Linux",
            "priority": props.get("priority", "Regular"),
            "provider": "Microsoft.Compute",
            "resourceGroupName": parts[4],
            "resourceId": vm["id"],
            "subscriptionId": parts[2],
            "tags": ";".join(f"{k}:{v}" for k, v in tags.items()),
            "tagsList": [{"name": k, "value": v} for k, v in tags.items()],
            "vmId": props.get("vmId", ""),
            "vmSize": props["hardwareProfile"]["vmSize"],
            "zone": "",
        }
        return 200, {"compute": compute, "network": {"interface": []}}, {}

    def imds_identity_token(self, q: dict[str, str]) -> Result:
        """A token for the system-assigned identity of ``FakeArm.imds_vm``."""
        refusal = self._imds_refusal(q)
        if refusal:
            return refusal
        vm = self._imds_vm()
        principal = ((vm or {}).get("identity") or {}).get("principalId")
        if not principal:
            return 400, {"error": "invalid_request", "error_description": "Identity not found"}, {}
        token = self.arm.issue_token(principal, "vm-identity", principal)
        self.arm.token_principals[token] = principal
        expires = int(time.time()) + 86399
        body = {
            "access_token": token,
            "client_id": (vm or {}).get("_clientId", ""),
            "expires_in": "86399",
            "expires_on": str(expires),
            "ext_expires_in": "86399",
            "not_before": str(expires - 86399),
            "resource": q.get("resource", ""),
            "token_type": "Bearer",
        }
        return 200, body, {}

    # ------------------------------------------------------------------ the caller's permissions

    def h_permissions(self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes) -> Result:
        """``GET {scope}/providers/Microsoft.Authorization/permissions``: the caller's actions there.

        A user login holds ``FakeArm.caller_role`` (built in) on the subscription; a managed identity, the roles
        assigned to it at scopes covering ``scope``.
        """
        principal = self.arm.token_principals.get(self.headers.get("Authorization", "")[7:])
        if principal is None:
            value = [dict(p, dataActions=[], notDataActions=[]) for p in BUILTIN_ROLES[self.arm.caller_role]]
            return 200, {"value": value}, {}
        value = []
        for assignment in self.arm.role_assignments.values():
            props = assignment["properties"]
            if props["principalId"] != principal or not covers(props["scope"], m["scope"]):
                continue
            role = self.arm.role_definitions.get(props["roleDefinitionId"].lower())
            value += list((role or {}).get("properties", {}).get("permissions") or [])
        return 200, {"value": value}, {}

    # ------------------------------------------------------------------ role definitions

    def h_role_definition(self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes) -> Result:
        arm = self.arm
        rid = f"/subscriptions/{m['sub']}/providers/{ROLE_DEFS}/{m['id']}"
        existing = arm.role_definitions.get(rid.lower())
        if method == "GET":
            if existing is None:
                raise _error(
                    404,
                    "RoleDefinitionDoesNotExist",
                    f"The specified role definition with ID '{m['id']}' does not exist.",
                )
            return 200, existing, {}
        if method == "DELETE":
            if existing is None:
                return 204, None, {}
            used = [
                a for a in arm.role_assignments.values() if a["properties"]["roleDefinitionId"].lower() == rid.lower()
            ]
            if used:
                raise _error(
                    409,
                    "RoleDefinitionHasAssignments",
                    "There are existing role assignments referencing role definition. Delete them and try again.",
                )
            return 200, arm.role_definitions.pop(rid.lower()), {}
        if method != "PUT":
            raise _error(405, "MethodNotAllowed", method)
        return self._put_role_definition(m, rid, existing, self._checked_body(ROLE_DEFS, raw))

    def _put_role_definition(
        self, m: dict[str, str], rid: str, existing: dict[str, Any] | None, body: dict[str, Any]
    ) -> Result:
        if not GUID.match(m["id"]):
            raise _error(400, "InvalidRoleDefinitionId", f"The role definition ID '{m['id']}' is not valid.")
        props = dict(body.get("properties") or {})
        name = str(props.get("roleName") or "")
        scopes = props.get("assignableScopes") or []
        if not name or not scopes:
            raise _error(
                400, "InvalidRoleDefinition", "The role definition needs a roleName and at least one assignable scope."
            )
        for other in self.arm.role_definitions.values():
            if other["properties"]["roleName"].lower() == name.lower() and other["id"].lower() != rid.lower():
                raise _error(
                    409,
                    "RoleDefinitionWithSameNameExists",
                    "A custom role with the same name already exists in this directory. Use a different name.",
                )
        props["type"] = "CustomRole"
        props["permissions"] = [
            {key: list(p.get(key) or []) for key in ("actions", "notActions", "dataActions", "notDataActions")}
            for p in props.get("permissions") or []
        ]
        self._stamp(props, existing)
        role = {"properties": props, "id": rid, "type": ROLE_DEFS, "name": m["id"]}
        self.arm.role_definitions[rid.lower()] = role
        self.arm.role_born.setdefault(rid.lower(), time.monotonic())
        return 201, role, {}

    def h_list_role_definitions(self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes) -> Result:
        text = q.get("$filter", "")
        name = re.search(r"roleName eq '([^']*)'", text)
        kind = re.search(r"type eq '([^']*)'", text)
        value = [
            r
            for r in self.arm.role_definitions.values()
            if r["id"].lower().startswith(f"/subscriptions/{m['sub']}/".lower())
            and (name is None or r["properties"]["roleName"].lower() == name.group(1).lower())
            and (kind is None or r["properties"]["type"].lower() == kind.group(1).lower())
        ]
        return 200, {"value": value}, {}

    # ------------------------------------------------------------------ role assignments

    def h_role_assignment(self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes) -> Result:
        arm = self.arm
        rid = f"{m['scope']}/providers/{ROLE_ASSIGNMENTS}/{m['id']}"
        existing = arm.role_assignments.get(rid.lower())
        if method == "GET":
            if existing is None:
                raise _error(404, "RoleAssignmentNotFound", f"The role assignment '{m['id']}' is not found.")
            return 200, existing, {}
        if method == "DELETE":
            if existing is None:
                return 204, None, {}
            return 200, arm.role_assignments.pop(rid.lower()), {}
        if method != "PUT":
            raise _error(405, "MethodNotAllowed", method)
        return self._put_role_assignment(m, rid, existing, self._checked_body(ROLE_ASSIGNMENTS, raw))

    def _put_role_assignment(
        self, m: dict[str, str], rid: str, existing: dict[str, Any] | None, body: dict[str, Any]
    ) -> Result:
        arm = self.arm
        props = body.get("properties") or {}
        role_id, principal = str(props.get("roleDefinitionId") or ""), str(props.get("principalId") or "")
        if not GUID.match(m["id"]):
            raise _error(400, "InvalidRoleAssignmentId", f"The role assignment ID '{m['id']}' is not valid.")
        # A new custom role takes a while to replicate; until then an assignment cannot find it.
        young = time.monotonic() - arm.role_born.get(role_id.lower(), 0.0) < arm.role_replication_s
        if role_id.lower() not in arm.role_definitions or young:
            raise _error(
                400, "RoleDefinitionDoesNotExist", f"The specified role definition with ID '{role_id}' does not exist."
            )
        if principal not in arm.known_principals():
            raise _error(
                400,
                "PrincipalNotFound",
                f"Principal {principal.replace('-', '')} does not exist in the directory {arm.tenant}.",
            )
        scope = m["scope"]
        for other in arm.role_assignments.values():
            o = other["properties"]
            same = o["principalId"] == principal and o["roleDefinitionId"].lower() == role_id.lower()
            if same and o["scope"].lower() == scope.lower() and other["id"].lower() != rid.lower():
                raise _error(409, "RoleAssignmentExists", "The role assignment already exists.")
        if existing is not None and (
            existing["properties"]["principalId"] != principal
            or existing["properties"]["roleDefinitionId"].lower() != role_id.lower()
        ):
            raise _error(
                409,
                "RoleAssignmentUpdateNotPermitted",
                "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
            )
        out: dict[str, Any] = {
            "roleDefinitionId": role_id,
            "principalId": principal,
            # recorded.json: left out, ARM reads it from the directory; every principal here is a service principal
            "principalType": props.get("principalType") or "ServicePrincipal",
            "scope": scope,
            "condition": None,
            "conditionVersion": None,
            "delegatedManagedIdentityResourceId": None,
            "description": None,
        }
        self._stamp(out, existing)
        assignment = {"properties": out, "id": rid, "type": ROLE_ASSIGNMENTS, "name": m["id"]}
        arm.role_assignments[rid.lower()] = assignment
        return 201, assignment, {}

    def h_list_role_assignments(self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes) -> Result:
        text = q.get("$filter", "")
        principal = re.search(r"principalId eq '([^']*)'", text)
        at_scope = "atscope()" in text.lower()
        value = []
        for a in self.arm.role_assignments.values():
            scope = a["properties"]["scope"]
            related = covers(scope, m["scope"]) if at_scope else covers(scope, m["scope"]) or covers(m["scope"], scope)
            if related and (principal is None or a["properties"]["principalId"] == principal.group(1)):
                value.append(a)
        return 200, {"value": value}, {}
