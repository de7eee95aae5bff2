"""Azure's evaluation of a network security group, for tests: which rule decides a packet, and whether it passes.

Azure takes the rules of one direction (the custom ``securityRules`` and the ``defaultSecurityRules`` it adds to
every NSG) in order of priority, lowest number first, and the first rule whose protocol, source and destination
(addresses and ports) all match decides: Allow or Deny; later rules are not looked at. Inbound traffic to a
public IP is evaluated after translation, so its destination is the VM's private address. Service tags stand
for address sets: ``VirtualNetwork`` the VNet's address space, ``AzureLoadBalancer`` Azure's health-probe
address, ``Internet`` every address outside the VNet, ``*`` anything.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

AZURE_LOAD_BALANCER = "168.63.129.16/32"


@dataclass(frozen=True)
class Packet:
    source: str  # an IPv4 address
    destination: str
    port: int  # the destination port
    protocol: str = "Tcp"
    source_port: int = 50000
    direction: str = "Inbound"


def _in_prefix(address: str, prefix: str, vnet: list[str]) -> bool:
    ip = ipaddress.ip_address(address)
    if prefix == "*":
        return True
    if prefix == "VirtualNetwork":
        return any(ip in ipaddress.ip_network(p) for p in vnet)
    if prefix == "Internet":
        return not any(ip in ipaddress.ip_network(p) for p in vnet)
    if prefix == "AzureLoadBalancer":
        return ip in ipaddress.ip_network(AZURE_LOAD_BALANCER)
    return ip in ipaddress.ip_network(prefix, strict=False)


def _in_ports(port: int, spec: str) -> bool:
    if spec == "*":
        return True
    low, _, high = spec.partition("-")
    return int(low) <= port <= int(high or low)


def _values(props: dict[str, Any], one: str, many: str) -> list[str]:
    return [str(v) for v in props.get(many) or []] or [str(props.get(one, "*"))]


def matches(rule: dict[str, Any], packet: Packet, vnet: list[str]) -> bool:
    props = rule.get("properties", rule)
    if props.get("direction") != packet.direction:
        return False
    if props.get("protocol", "*") not in ("*", packet.protocol):
        return False
    return (
        any(_in_prefix(packet.source, p, vnet) for p in _values(props, "sourceAddressPrefix", "sourceAddressPrefixes"))
        and any(_in_ports(packet.source_port, p) for p in _values(props, "sourcePortRange", "sourcePortRanges"))
        and any(
            _in_prefix(packet.destination, p, vnet)
            for p in _values(props, "destinationAddressPrefix", "destinationAddressPrefixes")
        )
        and any(_in_ports(packet.port, p) for p in _values(props, "destinationPortRange", "destinationPortRanges"))
    )


def decide(nsg: dict[str, Any], packet: Packet, vnet: list[str]) -> tuple[str, str]:
    """(Allow or Deny, the deciding rule's name) for ``packet`` through ``nsg`` as ARM returns it."""
    props = nsg.get("properties", nsg)
    rules = list(props.get("securityRules") or []) + list(props.get("defaultSecurityRules") or [])
    rules.sort(key=lambda r: int(r.get("properties", r)["priority"]))
    for rule in rules:
        if matches(rule, packet, vnet):
            return str(rule.get("properties", rule)["access"]), str(rule["name"])
    raise AssertionError("no rule decided: an NSG as ARM returns it always ends with DenyAll rules")
