"""The Azure target: a Data Science VM in its own resource group, reachable over SSH from the caller only.

Modules: ``clients`` (login, subscription, SDK clients, error sentences), ``plan`` (names and decisions made
offline), ``preflight`` (availability, quota, image), ``provision``, ``destroy``, ``inventory`` (tags, describe,
power), ``access`` (the NSG rule), ``shutdown`` (the schedule's time zone). The Azure SDK is imported lazily.
"""

from __future__ import annotations

from typing import Any

from labctl.spec import LabSpec
from labctl.state import LabRecord
from labctl.targets.base import SaveFn
from labctl.ui import Outcome, Reporter


class AzureTarget:
    kind = "azure"

    def __init__(self, azure: Any = None) -> None:
        self._azure = azure  # tests and callers with clients already made pass them in

    def _connect(self, subscription: str | None) -> Any:
        if self._azure is None:
            from labctl.targets.azure.clients import connect

            self._azure = connect(subscription)
        return self._azure

    def plan(self, spec: LabSpec) -> Outcome:
        from labctl.targets.azure.plan import make_plan

        plan = make_plan(spec)
        return Outcome(plan.to_json(), plan.render())

    def provision(self, spec: LabSpec, record: LabRecord, ui: Reporter, save: SaveFn) -> LabRecord:
        from labctl.targets.azure.provision import Provisioner

        return Provisioner(spec, record, ui, save, azure=self._azure).run()

    def destroy(self, record: LabRecord, ui: Reporter) -> None:
        from labctl.keys import forget_lab_keys
        from labctl.targets.azure.destroy import destroy_lab
        from labctl.targets.azure.plan import LabNames

        td = record.target_data
        if td.get("resource_group") is None and self._azure is None:
            # `up` stopped before creating anything in Azure (bad input, preflight, no login): nothing to delete.
            ui.info(f"Lab '{record.name}' never reached Azure; nothing to delete there.")
        else:
            azure = self._connect(td.get("subscription"))
            destroy_lab(azure, record.name, td.get("resource_group") or LabNames(record.name).resource_group, ui)
        forget_lab_keys(record.name)

    def describe(self, record: LabRecord) -> dict[str, Any]:
        from labctl.targets.azure.inventory import describe_lab

        return describe_lab(self._connect(record.target_data.get("subscription")), record)

    # Azure-only operations, used by `list`, `stop`, `start` and `down` without local state.

    def find_labs(self, subscription: str | None) -> list[dict[str, Any]]:
        from labctl.targets.azure.inventory import find_labs

        return find_labs(self._connect(subscription))

    def recover_record(self, name: str, subscription: str | None = None) -> LabRecord:
        from labctl.targets.azure.inventory import record_from_azure

        return record_from_azure(self._connect(subscription), name)

    def set_power(self, record: LabRecord, on: bool) -> dict[str, Any]:
        from labctl.targets.azure.inventory import set_power

        return set_power(self._connect(record.target_data.get("subscription")), record, on)
