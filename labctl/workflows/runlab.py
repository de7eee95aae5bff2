"""`labctl run-lab`, `logs`, `runs`, `fetch`: training the bundled lab and bringing results back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from labctl.errors import NotAvailableYet
from labctl.ui import Outcome, Reporter


@dataclass
class RunLabOptions:
    name: str | None = None
    here: bool = False
    model: str = "tutorial"
    epochs: float | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    data: str | None = None
    device: str | None = None
    seed: int = 0
    notebook: bool = False
    detach: bool = False
    out: Path | None = None
    extra: list[str] = field(default_factory=list)


def run_lab(opts: RunLabOptions, ui: Reporter) -> Outcome:
    if opts.here:
        from labctl.workflows.runlab_here import run_here

        return run_here(opts, ui)
    raise NotAvailableYet("run-lab")


def logs(name: str | None, run: str | None, follow: bool, ui: Reporter) -> Outcome:
    raise NotAvailableYet("logs")


def list_runs(name: str | None, ui: Reporter) -> Outcome:
    raise NotAvailableYet("runs")


def fetch(name: str | None, run: str | None, ui: Reporter) -> Outcome:
    raise NotAvailableYet("fetch")
