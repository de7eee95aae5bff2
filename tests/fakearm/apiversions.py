# ruff: noqa: E501  (error messages are kept whole, as ARM words them)
"""The api-versions the fake ARM accepts, per resource type, and ARM's refusal of any other.

ARM routes a request to a resource provider by the resource type and the ``api-version`` query parameter; a
version the provider has not registered for the type is refused before the provider sees the request:

* ARM's own types (resource groups, subscriptions, the generic resource list) answer
  400 ``InvalidApiVersionParameter``: "The api-version '{v}' is invalid. The supported versions are '{list}'."
* provider types answer 400 ``NoRegisteredProviderFound``: "No registered resource provider found for location
  '{location}' and API version '{v}' for type '{type}'. The supported api-versions are '{list}'. The supported
  locations are '{locations}'."
* no ``api-version`` at all: 400 ``MissingApiVersionParameter``.

The fake accepts exactly the versions the installed SDKs send (each client's operations module names its default
api-version: compute 2026-04-01, resource SKUs 2021-07-01, network 2026-03-01, resources 2025-04-01,
subscriptions 2022-12-01) plus the ones labctl sends by hand (DevTestLab schedules 2018-09-15, marketplace
agreements 2021-01-01, authorization 2022-04-01, the idle agent's compute 2024-07-01). Real ARM accepts many more;
accepting only these makes a version typo, or an SDK upgrade that changes what is sent, show up here first.
"""

from __future__ import annotations

from typing import Any

COMPUTE_SDK = "2026-04-01"  # azure-mgmt-compute: virtualMachines, usages, virtualMachineImages
IDLE_AGENT_COMPUTE = "2024-07-01"  # templates/idle_agent.py COMPUTE_API_VERSION (deallocate, by hand)

API_VERSIONS: dict[str, frozenset[str]] = {
    "Microsoft.Resources/subscriptions": frozenset({"2022-12-01"}),
    "Microsoft.Resources/resourceGroups": frozenset({"2025-04-01"}),
    "Microsoft.Resources/resources": frozenset({"2025-04-01"}),
    "Microsoft.Compute/virtualMachines": frozenset({COMPUTE_SDK, IDLE_AGENT_COMPUTE}),
    "Microsoft.Compute/disks": frozenset({"2026-03-02"}),
    "Microsoft.Compute/proximityPlacementGroups": frozenset({COMPUTE_SDK}),
    "Microsoft.Compute/skus": frozenset({"2021-07-01"}),
    "Microsoft.Compute/locations": frozenset({COMPUTE_SDK}),
    "Microsoft.Network/virtualNetworks": frozenset({"2026-03-01"}),
    "Microsoft.Network/networkSecurityGroups": frozenset({"2026-03-01"}),
    "Microsoft.Network/publicIPAddresses": frozenset({"2026-03-01"}),
    "Microsoft.Network/networkInterfaces": frozenset({"2026-03-01"}),
    "Microsoft.Network/natGateways": frozenset({"2026-03-01"}),
    "Microsoft.Resources/providers": frozenset({"2025-04-01"}),
    "Microsoft.DevTestLab/schedules": frozenset({"2018-09-15"}),
    "Microsoft.MarketplaceOrdering/offerTypes": frozenset({"2021-01-01"}),
    "Microsoft.Authorization/roleDefinitions": frozenset({"2022-04-01"}),
    "Microsoft.Authorization/roleAssignments": frozenset({"2022-04-01"}),
}

# Handlers of ARM endpoints that are not a provider's resource type.
_HANDLER_TYPES = {
    "list_subscriptions": "Microsoft.Resources/subscriptions",
    "list_groups": "Microsoft.Resources/resourceGroups",
    "group": "Microsoft.Resources/resourceGroups",
    "list_resources": "Microsoft.Resources/resources",
    "list_group_resources": "Microsoft.Resources/resources",
    "provider": "Microsoft.Resources/providers",
    "skus": "Microsoft.Compute/skus",
    "usages": "Microsoft.Compute/locations",
    "images": "Microsoft.Compute/locations",
    "agreement": "Microsoft.MarketplaceOrdering/offerTypes",
    "instance_view": "Microsoft.Compute/virtualMachines",
    "vm_action": "Microsoft.Compute/virtualMachines",
    "role_definition": "Microsoft.Authorization/roleDefinitions",
    "list_role_definitions": "Microsoft.Authorization/roleDefinitions",
    "role_assignment": "Microsoft.Authorization/roleAssignments",
    "list_role_assignments": "Microsoft.Authorization/roleAssignments",
}


def resource_type(handler: str, m: dict[str, str], type_names: dict[str, str]) -> str | None:
    """The resource type a request addresses (the key of API_VERSIONS), or None for non-ARM endpoints."""
    if handler == "resource":
        return type_names.get(f"{m['ns']}/{m['type']}".lower(), f"{m['ns']}/{m['type']}")
    return _HANDLER_TYPES.get(handler)


def refusal(
    table: dict[str, frozenset[str]], rtype: str, version: str | None, location: str, locations: list[str]
) -> tuple[str, str] | None:
    """ARM's (code, message) for a request of this type with this api-version, or None when it is accepted."""
    if not version:
        return (
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    allowed = table.get(rtype)
    if allowed is None or version in allowed:
        return None
    listing = ", ".join(sorted(allowed, reverse=True))
    if rtype.startswith("Microsoft.Resources/"):
        return (
            "InvalidApiVersionParameter",
            f"The api-version '{version}' is invalid. The supported versions are '{listing.replace(', ', ',')}'.",
        )
    return (
        "NoRegisteredProviderFound",
        f"No registered resource provider found for location '{location}' and API version '{version}' for type '{rtype.split('/', 1)[1]}'. The supported api-versions are '{listing}'. The supported locations are '{', '.join(locations)}'.",
    )


def request_location(m: dict[str, str], groups: dict[str, dict[str, Any]], body: bytes) -> str:
    """The location ARM would name in a refusal: the path's, the body's, or the resource group's."""
    if m.get("loc"):
        return m["loc"].lower()
    try:
        import json

        loc = json.loads(body or b"{}").get("location") if body else None
    except ValueError:
        loc = None
    if loc:
        return str(loc).lower()
    group = groups.get((m.get("rg") or "").lower())
    return str(group["location"]).lower() if group else "global"
