"""The one interface every target implements: provision a reachable machine, describe it, destroy it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from labctl.spec import LabSpec
from labctl.state import LabRecord
from labctl.ui import Outcome, Reporter

SaveFn = Callable[[LabRecord], object]


class Target(Protocol):
    kind: str

    def plan(self, spec: LabSpec) -> Outcome:
        """What `up` would create, without creating anything (`up --dry-run`)."""
        ...

    def provision(self, spec: LabSpec, record: LabRecord, ui: Reporter, save: SaveFn) -> LabRecord:
        """Create or converge the machine and fill in how to reach it (host, port, user, key, pinned host key).

        ``save`` is called after each step that created something, so an interrupted `up` can be resumed and a
        half-made lab can be removed by `down`.
        """
        ...

    def destroy(self, record: LabRecord, ui: Reporter) -> None:
        """Remove everything this target created for the lab, and check that nothing is left."""
        ...

    def describe(self, record: LabRecord) -> dict[str, Any]:
        """Live facts for `labctl status`: power state, address, size, $/hour, uptime, shutdown time."""
        ...
