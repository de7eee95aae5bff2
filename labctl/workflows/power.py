"""`labctl stop` / `labctl start`: deallocate and bring back a lab's VM."""

from __future__ import annotations

from labctl.errors import NotAvailableYet
from labctl.ui import Outcome, Reporter


def stop(name: str | None, ui: Reporter) -> Outcome:
    raise NotAvailableYet("stop")


def start(name: str | None, ui: Reporter) -> Outcome:
    raise NotAvailableYet("start")
