"""`labctl list`: the labs recorded here and, unless --local, every lab a target can find by itself (Azure: tags)."""

from __future__ import annotations

from typing import Any

from labctl.errors import LabctlError
from labctl.state import StateStore
from labctl.ui import Outcome, Reporter


def list_labs(ui: Reporter, subscription: str | None = None, local_only: bool = False) -> Outcome:
    from labctl.targets import all_targets, get_target
    from labctl.validate import check_subscription

    if subscription is not None:
        check_subscription(subscription)
    rows: dict[str, dict[str, Any]] = {}
    records, unreadable = StateStore().scan()
    for path in unreadable:  # a lab may hide behind it: say so rather than leave it out silently
        ui.warn(f"The state file {path} could not be read, so its lab is not listed from it; move it aside.")
    for record in records:
        where, size = get_target(record.target).where(record)
        row: dict[str, Any] = dict(name=record.name, target=record.target, status=record.status, where=where, size=size)
        rows[record.name] = {**row, "host": record.nodes[0].host, "recorded_here": True}
    errors: dict[str, str | None] = {}
    for target in [] if local_only else all_targets():
        # `in_<target>`: True found there, False recorded here but gone there, None not known (not searched).
        found_key = f"in_{target.kind}"
        try:
            found = target.find_labs(subscription)
        except LabctlError as exc:
            found, errors[target.kind] = [], exc.render()
            ui.warn(f"{target.label} labs are not listed: {errors[target.kind]}")
        if found is None:
            continue  # a target that cannot search
        errors.setdefault(target.kind, None)
        for lab in found:
            # A colleague's lab may share a name with one of the user's: it gets a row of its own.
            key = lab.name if lab.mine is not False else f"{lab.name}\0{lab.details.get('resource_group')}"
            here = dict(
                name=lab.name, target=lab.target, status="not recorded here", where=lab.where, size=None, host=None
            )
            row = rows.setdefault(key, {**here, "recorded_here": False})
            row[found_key] = True
            row["mine"] = lab.mine
            row.update({k: v for k, v in lab.details.items() if k != "subscription"})
            if lab.deleting:
                row["status"] = "deleting"
        for row in rows.values():  # not searched (an error): whether its labs are there stays unknown
            if row.setdefault(found_key, None) is None and row["target"] == target.kind and not errors[target.kind]:
                row[found_key] = False
                row["status"] = f"{row['status']} (gone from {target.label})"
    return _render(sorted(rows.values(), key=lambda r: r["name"]), errors)


def _render(labs: list[dict[str, Any]], errors: dict[str, str | None]) -> Outcome:
    data: dict[str, object] = {"labs": labs, **{f"{kind}_error": text for kind, text in errors.items()}}
    if not labs:
        return Outcome({"labs": []}, "No labs. Create one with 'labctl up' (or 'labctl up --gpu').")
    lines = [f"{'NAME':<24} {'TARGET':<7} {'STATUS':<28} {'WHERE':<16} {'SIZE':<22} OWNER"]
    for row in labs:
        owner = row.get("owner") or "-"
        if owner != "-" and row.get("mine"):
            owner += " (you)"
        lines.append(
            f"{row['name']:<24} {row['target']:<7} {row['status']:<28} {row['where'] or '-'!s:<16} "
            f"{row['size'] or '-'!s:<22} {owner}"
        )
    theirs = [r for r in labs if r.get("mine") is False]
    if theirs:
        lines.append("Labs of others are listed for you to see; labctl acts on them only with --force and their name.")
    orphans = [r["name"] for r in labs if not r["recorded_here"] and r.get("mine") is not False]
    if orphans:
        lines.append(
            f"Not recorded on this computer: {', '.join(orphans)} ('labctl down --name NAME' deletes such a lab)."
        )
    return Outcome(data, "\n".join(lines))
