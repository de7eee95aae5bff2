"""`labctl ssh`."""

from __future__ import annotations

from labctl.errors import NotAvailableYet
from labctl.ui import Outcome, Reporter


def ssh_shell(name: str | None, ui: Reporter) -> Outcome:
    raise NotAvailableYet("ssh")
