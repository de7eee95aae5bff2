"""`status`: what runs where, since when, at what cost; `list`: the labs recorded here and, unless --local, those a
target finds by itself (Azure: tags). Each part may fail alone (a stopped VM still answers); asking changes nothing."""

from __future__ import annotations

from typing import Any

from labctl import labhost
from labctl.errors import LabctlError
from labctl.idle import read_facts
from labctl.machine import connect
from labctl.state import LabRecord, StateStore
from labctl.targets import all_targets, get_target
from labctl.ui import Outcome, PlainReporter, Reporter, clock, table_text
from labctl.validate import check_subscription


def status(ui: Reporter, name: str | None = None) -> Outcome:
    store = StateStore()
    if name is None:
        labs, unreadable = store.scan()
        if len(labs) > 1 and not unreadable:  # one table of all, each described as `status --name` would
            every = [lab_status(store, record) for record in sorted(labs, key=lambda r: r.name)]
            return Outcome({"labs": every}, render_table(every))
    data = lab_status(store, store.resolve(name))
    return Outcome(data, render(data))


def lab_status(store: StateStore, record: LabRecord) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": record.name,
        "target": record.target,
        "state": record.status,
        "created_at": record.created_at,
        "gpu": record.gpu or None,
        "image": record.image,
    }
    head = record.nodes[0]
    if head.host:
        data["host"] = f"{head.user}@{head.host}:{head.port}" if head.user else head.host
    target = get_target(record.target)
    try:
        data.update(target.describe(record))
        if owner := target.owner_of(record):  # a colleague's lab says so, since changing it is refused
            shown = owner.name or ("you" if owner.mine else "unknown (made before labs were per person)")
            if owner.mine and owner.name:
                shown += " (you)"
            elif not owner.mine:
                shown += f"; you are {owner.you}, so down, stop and start need --force and --confirm-name"
            data.update(owner=shown, owner_is_you=owner.mine)
        if record.status == "ready":  # what its machines say of the lab, those the target reports off skipped
            machines = data.get("nodes") or [{"node": 0, "power_state": data.get("power_state")}]
            data.update(labhost.describe_lab(record, machines=machines))
    except LabctlError as exc:
        data["error"] = exc.render()
    store.save(record)  # what the target noticed on the way (a stop labctl did not make) is kept for the spend
    data.update(_idle_facts(record, data))
    home = target.workspace_home(record)  # where it lives, and what keeping it costs
    data["kept_workspace" if record.status == "kept" else "workspace"] = home
    if record.status == "kept":
        flag = store.name_flag(record.name)
        data["hint"] = (
            f"The lab is down, its workspace kept: 'labctl up{flag}' brings it back with it, "
            f"'labctl down{flag} --delete-workspace' deletes it."
        )
    elif data.get("power_state") == "missing":
        data["hint"] = (
            f"The lab's VM is gone (deleted outside labctl), its workspace with it: 'labctl down --no-save --name "
            f"{record.name}' forgets it here, then 'labctl up --name {record.name}' makes a new one."
        )
    elif data.get("power_state") not in (None, "running"):
        data["hint"] = f"The VM is {data['power_state']}: 'labctl start' brings it back, 'labctl down' deletes it."
    if "latest_run" not in data and record.runs:
        last = record.runs[-1]
        data["latest_run"] = {key: getattr(last, key) for key in ("run_id", "state", "shown", "accuracy")}
        if last.state == "running" and data.get("power_state") not in (None, "running"):  # stopped not by labctl
            data["latest_run"]["shown"] = f"stopped with the VM, {data['power_state']}"
    return data


def _idle_facts(record: LabRecord, data: dict[str, Any]) -> dict[str, Any]:
    if not record.idle.get("installed"):
        why = record.idle.get("why_not")
        return {"idle_agent": f"not installed ({why})"} if why else {}
    if not data.get("reachable"):
        return {}
    try:
        with connect(record, PlainReporter(quiet=True), wait=labhost.EVERYDAY_WAIT) as machine:
            return read_facts(machine)
    except LabctlError as exc:
        return {"idle_agent": f"unreadable ({exc.message})"}


def _hours(seconds: Any) -> str | None:
    return clock(seconds) if isinstance(seconds, (int, float)) else None


def _money(value: Any) -> str | None:
    return f"${float(value):.2f}" if isinstance(value, (int, float)) else None


def render(data: dict[str, Any]) -> str:
    """Aligned lines, leaving out what is unknown rather than printing None."""
    minutes, spent = data.get("idle_stop_minutes"), _money(data.get("spend_so_far_usd"))
    checked = data.get("idle_last_decision")
    if checked and data.get("idle_checked_at"):
        checked = f"{checked} (at {data['idle_checked_at']})"
    shown = {  # label: value, in the order shown
        "lab": data.get("name"),
        "target": data.get("target"),
        "state": data.get("state"),
        "owner": data.get("owner"),
        "region": data.get("region"),
        "size": data.get("size"),
        "gpu": "yes" if data.get("gpu") is True else data.get("gpu"),
        "power": data.get("power_state"),
        "public IP": data.get("public_ip"),
        "address": data.get("host"),
        "up for": _hours(data.get("uptime_seconds")),
        "cost per hour": _money(data.get("usd_per_hour")),
        "spent since created": f"{spent} (estimate)" if spent else None,
        "budget left": _money(data.get("budget_left_usd")),
        "prices from": data.get("price_source"),
        "auto-shutdown": data.get("shutdown_at"),
        "idle stop": data.get("idle_agent"),
        "idle stop after": (f"{minutes:g} min" if minutes else "off") if isinstance(minutes, (int, float)) else None,
        "idle for": _hours(data.get("idle_for_seconds")),
        "stop due": data.get("idle_stop_due"),
        "last idle check": checked,
        "workspace": data.get("workspace"),
        "kept workspace": data.get("kept_workspace"),
        "runs checkpointed": data.get("runs_checkpointed"),
        "container": data.get("container"),
        "container health": data.get("health"),
        "jupyter": data.get("jupyter"),
        "runs": data.get("runs"),
        "could not reach": data.get("error"),
        "next": data.get("hint"),
        "latest run": _last_run(data),
    }
    rows = [(label, value) for label, value in shown.items() if value not in (None, "", False)]
    rows += [(f"node {n['node']}", _node_line(n)) for n in data.get("nodes") or []]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def _node_line(node: dict[str, Any]) -> str:
    parts = [str(node.get("address"))]
    if node.get("private_address") and node["private_address"] not in str(node.get("address")):
        parts[0] += f" (private {node['private_address']})"
    if node.get("power_state") not in (None, "running"):
        return f"{parts[0]}, {node['power_state']}"
    if not node.get("reachable"):
        return f"{parts[0]}, unreachable: {node.get('error') or 'no answer'}"
    parts.append(f"container {node.get('container')}")
    if node.get("gpus") is not None:
        parts.append(f"{node['gpus']} GPU{'s' if node['gpus'] != 1 else ''}")
    return ", ".join(parts)


def _last_run(data: dict[str, Any]) -> str | None:
    latest = data.get("latest_run")
    if not latest:
        return None
    acc = latest.get("accuracy")
    shown = f", accuracy {float(acc) * 100:.1f}%" if acc is not None else ""
    return f"{latest['run_id']} ({latest.get('shown') or latest['state']}{shown})"


def _idle_cell(data: dict[str, Any]) -> str:
    minutes = data.get("idle_stop_minutes")
    idle_for = _hours(data.get("idle_for_seconds"))
    if idle_for:
        return idle_for + (" (stop off)" if minutes == 0 else "")
    if minutes == 0:
        return "stop off"
    agent = data.get("idle_agent")
    if isinstance(agent, str) and agent.startswith(("not installed", "unreadable")):
        return agent.split(" (")[0]
    return "not idle" if data.get("idle_checked_at") else "-"


def render_table(labs: list[dict[str, Any]]) -> str:
    rows = []
    for data in labs:
        state = str(data.get("power_state") or data.get("state") or "-")
        if data.get("error"):
            state += " (unreachable)"
        size = str(data.get("size") or ("gpu" if data.get("gpu") else "-"))
        money = [_money(data.get(key)) or "-" for key in ("usd_per_hour", "spend_so_far_usd")]
        rows.append(
            [str(data["name"]), str(data["target"]), size, state, *money, _idle_cell(data), _last_run(data) or "-"]
        )
    columns = ("name", "target", "size", "state", "$/h", "spend", "idle", "last run")
    return table_text("Labs", columns, rows, right=("$/h", "spend"))


def list_labs(ui: Reporter, subscription: str | None = None, local_only: bool = False) -> Outcome:
    if subscription is not None:
        check_subscription(subscription)
    rows: dict[str, dict[str, Any]] = {}
    records, unreadable = StateStore().scan()
    for path in unreadable:  # a lab may hide behind it: say so rather than leave it out silently
        ui.warn(f"The state file {path} could not be read, so its lab is not listed from it; move it aside.")
    for record in records:
        target = get_target(record.target)
        where, size = target.where(record)
        row: dict[str, Any] = dict(name=record.name, target=record.target, status=record.status, where=where, size=size)
        if record.status == "kept":
            row.update(status="down, workspace kept", kept_workspace=target.workspace_home(record))
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
            # A colleague's lab may share a name with one of the user's: it gets a row of its own, by its group (a
            # kept workspace by its disk, in its owner's group).
            whose = lab.details.get("resource_group") or lab.details.get("workspace_disk")
            key = lab.name if lab.mine is not False else f"{lab.name}\0{whose}"
            here = dict(name=lab.name, target=lab.target, status="not recorded here", where=lab.where)
            row = rows.setdefault(key, {**here, "size": None, "host": None, "recorded_here": False})
            row[found_key] = True
            row["mine"] = lab.mine
            row.update({k: v for k, v in lab.details.items() if k != "subscription"})
            if lab.deleting:
                row["status"] = "deleting"
            elif lab.details.get("kept_workspace") and not row["recorded_here"]:
                row["status"] = "down, workspace kept"
        for row in rows.values():  # not searched (an error): whether its labs are there stays unknown
            gone = row["target"] == target.kind and not errors[target.kind] and not row.get("kept_workspace")
            if row.setdefault(found_key, None) is None and gone:
                row[found_key] = False
                row["status"] = f"{row['status']} (gone from {target.label})"
    labs = sorted(rows.values(), key=lambda r: r["name"])
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
    if any(r.get("mine") is False for r in labs):
        lines.append("Labs of others are listed for you to see; labctl acts on them only with --force and their name.")
    lines += [f"Kept workspace of lab {r['name']}: {r['kept_workspace']}." for r in labs if r.get("kept_workspace")]
    orphans = [r["name"] for r in labs if not r["recorded_here"] and r.get("mine") is not False]
    if orphans:
        lines.append(
            f"Not recorded on this computer: {', '.join(orphans)} ('labctl down --name NAME' deletes such a lab)."
        )
    return Outcome(data, "\n".join(lines))
