"""`labctl run SCRIPT.py` (the user's own program, run as the bundled lab is) and `labctl cancel` (any run)."""

from __future__ import annotations

import time
from pathlib import Path

from labctl import runs
from labctl.cluster import NodeRun, stop_nodes
from labctl.errors import LabctlError, UsageError
from labctl.state import RunRecord, StateStore, now_iso
from labctl.ui import Outcome, Reporter
from labctl.workflows.runlab import Watch, lab_nodes, pick_run, reach, run_nodes, users_file, watch_run

STOP_WAIT_S = 60.0  # how long `cancel` waits for a run to save its checkpoint and end


def run_script(
    ui: Reporter, script: str, args: list[str] | None = None, name: str | None = None, detach: bool = False
) -> Outcome:
    args = args or []
    store = StateStore()
    record = store.resolve(name)
    with lab_nodes(record, ui) as lab:
        lab_runs = lab.reached[0].runs
        script, files = users_file(script, lab_runs, "script")
        run_id = runs.new_run_id()
        run_dir = runs.RUNS_DIR / run_id
        target = script if script.startswith("/") else str(run_dir / script)  # a relative one is among ``files``
        env = {"LAB_OUT": str(run_dir)}
        lab_runs.start(run_id, ["python", target, *args], path=runs.WORKSPACE, env=env, files=files)
        command = ["python", script, *args]
        record.runs.append(RunRecord(run_id=run_id, started_at=now_iso(), options={"command": command}))
        store.save(record)
        ui.info(f"Run {run_id} started on lab '{record.name}': {' '.join(command)}")
        watch = Watch(
            detach=detach,
            doing="running",
            brings="its folder",
            or_else=f"stop it with 'labctl cancel {run_id}'",
            starting=f"Starting python {Path(script).name} on the lab",
        )
        return watch_run(store, record, lab.reached, run_id, ui, watch)


def _wait_stopped(cluster: list[NodeRun], run_id: str, timeout: float) -> list[runs.RunInfo]:
    deadline = time.monotonic() + timeout
    while True:
        infos = [node.runs.info(run_id) for node in cluster]
        if all(info.state != "running" for info in infos) or time.monotonic() >= deadline:
            return infos
        time.sleep(0.5)


def cancel(ui: Reporter, name: str | None = None, run: str | None = None, *, wait: float = STOP_WAIT_S) -> Outcome:
    """SIGTERM, so the lab saves its checkpoint."""
    store = StateStore()
    record = store.resolve(name)
    with lab_nodes(record, ui) as lab:
        lab_runs = lab.reached[0].runs
        if run is None:
            running = [i.run_id for i in lab_runs.list() if i.state == "running"]
            if not running:
                raise UsageError(f"No run is running in lab '{record.name}'.", hint="'labctl runs' lists its runs.")
            run_id = running[-1]
        else:
            run_id = pick_run(record, lab_runs, run)
        if lab_runs.info(run_id).state != "running":
            raise UsageError(f"Run {run_id} is not running.", hint=f"'labctl fetch {run_id}' brings its results.")
        cluster = reach(lab, run_nodes(record, run_id))
        with ui.step(f"Stopping run {run_id} (it saves its checkpoint first)"):
            signalled = bool(stop_nodes(cluster, run_id))
            infos = _wait_stopped(cluster, run_id, wait if signalled else 2.0)
        kept = [f for f in lab_runs.files(run_id) if f not in ("pid", "exit_code")]
    still = [node.where for node, info in zip(cluster, infos, strict=True) if info.state == "running"]
    if still:
        on = f" on {', '.join(still)}" if len(cluster) > 1 else ""
        raise LabctlError(
            f"Run {run_id} was asked to stop but still runs{on} after {wait:.0f}s.",
            hint=f"It may be saving a large checkpoint; check with 'labctl runs', or 'labctl cancel {run_id}' again.",
        )
    for recorded in record.runs:
        if recorded.run_id == run_id:
            recorded.state, recorded.finished_at = "stopped", now_iso()
    store.save(record)
    shown = ", ".join(kept[:12]) + (f" and {len(kept) - 12} more" if len(kept) > 12 else "")
    state = infos[0].state
    text = (
        f"Run {run_id} stopped ({state}). Kept in the lab's /workspace/runs/{run_id}: {shown or 'nothing'}.\n"
        f"Bring it here with 'labctl fetch {run_id}'."
    )
    return Outcome({"run_id": run_id, "state": state, "kept": kept}, text)
