"""`labctl idle-stop MINUTES|off`: change the idle window of a running lab, on its machine, at once."""

from __future__ import annotations

from labctl import idle
from labctl.errors import LabctlError
from labctl.state import StateStore
from labctl.ui import Outcome, Reporter


def set_idle_stop(name: str | None, value: str, ui: Reporter) -> Outcome:
    from labctl.idle import settle
    from labctl.targets import get_target

    window = idle.parse_window(value, "The idle window")
    store = StateStore()
    record = store.resolve(name)
    if record.status != "ready":
        raise LabctlError(
            f"Lab '{record.name}' is {record.status}, so its idle agent cannot be changed now.",
            hint=f"'labctl start --name {record.name}' (or 'labctl up') first, then run this again.",
        )
    before = record.idle.get("window_minutes")
    record.idle["window_minutes"] = window
    try:
        line = settle(record, get_target(record.target), ui, only_config=True)
    except LabctlError:
        record.idle["window_minutes"] = before
        raise
    store.save(record)
    text = line or f"Idle stop of lab '{record.name}' is off."
    return Outcome({"name": record.name, "idle_stop_minutes": window, **record.idle}, text)
