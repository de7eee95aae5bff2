"""Where machines come from. Each target module is imported only when used, to keep the CLI fast."""

from __future__ import annotations

import importlib

from labctl.errors import UsageError
from labctl.targets.base import Target

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


def all_targets() -> list[Target]:
    return [get_target(kind) for kind in _TARGETS]
