"""`--target local`: the lab container on this computer's Docker engine; nothing to provision or tunnel."""

from __future__ import annotations

from typing import Any

from labctl.errors import UsageError
from labctl.spec import LabSpec
from labctl.state import LabRecord, SaveFn
from labctl.targets.base import Target
from labctl.ui import Outcome, Reporter


class LocalTarget(Target):
    kind = "local"
    label = "this computer"
    remote = False

    def plan(self, spec: LabSpec) -> Outcome:
        steps = [
            "check that this computer's Docker engine answers",
            "build the lab image (once) and start the Jupyter container on 127.0.0.1",
        ]
        text = "\n".join(["labctl up --target local would:", *[f"  - {s}" for s in steps]])
        return Outcome({"target": "local", "gpu": spec.gpu, "steps": steps}, text)

    def provision(self, spec: LabSpec, record: LabRecord, ui: Reporter, save: SaveFn) -> LabRecord:
        from labctl.machine.base import LocalMachine

        with ui.step("Checking this computer's Docker engine"), LocalMachine() as machine:
            version = machine.docker().version().get("Version", "?")
        ui.info(f"  Docker Engine {version}")
        record.nodes[0].host = None
        save(record)
        return record

    def describe(self, record: LabRecord) -> dict[str, Any]:
        return {"host": "this computer"}

    def removal(self, record: LabRecord, keep: bool = False) -> str:
        return "the lab container on this computer"

    def where(self, record: LabRecord) -> tuple[str, str | None]:
        return "this computer", None

    def idle_agent(self, record: LabRecord) -> dict[str, Any]:
        raise UsageError(
            "labctl installs no idle agent on this computer: it would need root and systemd here, and a container "
            "idling on your own machine bills nothing.",
            hint="Stop the lab container yourself ('labctl down') when done.",
        )
