"""`labctl open`: the SSH tunnel to Jupyter and its URL."""

from __future__ import annotations

from dataclasses import dataclass

from labctl.errors import NotAvailableYet
from labctl.ui import Outcome, Reporter


@dataclass
class OpenOptions:
    name: str | None = None
    port: int = 8888
    print_only: bool = False
    browser: bool = False


def open_lab(opts: OpenOptions, ui: Reporter) -> Outcome:
    raise NotAvailableYet("open")
