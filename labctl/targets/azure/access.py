"""Who may reach the lab: SSH (22) only, only from the caller's address. Nothing else is ever opened."""

from __future__ import annotations

import ipaddress
import os
import ssl
import urllib.request
from typing import Any

from labctl.errors import LabctlError, UsageError
from labctl.targets.azure import settings
from labctl.validate import check_allow_ip

SSH_PORT = 22


# Ranges wider than these get a warning: allowed (a campus or company network), but far more than one machine.
# Wider than labctl.validate.REFUSE_WIDER_THAN is refused unless the user types '--allow-ip any'.
WARN_WIDER_THAN = {4: 24, 6: 56}


def parse_allow_ip(text: str) -> str:
    return check_allow_ip(text, "--allow-ip")


def breadth_warning(source: str) -> str | None:
    """'*' has its own warning where the plan is made; a discovered address is one host and never warns."""
    if source == "*" or source.startswith("<"):
        return None
    net = ipaddress.ip_network(source, strict=False)
    limit = WARN_WIDER_THAN[net.version]
    if net.prefixlen >= limit:
        return None
    return (
        f"SSH is open to {net}, {net.num_addresses:,} addresses (wider than /{limit}); "
        "key login only, but give your own address with --allow-ip if that is more than you meant."
    )


def discover_public_ip(url: str | None = None, timeout: float = 10.0) -> str:
    """The caller's public address as seen from the internet, asked of an HTTPS echo service."""
    url = url or settings.ip_echo_url()
    if not url.startswith("https://"):
        raise UsageError(f"LABCTL_IP_ECHO_URL must be an https:// URL, not '{url}'.", hint="Fix the variable.")
    try:
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE") or None
        context = ssl.create_default_context(cafile=bundle)
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            text = response.read(100).decode("ascii", "replace").strip()
        address = ipaddress.ip_address(text)
    except (OSError, ValueError) as exc:
        raise LabctlError(
            f"Could not find your public IP address from {url} ({exc}).",
            hint="Pass it yourself with --allow-ip YOUR.IP.ADDRESS (or a CIDR range); SSH is opened only to it.",
        ) from None
    return f"{address}/{address.max_prefixlen}"


def ssh_rule(source: str) -> dict[str, Any]:
    return {
        "name": "allow-ssh-from-caller",
        "properties": {
            "priority": 100,
            "direction": "Inbound",
            "access": "Allow",
            "protocol": "Tcp",
            "sourceAddressPrefix": source,
            "sourcePortRange": "*",
            "destinationAddressPrefix": "*",
            "destinationPortRange": str(SSH_PORT),
            "description": "SSH from the address that created the lab; Jupyter is reached through the tunnel.",
        },
    }


def check_rules(rules: list[dict[str, Any]], source: str) -> None:
    """Refuse an NSG whose custom inbound Allow rules admit anything but SSH from ``source``."""
    for rule in rules:
        props = rule.get("properties", rule)
        if props.get("direction") != "Inbound" or props.get("access") != "Allow":
            continue
        ports = props.get("destinationPortRanges") or [props.get("destinationPortRange")]
        sources = props.get("sourceAddressPrefixes") or [props.get("sourceAddressPrefix")]
        if [str(p) for p in ports] != [str(SSH_PORT)] or sources != [source]:
            raise LabctlError(
                f"The lab's network security group has a rule '{rule.get('name')}' that admits more than SSH "
                f"from {source}.",
                hint="Remove that rule in the Azure portal, or 'labctl down' and 'labctl up' again.",
            )
