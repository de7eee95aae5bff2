"""`labctl down`: delete everything the lab created, verify, forget."""

from __future__ import annotations

from dataclasses import dataclass

from labctl.errors import NotAvailableYet
from labctl.ui import Outcome, Reporter


@dataclass
class DownOptions:
    name: str | None = None
    yes: bool = False
    force: bool = False


def down(opts: DownOptions, ui: Reporter) -> Outcome:
    raise NotAvailableYet("down")
