"""A PUT body checked against Azure's published OpenAPI definitions (``specs/``), as ARM's resource providers
check it before anything is made: required properties present, no read-only property set, enum values known,
basic types right, no property the definition does not name (the compute provider answers such a body with
"Could not find member 'x' on object of type 'Y'"). ``$ref`` and ``allOf`` are followed by definition name.

``id``, ``name``, ``type`` and ``etag`` are read-only in the specifications but ARM ignores them in a request
(a body read with GET and sent back is accepted), so they are not refused.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

SPECS = Path(__file__).parent / "specs"
# resource type -> (vendored definitions, the definition of its PUT body)
BODIES = {
    "Microsoft.Compute/virtualMachines": ("compute-2026-04-01.json", "VirtualMachine"),
    "Microsoft.Compute/proximityPlacementGroups": ("compute-2026-04-01.json", "ProximityPlacementGroup"),
    "Microsoft.Network/virtualNetworks": ("network-2025-07-01.json", "VirtualNetwork"),
    "Microsoft.Network/networkSecurityGroups": ("network-2025-07-01.json", "NetworkSecurityGroup"),
    "Microsoft.Network/publicIPAddresses": ("network-2025-07-01.json", "PublicIPAddress"),
    "Microsoft.Network/natGateways": ("network-2025-07-01.json", "NatGateway"),
    "Microsoft.Network/networkInterfaces": ("network-2025-07-01.json", "NetworkInterface"),
    "Microsoft.Resources/resourceGroups": ("resources-2025-04-01.json", "ResourceGroup"),
    "Microsoft.DevTestLab/schedules": ("devtestlab-2018-09-15.json", "Schedule"),
    "Microsoft.Authorization/roleDefinitions": ("authorization-2022-04-01.json", "RoleDefinition"),
    "Microsoft.Authorization/roleAssignments": ("authorization-2022-04-01.json", "RoleAssignmentCreateParameters"),
    "Microsoft.MarketplaceOrdering/offerTypes": ("marketplaceordering-2021-01-01.json", "AgreementTerms"),
}
IGNORED_READ_ONLY = frozenset({"id", "name", "type", "etag"})
JSON_TYPES = {"string": str, "boolean": bool, "integer": int, "number": (int, float), "array": list, "object": dict}


@functools.cache
def _definitions(file: str) -> dict[str, Any]:
    return dict(json.loads((SPECS / file).read_text())["definitions"])


def problems(resource_type: str, body: dict[str, Any]) -> list[str]:
    """What the published schema refuses in this PUT body (nothing for a type without vendored definitions)."""
    if resource_type not in BODIES:
        return []
    file, root = BODIES[resource_type]
    return _check(_definitions(file), {"$ref": f"#/definitions/{root}"}, body, "")


def _resolve(defs: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any] | None:
    """The schema behind a ``$ref`` (by the definition's name), or None when that definition is not kept."""
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name not in defs:
            return None
        schema = defs[name]
    return schema


def _members(defs: dict[str, Any], schema: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The properties and required names of an object schema, its ``allOf`` parents' included."""
    properties, required = {}, []
    for parent in schema.get("allOf") or []:
        resolved = _resolve(defs, parent)
        if resolved is not None:
            more, needed = _members(defs, resolved)
            properties.update(more)
            required += needed
    properties.update(schema.get("properties") or {})
    return properties, required + list(schema.get("required") or [])


def _check(defs: dict[str, Any], schema: dict[str, Any], value: Any, path: str) -> list[str]:
    resolved = _resolve(defs, schema)
    if resolved is None or value is None:
        return []
    kind = resolved.get("type") or ("object" if "properties" in resolved or "allOf" in resolved else None)
    wrong_type = kind is not None and not isinstance(value, JSON_TYPES[kind])
    if wrong_type or (kind in ("integer", "number") and isinstance(value, bool)):
        return [f"'{path or 'body'}' must be of type {kind}, not {json.dumps(value)}"]
    if "enum" in resolved and value not in resolved["enum"]:
        allowed = ", ".join(f"'{v}'" for v in resolved["enum"])
        return [f"'{path}' has the value '{value}', which is not one of {allowed}"]
    if kind == "array":
        return [
            p for i, item in enumerate(value) for p in _check(defs, resolved.get("items") or {}, item, f"{path}[{i}]")
        ]
    if kind != "object":
        return []
    if "additionalProperties" in resolved and "properties" not in resolved:
        extra = resolved["additionalProperties"]
        return [p for key, item in value.items() for p in _check(defs, extra, item, f"{path}.{key}")]
    return _check_members(defs, resolved, value, path)


def _check_members(defs: dict[str, Any], schema: dict[str, Any], value: dict[str, Any], path: str) -> list[str]:
    properties, required = _members(defs, schema)
    where = f"{path}." if path else ""
    found = [f"the required property '{where}{name}' is missing" for name in required if name not in value]
    for key, item in value.items():
        member = properties.get(key)
        if member is None:
            owner = str(schema.get("$ref", "")).rsplit("/", 1)[-1] or _name_of(defs, schema)
            found.append(f"Could not find member '{key}' on object of type '{owner}'. Path '{where}{key}'")
        elif member.get("readOnly") and key not in IGNORED_READ_ONLY:
            found.append(f"'{where}{key}' is read-only and cannot be set")
        else:
            found += _check(defs, member, item, f"{where}{key}")
    return found


def _name_of(defs: dict[str, Any], schema: dict[str, Any]) -> str:
    return next((name for name, d in defs.items() if d is schema), "object")
