"""`labctl up`: from a spec to a ready lab, whatever the target."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from labctl.errors import NotAvailableYet
from labctl.ui import Outcome, Reporter


@dataclass
class UpOptions:
    name: str | None = None
    target: str | None = None
    host: str | None = None
    gpu: bool = False
    sizes: list[str] = field(default_factory=list)
    region: str | None = None
    image: str | None = None
    subscription: str | None = None
    allow_ip: str | None = None
    ssh_key: Path | None = None
    shutdown_at: str | None = None
    no_shutdown: bool = False
    spot: bool = False
    dry_run: bool = False
    yes: bool = False


def up(opts: UpOptions, ui: Reporter) -> Outcome:
    raise NotAvailableYet("up")
