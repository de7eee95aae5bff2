"""`labctl list`: the labs recorded here and, unless --local, every lab Azure knows by its tags."""

from __future__ import annotations

from typing import Any

from labctl.errors import LabctlError
from labctl.state import StateStore
from labctl.ui import Outcome, Reporter


def list_labs(subscription: str | None, local_only: bool, ui: Reporter) -> Outcome:
    rows: dict[str, dict[str, Any]] = {}
    records, unreadable = StateStore().scan()
    for path in unreadable:  # a lab may hide behind it: say so rather than leave it out silently
        ui.warn(f"The state file {path} could not be read, so its lab is not listed from it; move it aside.")
    for record in records:
        td = record.target_data
        rows[record.name] = {
            "name": record.name,
            "target": record.target,
            "status": record.status,
            "where": td.get("region") or record.host or "this computer",
            "size": td.get("size"),
            "host": record.host,
            "recorded_here": True,
            "in_azure": None,
        }
    azure_error = None
    if not local_only:
        from labctl.targets.azure import AzureTarget

        try:
            found = AzureTarget().find_labs(subscription)
        except LabctlError as exc:
            azure_error = exc.render()
            ui.warn(f"Azure labs are not listed: {azure_error}")
            found = []
        for lab in found:
            row = rows.setdefault(
                lab["name"],
                {
                    "name": lab["name"],
                    "target": "azure",
                    "status": "not recorded here",
                    "where": lab["region"],
                    "size": None,
                    "host": None,
                    "recorded_here": False,
                },
            )
            row["in_azure"] = True
            row.update(
                resource_group=lab["resource_group"], creator=lab.get("creator"), created_at=lab.get("created_at")
            )
            if lab.get("state") == "Deleting":
                row["status"] = "deleting"
        for row in rows.values():
            if row["target"] == "azure" and row["in_azure"] is None and azure_error is None:
                row["in_azure"] = False
                row["status"] = f"{row['status']} (gone from Azure)"
    labs = sorted(rows.values(), key=lambda r: r["name"])
    if not labs:
        return Outcome({"labs": []}, "No labs. Create one with 'labctl up' (or 'labctl up --gpu').")
    lines = [f"{'NAME':<24} {'TARGET':<7} {'STATUS':<28} {'WHERE':<16} SIZE"]
    for row in labs:
        lines.append(
            f"{row['name']:<24} {row['target']:<7} {row['status']:<28} {row['where'] or '-'!s:<16} {row['size'] or '-'}"
        )
    orphans = [r["name"] for r in labs if r.get("in_azure") and not r["recorded_here"]]
    if orphans:
        lines.append(
            f"Not recorded on this computer: {', '.join(orphans)} ('labctl down --name NAME' deletes such a lab)."
        )
    return Outcome({"labs": labs, "azure_error": azure_error}, "\n".join(lines))
