"""`labctl status`: what runs where, since when, and what it costs.

Facts come from three places, each allowed to fail on its own: the local record, the target's live
description (Azure: power state, IP, price) and the lab container (health, runs). A stopped VM or a dropped
network still gives a useful answer instead of an error.
"""

from __future__ import annotations

from typing import Any

from labctl.errors import LabctlError
from labctl.state import StateStore
from labctl.ui import Outcome, Reporter


def _container_facts(record: Any, ui: Reporter) -> dict[str, Any]:
    from labctl import runs
    from labctl.workflows.runlab import lab_container

    with lab_container(record, ui) as container:
        health = (container.attrs.get("State", {}).get("Health") or {}).get("Status", "unknown")  # type: ignore[attr-defined]
        infos = runs.list_runs(container)
    latest = max(infos, key=lambda i: i.run_id).to_json() if infos else None
    return {"container": record.container_name, "jupyter": health, "runs": len(infos), "latest_run": latest}


def status(name: str | None, ui: Reporter) -> Outcome:
    from labctl.targets import get_target

    record = StateStore().resolve(name)
    data: dict[str, Any] = {
        "name": record.name,
        "target": record.target,
        "state": record.status,
        "created_at": record.created_at,
        "host": record.host,
        "gpu": record.gpu,
        "image": record.image,
    }
    try:
        data.update(get_target(record.target).describe(record))
    except LabctlError as exc:
        data["machine_error"] = exc.render()
    hours = data.get("uptime_hours")
    price = data.get("price_per_hour")
    if isinstance(hours, (int, float)) and isinstance(price, (int, float)):
        data["estimated_spend"] = round(hours * price, 2)
    if record.status == "ready" and data.get("power_state", "running") == "running":
        try:
            data.update(_container_facts(record, ui))
        except LabctlError as exc:
            data["container_error"] = exc.render()
    return Outcome(data, _render(data))


_LABELS = [
    ("name", "lab"),
    ("target", "target"),
    ("state", "state"),
    ("region", "region"),
    ("size", "size"),
    ("gpu", "gpu"),
    ("power_state", "power"),
    ("host", "address"),
    ("uptime_hours", "up for (h)"),
    ("price_per_hour", "$/hour"),
    ("estimated_spend", "spent so far ($)"),
    ("shutdown_at", "auto-shutdown"),
    ("container", "container"),
    ("jupyter", "jupyter"),
    ("runs", "runs"),
    ("machine_error", "machine"),
    ("container_error", "container"),
]


def _render(data: dict[str, Any]) -> str:
    rows = [(label, data[key]) for key, label in _LABELS if data.get(key) not in (None, "")]
    latest = data.get("latest_run")
    if latest:
        acc = latest.get("accuracy")
        acc_text = f", accuracy {float(acc) * 100:.1f}%" if acc is not None else ""
        rows.append(("latest run", f"{latest['run_id']} ({latest['state']}{acc_text})"))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
