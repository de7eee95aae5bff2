"""Where machines come from. Each target module is imported only when used, to keep the CLI fast."""

from __future__ import annotations

import importlib

from labctl.errors import UsageError
from labctl.targets.base import LabDiscovery, Target, as_discovery

_TARGETS = {
    "azure": ("labctl.targets.azure", "AzureTarget"),
    "ssh": ("labctl.targets.ssh", "SSHTarget"),
    "local": ("labctl.targets.local", "LocalTarget"),
}


def get_target(kind: str) -> Target:
    try:
        module_name, class_name = _TARGETS[kind]
    except KeyError:
        raise UsageError(f"Unknown target '{kind}'.", hint=f"Choose one of: {', '.join(_TARGETS)}.") from None
    module = importlib.import_module(module_name)
    target: Target = getattr(module, class_name)()
    return target


def discovering_targets() -> list[tuple[Target, LabDiscovery]]:
    """The targets that can find labs without local records, each with that capability."""
    found = []
    for kind in _TARGETS:
        target = get_target(kind)
        discovery = as_discovery(target)
        if discovery is not None:
            found.append((target, discovery))
    return found
