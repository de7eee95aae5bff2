"""`labctl status`."""

from __future__ import annotations

from labctl.errors import NotAvailableYet
from labctl.ui import Outcome, Reporter


def status(name: str | None, ui: Reporter) -> Outcome:
    raise NotAvailableYet("status")
