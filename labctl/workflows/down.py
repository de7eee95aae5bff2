"""`labctl down`: delete everything the lab created, verify, forget."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from labctl.errors import UsageError
from labctl.state import StateStore
from labctl.ui import Outcome, Reporter


@dataclass
class DownOptions:
    name: str | None = None
    yes: bool = False
    force: bool = False


def down(opts: DownOptions, ui: Reporter) -> Outcome:
    from labctl.targets import get_target

    store = StateStore()
    record = store.resolve(opts.name)
    what = {
        "azure": f"the resource group of lab '{record.name}' and everything in it (the VM, its disk, the network)",
        "ssh": f"the lab container on {record.host} (the machine itself stays)",
        "local": "the lab container on this computer",
    }.get(record.target, f"lab '{record.name}'")
    if not opts.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"'labctl down' would delete {what}.", hint="Add --yes to confirm from a script.")
        answer = input(f"Delete {what}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            return Outcome({"deleted": False, "name": record.name}, "Nothing was deleted.", exit_code=1)
    record.status = "deleting"
    store.save(record)
    get_target(record.target).destroy(record, ui)
    store.delete(record.name)
    return Outcome({"deleted": True, "name": record.name}, f"Lab '{record.name}' is gone; nothing is left running.")
