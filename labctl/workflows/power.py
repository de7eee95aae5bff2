"""`labctl stop` / `labctl start`: deallocate a lab's VM (no compute charges) and bring it back unchanged."""

from __future__ import annotations

from labctl.errors import UsageError
from labctl.state import LabRecord, StateStore, now_iso
from labctl.ui import Outcome, Reporter


def _azure_record(name: str | None, verb: str) -> tuple[StateStore, LabRecord]:
    store = StateStore()
    record = store.resolve(name)
    if record.target != "azure":
        raise UsageError(
            f"'labctl {verb}' applies to Azure labs; lab '{record.name}' runs on target '{record.target}'.",
            hint="Stop the machine yourself, or 'labctl down' to remove the lab container.",
        )
    return store, record


def stop(name: str | None, ui: Reporter) -> Outcome:
    from labctl.targets.azure import AzureTarget

    store, record = _azure_record(name, "stop")
    with ui.step(f"Deallocating the VM of lab '{record.name}'"):
        info = AzureTarget().set_power(record, False)
    record.status = "stopped"
    record.target_data.pop("started_at", None)
    store.save(record)
    text = (
        f"Lab '{record.name}' is stopped (deallocated): no compute charges. Its disk and static IP remain "
        f"(small storage charges); 'labctl start{_flag(record)}' brings it back, 'labctl down{_flag(record)}' "
        "deletes it."
    )
    return Outcome({"name": record.name, **info}, text)


def start(name: str | None, ui: Reporter) -> Outcome:
    from labctl.targets.azure import AzureTarget

    store, record = _azure_record(name, "start")
    record.target_data["started_at"] = now_iso()
    with ui.step(f"Starting the VM of lab '{record.name}'"):
        info = AzureTarget().set_power(record, True)
    if info.get("public_ip"):
        record.host = str(info["public_ip"])
    record.status = "ready"
    store.save(record)
    price = info.get("usd_per_hour_when_running")
    cost = f" (~${price:.2f}/h)" if isinstance(price, (int, float)) else ""
    text = f"Lab '{record.name}' is running again at {record.host}{cost}, with the same IP and keys."
    return Outcome({"name": record.name, **info}, text)


def _flag(record: LabRecord) -> str:
    return "" if record.name == "lab" else f" --name {record.name}"
