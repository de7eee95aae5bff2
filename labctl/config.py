"""Settings: flags, then LABCTL_* variables, then labctl.toml (project) or the user config file."""

from __future__ import annotations

from labctl.errors import NotAvailableYet
from labctl.ui import Outcome


def show_config() -> Outcome:
    raise NotAvailableYet("config")
