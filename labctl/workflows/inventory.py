"""`labctl list`."""

from __future__ import annotations

from labctl.errors import NotAvailableYet
from labctl.ui import Outcome, Reporter


def list_labs(subscription: str | None, local_only: bool, ui: Reporter) -> Outcome:
    raise NotAvailableYet("list")
