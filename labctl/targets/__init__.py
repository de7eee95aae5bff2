"""Where machines come from. Each target module is imported only when used, to keep the CLI fast."""

from __future__ import annotations

import importlib

from labctl.targets.base import Target
from labctl.validate import TARGETS, check_target

_CLASSES = {"azure": "AzureTarget", "ssh": "SSHTarget", "local": "LocalTarget"}


def get_target(kind: str) -> Target:
    module = importlib.import_module(f"labctl.targets.{check_target(kind)}")
    return getattr(module, _CLASSES[kind])()


def all_targets() -> list[Target]:
    return [get_target(kind) for kind in TARGETS]
