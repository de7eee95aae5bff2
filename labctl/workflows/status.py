"""`labctl status`: what runs where, since when, and what it costs.

Facts come from the local record and from the target's live description (the machine's power state, address,
price and uptime where it has them; the container, Jupyter and the runs, read in one connection). Each part may
fail on its own: a stopped VM or a dropped network still gives a useful answer instead of an error, and asking
never starts or changes anything.
"""

from __future__ import annotations

from typing import Any

from labctl.errors import LabctlError
from labctl.state import StateStore
from labctl.ui import Outcome, Reporter


def status(name: str | None, ui: Reporter) -> Outcome:
    from labctl.targets import get_target

    record = StateStore().resolve(name)
    data: dict[str, Any] = {
        "name": record.name,
        "target": record.target,
        "state": record.status,
        "created_at": record.created_at,
        "gpu": record.gpu or None,
        "image": record.image,
    }
    if record.host:
        data["host"] = f"{record.user}@{record.host}:{record.port}" if record.user else record.host
    try:
        data.update(get_target(record.target).describe(record))
    except LabctlError as exc:
        data["error"] = exc.render()
    if data.get("power_state") not in (None, "running"):
        data["hint"] = f"The VM is {data['power_state']}: 'labctl start' brings it back, 'labctl down' deletes it."
    if "latest_run" not in data and record.runs:
        last = record.runs[-1]
        data["latest_run"] = {"run_id": last.run_id, "state": last.state, "accuracy": last.accuracy}
    return Outcome(data, render(data))


def _hours(seconds: Any) -> str | None:
    if not isinstance(seconds, (int, float)):
        return None
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h {rest // 60:02d}m"


def _money(value: Any) -> str | None:
    return f"${float(value):.2f}" if isinstance(value, (int, float)) else None


_LABELS: list[tuple[str, str]] = [
    ("name", "lab"),
    ("target", "target"),
    ("state", "state"),
    ("region", "region"),
    ("size", "size"),
    ("gpu", "gpu"),
    ("power_state", "power"),
    ("public_ip", "public IP"),
    ("host", "address"),
    ("uptime", "up for"),
    ("price", "cost per hour"),
    ("spend", "spent since start"),
    ("shutdown_at", "auto-shutdown"),
    ("container", "container"),
    ("health", "container health"),
    ("jupyter", "jupyter"),
    ("runs", "runs"),
    ("error", "could not reach"),
    ("hint", "next"),
]


def render(data: dict[str, Any]) -> str:
    """The status as aligned lines, leaving out what is unknown rather than printing None."""
    shown = dict(data)
    shown["uptime"] = _hours(data.get("uptime_seconds"))
    shown["price"] = _money(data.get("usd_per_hour"))
    shown["spend"] = _money(data.get("spend_so_far_usd"))
    if data.get("gpu") is True:
        shown["gpu"] = "yes"
    rows = [(label, shown[key]) for key, label in _LABELS if shown.get(key) not in (None, "", False)]
    latest = data.get("latest_run")
    if latest:
        acc = latest.get("accuracy")
        acc_text = f", accuracy {float(acc) * 100:.1f}%" if acc is not None else ""
        rows.append(("latest run", f"{latest['run_id']} ({latest['state']}{acc_text})"))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
