"""`run-lab`, `run` (the user's script, run as the lab is), `logs`, `runs`, `fetch`, `cancel`. A run starts detached in
the containers and this side only watches, so Ctrl-C or a dropped connection never stops training; node 0 holds every
run's record. `run-lab --here` runs the lab in this Python environment (the ``lab`` extra)."""

from __future__ import annotations

import functools
import importlib
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from labctl import runs, validate
from labctl.cluster import Followed, LabNodes, NodeRun, follow_nodes, rank_zero_node, rendezvous_port, stop_nodes
from labctl.distributed import DEFAULT_RDZV_PORT
from labctl.errors import LabctlError, NotFound, NotReady, UsageError
from labctl.files import lab_dir, without_links
from labctl.labhost import count_gpus, naming_node, prepare_lab, private_addresses, side_by_side
from labctl.locks import lab_lock
from labctl.runs import LabRuns
from labctl.spec import Settings
from labctl.state import LabRecord, RunRecord, StateStore, now_iso
from labctl.targets import get_target
from labctl.ui import LiveOutput, Outcome, Reporter
from labctl.workflows.runlab_options import (
    DATA_HINT,
    DATA_KEYWORDS,
    MACHINE_PREFIX,
    OPTIONS_HINT,
    Launch,
    RunLabOptions,
    cifarlab_args,
    lab_values,
    launch,
    read_metrics,
    result_text,
    results_root,
    run_result,
)
from labctl.workspace import workspace_path

CIFAR_ROOT = runs.LABCTL_DIR / "data" / "cifar10"
PROJECT_FILES = ("requirements.txt", "environment.yml")  # beside a script given to `run`: its packages
STOP_WAIT_S = 60.0  # how long `cancel` and `stop` wait for a run to save its checkpoint and end
BOOT_WAIT_S = 180.0  # how long `start` waits for the machine to answer before it resumes the runs


@contextmanager
def lab_nodes(record: LabRecord, ui: Reporter, wait: float = 0.0) -> Iterator[LabNodes]:
    """Node 0 reached; for ``wait`` seconds asked again while it does not answer: a machine just started boots first
    (when the lab comes back, to resume its runs)."""
    deadline = time.monotonic() + wait
    booting = f"Waiting up to {wait:.0f}s for the machine to boot, to resume its runs"
    with LabNodes(record, ui) as lab:
        with ui.step(booting) if wait else nullcontext():
            record.require_ready()
            results_root()  # where results go is settled (a project file's results_dir trusted) before connecting
            while not lab.reached:
                try:
                    reach(lab, 1)
                except (UsageError, NotFound, NotReady):  # a refusal: asking again would change nothing
                    raise
                except LabctlError:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(5)
        yield lab


def head_runs(record: LabRecord, ui: Reporter) -> list[runs.RunInfo]:
    """The lab's runs, as node 0 lists them."""
    with lab_nodes(record, ui) as lab:
        return lab.reached[0].runs.list()


def reach(lab: LabNodes, count: int) -> list[NodeRun]:
    """A machine that cannot be reached is most often switched off: the target says so if it can."""
    try:
        return lab.first(count)
    except LabctlError:
        error = get_target(lab.record.target).explain_unreachable(lab.record)
        if error is not None:
            raise error from None
        raise


def _data_source(opts: RunLabOptions, lab_runs: LabRuns, ui: Reporter) -> tuple[str, str | None]:
    """(where the run reads its data in the container, where cifar10 downloads to)"""
    data = opts.data or "cifar10"
    if data in DATA_KEYWORDS or data.startswith("synthetic:"):  # synthetic:N sets the number of images
        return data, str(CIFAR_ROOT) if data == "cifar10" else None
    if data.startswith(MACHINE_PREFIX):
        remote = data.removeprefix(MACHINE_PREFIX)
        if not lab_runs.box.exists(remote):
            raise UsageError(f"--data {data}: there is no {remote} on the lab's machine.", hint=DATA_HINT)
        return remote, None
    local = Path(data).expanduser()  # checked to exist by RunLabOptions.check
    with ui.step(f"Uploading {local.name} to the lab (once per version of the file)"):
        return str(lab_runs.upload_data(local)), None


def users_file(given: str, lab_runs: LabRuns, what: str) -> tuple[str, dict[str, Path]]:
    """(its name, copied into the run's folder so the results keep what ran) or (its path in /workspace)."""
    local = Path(given).expanduser()
    if local.is_file():
        return local.name, {local.name: local}
    inside = f"{runs.WORKSPACE}/{workspace_path(given, allow_root=False)}"
    if lab_runs.box.exists(inside):
        return inside, {}
    raise NotFound(
        f"The {what} {given} is neither on this computer nor in the lab's workspace.",
        hint=f"Name a {what} on this computer, or one in /workspace (as Jupyter's file browser shows it).",
    )


@contextmanager
def _output(ui: Reporter, starting: str | None = None) -> Iterator[Callable[[str], None]]:
    # stdout, unless it carries the command's --json (then stderr: `labctl run-lab --json | jq` reads one)
    with LiveOutput(ui, sys.stderr if ui.json_output else sys.stdout, starting) as live:

        def show(lines: str) -> None:
            live.write(lines + "\n")

        yield show


def _fetch_results(
    store: StateStore, record: LabRecord, lab_runs: LabRuns, run_id: str, info: runs.RunInfo, ui: Reporter
) -> Outcome:
    dest = without_links(results_root(), results_root() / record.name / run_id)
    lost = info.state == "lost"  # stopped under it (VM or container restart): no checksums were ever made
    with ui.step(f"Fetching the results of {run_id}"):
        count = lab_runs.fetch(run_id, dest, verify=not lost)
    if lost:
        ui.warn(
            f"Run {run_id} never finished (its machine or container restarted); its partial results are unverified."
        )
    run = next((r for r in record.runs if r.run_id == run_id), None) or RunRecord(run_id, started_at=now_iso())
    if run not in record.runs:
        record.runs.append(run)
    run.state, run.shown, run.fetched_to, run.accuracy = info.state, None, str(dest), info.accuracy
    run.finished_at = now_iso()
    store.save(record)
    data = run_result(run_id, f"lab {record.name}", info.state, dest, files_verified=None if lost else count)
    text = result_text(data) + (" (partial, unverified)" if lost else "")
    return Outcome(data, text, exit_code=0 if info.state == "succeeded" else 1)


def pick_run(record: LabRecord, lab_runs: LabRuns, run_id: str | None) -> str:
    """The run whose id starts with ``run_id``; the latest when none is given."""
    matches = sorted(info.run_id for info in lab_runs.list() if info.run_id.startswith(run_id or ""))
    if not matches and run_id is None:
        raise LabctlError(f"Lab '{record.name}' has no runs yet.", hint="Start one with 'labctl run-lab'.")
    if not matches:
        raise NotFound(f"Lab '{record.name}' has no run '{run_id}'.", hint="'labctl runs' lists the runs.")
    if len(matches) > 1 and run_id is not None:
        raise UsageError(
            f"'{run_id}' matches {len(matches)} runs in lab '{record.name}'.",
            hint="'labctl runs' lists them; give more of the run id.",
        )
    return matches[-1]


def run_lab(opts: RunLabOptions, ui: Reporter) -> Outcome:
    opts.check()
    if opts.here:
        return run_here(opts, ui)
    if opts.resume or opts.no_resume:
        return _resume_by_hand(opts, ui)
    store = StateStore()
    record = store.resolve(opts.name)
    nodes = _nodes_asked(opts, record)
    run_id = runs.new_run_id()
    with lab_nodes(record, ui) as lab:
        cluster = reach(lab, nodes)
        args, start = _start(opts, record, cluster, run_id, ui)
        options: dict[str, Any] = {"args": args, **({"nodes": nodes} if nodes > 1 else {})}
        record.runs.append(RunRecord(run_id=run_id, started_at=now_iso(), options=options))
        store.save(record)
        on = f"{nodes} nodes of lab" if nodes > 1 else "lab"
        ui.info(f"Run {run_id} started on {on} '{record.name}': {start.summary}.")
        return watch_run(store, record, cluster, run_id, ui, Watch(opts.detach))


def _start(
    opts: RunLabOptions, record: LabRecord, cluster: list[NodeRun], run_id: str, ui: Reporter
) -> tuple[list[str], Launch]:
    """Code and data on every node, then the run started on each, node 0 (the rendezvous) first."""
    several = len(cluster) > 1
    where = f"the containers of {len(cluster)} nodes" if several else "the container"
    with ui.step(f"Making sure the lab in {where} matches this labctl"):
        codes = [node.runs.ensure_lab_code() for node in cluster]
    args = []
    for node in cluster:
        with naming_node(record, node.node):
            data, data_root = _data_source(opts, node.runs, ui)
        args.append(cifarlab_args(opts, out=str(runs.RUNS_DIR / run_id), data=data, data_root=data_root))
    if opts.notebook_file:  # the notebook runs on one node
        name, files = users_file(opts.notebook_file, cluster[0].runs, "notebook")
        if files:
            cluster[0].runs.box.put(str(runs.RUNS_DIR / run_id), files)
        args[0] += ["--path", name if name.startswith("/") else str(runs.RUNS_DIR / run_id / name)]
    gpus = [0 if opts.notebook or opts.device == "cpu" else count_gpus(record, node.runs.box) for node in cluster]
    starts = launch(
        opts,
        args,
        run_id=run_id,
        gpus_per_node=gpus,
        addresses=private_addresses(record)[: len(cluster)],
        rdzv_port=rendezvous_port(cluster[0]) if several else DEFAULT_RDZV_PORT,
        log_dir=str(runs.RUNS_DIR / run_id / "ranks"),
    )
    for node, code, node_args, start in zip(cluster, codes, args, starts, strict=True):
        node.runs.start(
            run_id, start.argv, path=str(code), command=node_args, env=start.env or None, resumable=not opts.notebook
        )
    return args[0], starts[0]


def _resume_by_hand(opts: RunLabOptions, ui: Reporter) -> Outcome:
    """`run-lab --resume RUN`: on every node of the run, then watched as a new run is; `--no-resume RUN`: marked."""
    store = StateStore()
    record = store.resolve(opts.name)
    with lab_nodes(record, ui) as lab:
        head = lab.reached[0].runs
        run_id = pick_run(record, head, opts.resume or opts.no_resume)
        info = head.info(run_id)
        if opts.no_resume:
            head.keep_stopped(run_id)
            text = f"Run {run_id} ({info.state}) is not resumed when the lab comes back"
            return Outcome({"run_id": run_id, "resume": False}, f"{text}; 'labctl run-lab --resume {run_id}' still is.")
        if info.state not in ("interrupted", "lost", "failed") or not info.checkpoint:
            raise UsageError(
                f"Run {run_id} is {info.state}"
                + ("" if info.state == "running" else " and has no checkpoint to go on")
                + ": only a run stopped before its end goes on from its checkpoint.",
                hint="'labctl runs' shows each run's state; 'labctl run-lab' starts a new one.",
            )
        cluster = reach(lab, run_nodes(record, run_id))
        _resume_on(record, cluster, info, ui)
        store.save(record)
        return watch_run(store, record, cluster, run_id, ui, Watch(opts.detach))


def _resume_on(record: LabRecord, cluster: list[NodeRun], info: runs.RunInfo, ui: Reporter) -> None:
    for node in cluster:  # node 0 first: it holds the rendezvous
        node.runs.resume(info.run_id)
    for recorded in record.runs:
        if recorded.run_id == info.run_id:
            recorded.state, recorded.shown, recorded.finished_at = "running", None, None
    at = f" at epoch {info.epoch:g}/{info.epochs:g}" if info.epoch is not None and info.epochs else ""
    ui.info(f"Run {info.run_id} goes on from its checkpoint{at} on lab '{record.name}'.")


def resume_runs(
    store: StateStore, record: LabRecord, ui: Reporter, wait: float = 0.0, *, expected: bool = True
) -> list[str]:
    """When the lab comes back (`start`, `up`, `resize`): each run its machine's stop interrupted goes on from its
    checkpoint; one that cannot is named, with the way by hand. Not ``expected``: no run is known to be waiting."""
    resumed: list[str] = []
    try:
        with lab_nodes(record, ui, wait) as lab:
            for info in lab.reached[0].runs.list():
                if not info.to_resume:
                    continue
                try:
                    _resume_on(record, reach(lab, run_nodes(record, info.run_id)), info, ui)
                    resumed.append(info.run_id)
                except UsageError as exc:  # this run alone: resumed meanwhile by another command, say
                    ui.warn(f"Run {info.run_id} was not resumed: {exc.message}")
    except LabctlError as exc:
        (ui.warn if expected else ui.info)(
            f"Could not resume the lab's interrupted runs ({exc.message}); 'labctl runs' lists them, and "
            "'labctl run-lab --resume RUN' resumes one."
        )
    if resumed:
        store.save(record)
    return resumed


def stop_runs(record: LabRecord, reason: str, ui: Reporter, wait: float = STOP_WAIT_S) -> dict[str, str]:
    """Before the machine stops, every run checkpoints and ends (within ``wait``): each one's state, as shown."""
    with lab_nodes(record, ui) as lab:
        infos = {i.run_id: i for i in lab.reached[0].runs.list() if i.state == "running"}
        if not infos:
            return {}
        with ui.step(f"Saving the checkpoint of run {', '.join(infos)} before the machine stops"):
            nodes = reach(lab, len(record.nodes))  # all at once: the wait is one minute, not one per node
            said = side_by_side([functools.partial(node.runs.interrupt, reason, wait) for node in nodes])
        late = {run for each in said for run in each["timed_out"]}
        after = {i.run_id: i for i in lab.reached[0].runs.list() if i.run_id in infos}
    shown = {run_id: info.shown() for run_id, info in after.items()}
    ends = {run_id: info.state for run_id, info in after.items()}
    for run_id, info in after.items():
        resumes = info.resumable and not info.resume_off and info.checkpoint  # a late one goes on from a saved one only
        if run_id in late:
            ends[run_id] = "interrupted" if resumes else "stopped"  # as the machine's stop leaves it
            shown[run_id] = "interrupted, resumes on start from its last epoch's checkpoint" if resumes else "stopped"
            then = "resumes on start from its last epoch's checkpoint" if resumes else "ends with the machine"
            ui.warn(f"Run {run_id} did not end within {wait:.0f}s of its stop: it {then}.")
        elif resumes:
            ui.info(f"Run {run_id} saved its checkpoint: {shown[run_id]}.")
        else:
            ui.warn(f"Run {run_id} was stopped: {shown[run_id]}.")
    for run in record.runs:
        if run.run_id in shown:
            run.state, run.shown, run.finished_at = ends[run.run_id], shown[run.run_id], now_iso()
    return shown


def _import_core() -> ModuleType:
    """The cifarlab that ships with this labctl (so the options always match the core), else an installed one."""
    if "cifarlab" not in sys.modules:
        with suppress(LabctlError):
            bundled = str(lab_dir())
            if (Path(bundled) / "cifarlab" / "__init__.py").is_file() and bundled not in sys.path:
                sys.path.insert(0, bundled)
    try:
        return importlib.import_module("cifarlab")
    except ModuleNotFoundError as exc:
        raise LabctlError(
            f"run-lab --here needs the lab's Python packages, and '{exc.name}' is not installed in this environment.",
            hint="Install them with: pip install 'labctl[lab]' (PyTorch, Pillow, matplotlib, nbclient).",
        ) from exc


def run_here(opts: RunLabOptions, ui: Reporter) -> Outcome:
    if opts.name:
        ui.warn(f"--name {opts.name} is ignored with --here: the run happens in this Python environment.")
    with ui.status("Importing PyTorch"):
        core = _import_core()
    root = opts.out or results_root()
    out = without_links(root, opts.out or root / "here" / runs.new_run_id())
    given = lab_values(opts, out=str(out), data=opts.data or "cifar10")
    values = {key: str(value) for key, value in given.items() if value is not None}
    try:
        if opts.notebook:
            return _run_notebook(values, out, opts.notebook_file, ui)
        cfg = core.TrainConfig().with_strings(values)  # its values checked by RunLabOptions.check
        ui.info(f"Training the {cfg.model} model here on {cfg.data}; results in {out}")
        with LiveOutput(ui, sys.stderr) as live:
            metrics = core.train(cfg, stream=live)
    except core.ConfigError as exc:
        raise UsageError(str(exc), hint=OPTIONS_HINT) from exc
    except core.LabError as exc:
        raise LabctlError(str(exc)) from exc
    status = metrics["status"]
    data = run_result(out.name, "here", status, out, metrics, files_verified=None)
    text = result_text(data) + ("" if status == "succeeded" else " (the last checkpoint is kept)")
    return Outcome(data, text, exit_code={"succeeded": 0, "interrupted": 130}.get(status, 1))


def _run_notebook(params: dict[str, str], out: Path, source: str | None, ui: Reporter) -> Outcome:
    """The notebook with the parameters ``cifarlab notebook`` would give it."""
    run_notebook = importlib.import_module("cifarlab.notebook").run_notebook
    params.pop("out")
    source = str(Path(source).expanduser().resolve()) if source else None
    ui.info(f"Executing {Path(source).name if source else 'the lab notebook'} here, cell by cell; results in {out}")
    with LiveOutput(ui, sys.stderr, "Starting the notebook's kernel") as live:
        executed = run_notebook(out, params, source=source, stream=live)
    # The lab's notebook trains into LAB_OUT/run; a notebook of the user's own may write anything, or nothing.
    results = out / "run" if (out / "run" / "metrics.json").is_file() else out
    data = run_result(out.name, "here", "succeeded", results, files_verified=None)
    data["notebook"] = str(executed)
    return Outcome(data, f"Executed notebook: {executed}\n{result_text(data)}")


@dataclass(frozen=True)
class Watch:
    detach: bool
    doing: str = "training"  # or "running"
    brings: str = "the results"  # what `fetch` brings back
    or_else: str | None = None  # the other way on, after Ctrl-C; None: fetch the results
    starting: str = "Starting Python and PyTorch on the lab"  # the spinner's words until the run's first output


def watch_run(
    store: StateStore, record: LabRecord, cluster: list[NodeRun], run_id: str, ui: Reporter, watch: Watch
) -> Outcome:
    """Followed to its end, then its results brought here (rank 0's, whichever node kept them)."""
    where = f"the lab's {len(cluster)} nodes" if len(cluster) > 1 else "the machine"
    if watch.detach:
        text = (
            f"Run {run_id} is {watch.doing} on {where}.\n"
            f"  labctl logs --follow {run_id}   # watch it\n"
            f"  labctl fetch {run_id}           # bring {watch.brings} back when it is done"
        )
        several = {"nodes": len(cluster)} if len(cluster) > 1 else {}
        return Outcome({"run_id": run_id, "state": "running", **several}, text)
    try:
        with _output(ui, watch.starting) as show:
            followed = follow_nodes(cluster, run_id, show)
    except KeyboardInterrupt:
        or_else = watch.or_else or f"fetch with 'labctl fetch {run_id}'"
        raise LabctlError(
            f"Stopped watching; run {run_id} goes on {watch.doing} on {where}.",
            hint=f"Reattach with 'labctl logs --follow {run_id}', or {or_else}.",
            exit_code=130,
        ) from None
    if followed.unreachable == {node.node for node in cluster}:
        every = "the machine" if len(cluster) == 1 else f"every node of lab '{record.name}'"
        raise LabctlError(
            f"Lost the connection to {every} while watching run {run_id}; the run goes on there.",
            hint=f"Reattach with 'labctl logs --follow {run_id}' once the network is back; nothing is lost.",
        )
    head = next((n for n in cluster if n.node == followed.rank_zero), None) or rank_zero_node(cluster, run_id)
    info = followed.infos.get(head.node) if head is not None else None
    outcome = _fetch_results(store, record, head.runs, run_id, info, ui) if head is not None and info else None
    if len(cluster) > 1 and followed.lost:
        return _lost_nodes(cluster, run_id, followed, head, outcome)
    if outcome is None:
        raise LabctlError(f"No node of run {run_id} holds its results.", hint="'labctl runs' lists the runs.")
    return outcome


def _lost_nodes(
    cluster: list[NodeRun], run_id: str, followed: Followed, head: NodeRun | None, outcome: Outcome | None
) -> Outcome:
    lost = "; ".join(f"{cluster[n].where}: {why}" for n, why in sorted(followed.lost.items()))
    results = outcome.data.get("results") if outcome is not None else None
    if results and (Path(str(results)) / "checkpoint.pt").is_file():
        where = f"it was fetched with rank 0's results to {Path(str(results)) / 'checkpoint.pt'}"
    elif head is not None and head.node not in followed.lost:
        where = f"rank 0 keeps it in {runs.RUNS_DIR / run_id}/checkpoint.pt on {head.where}"
    else:
        where = f"it is in {runs.RUNS_DIR / run_id}/checkpoint.pt on the node that held rank 0, if that node comes back"
    text = (
        f"Run {run_id} lost a node, so it stopped: {lost}.\nThe last checkpoint: {where}.\n"
        "'labctl status' shows the nodes; 'labctl up' repairs a lost node's container before the next run."
    )
    data = {**(outcome.data if outcome else {"run_id": run_id}), "lost_nodes": followed.lost, "checkpoint": where}
    data["state"] = "failed"
    shown = f"{outcome.text}\n{text}" if outcome is not None and outcome.text else text
    return Outcome(data, shown, exit_code=1)


def logs(ui: Reporter, name: str | None = None, run: str | None = None, follow: bool = False) -> Outcome:
    record = StateStore().resolve(name)
    with lab_nodes(record, ui) as lab:
        run_id = pick_run(record, lab.reached[0].runs, run)
        cluster = reach(lab, run_nodes(record, run_id))
        try:
            with _output(ui) as show:
                followed = follow_nodes(cluster, run_id, show, follow=follow)
        except KeyboardInterrupt:
            return Outcome({"run_id": run_id}, "", exit_code=130)
    states = followed.states(cluster)
    shown = ", ".join(f"node {n} {state}" for n, state in states.items()) if len(cluster) > 1 else states[0]
    lost = "".join(f"\n{cluster[n].where} is lost: {why}" for n, why in sorted(followed.lost.items()))
    data: dict[str, object] = {"run_id": run_id, "state": states[0], "nodes": states, "lost_nodes": followed.lost}
    return Outcome(data, f"[run {run_id}: {shown}]{lost}", exit_code=1 if followed.lost else 0)


def list_runs(ui: Reporter, name: str | None = None, here: bool = False) -> Outcome:
    made_here = []  # the runs made with --here (under <results_dir>/here), oldest first
    for run_dir in sorted(p for p in (results_root() / "here").glob("*") if p.is_dir()):
        metrics = read_metrics(run_dir)
        state = str(metrics.get("status") or "unknown")  # a run here is never resumed: nothing stops its machine
        row: dict[str, Any] = {"run_id": run_dir.name, "where": "here", "state": state, "shown": state}
        made_here.append({**row, "resumes": False, "accuracy": metrics.get("accuracy"), "fetched_to": str(run_dir)})
    rows: list[dict[str, Any]] = []
    try:
        record = None if here else StateStore().resolve(name)
    except NotFound:
        if name is not None or not made_here:
            raise
        record = None  # no lab at all, but runs made here: show those
    if record is not None:
        infos = head_runs(record, ui)
        fetched = {r.run_id: r.fetched_to for r in record.runs}
        rows = [{**i.facts(), "where": f"lab {record.name}", "fetched_to": fetched.get(i.run_id)} for i in infos]
    rows += made_here
    if not rows:
        return Outcome({"runs": []}, "No runs yet; start one with 'labctl run-lab' (or 'labctl run-lab --here').")
    wide = max(12, *(len(str(row["shown"])) for row in rows))
    lines = [f"{'run':<22} {'where':<16} {'state':<{wide}} {'accuracy':>8}  results here"]
    for row in rows:
        acc = f"{float(row['accuracy']) * 100:.1f}%" if row["accuracy"] is not None else "-"
        where, state = str(row["where"])[:16], str(row["shown"])
        lines.append(f"{row['run_id']:<22} {where:<16} {state:<{wide}} {acc:>8}  {row['fetched_to'] or 'no'}")
    return Outcome({"runs": rows}, "\n".join(lines))


def fetch(ui: Reporter, name: str | None = None, run: str | None = None) -> Outcome:
    store = StateStore()
    record = store.resolve(name)
    with lab_nodes(record, ui) as lab:
        run_id = pick_run(record, lab.reached[0].runs, run)
        cluster = reach(lab, run_nodes(record, run_id))
        head = rank_zero_node(cluster, run_id)
        if head is None:
            raise LabctlError(
                f"No node of lab '{record.name}' holds the results of run {run_id} (rank 0's files).",
                hint="'labctl status' shows whether every node is reachable; fetch again once they are.",
            )
        info = head.runs.info(run_id)
        if info.state == "running":
            raise LabctlError(
                f"Run {run_id} is still training" + (f" on {head.where}." if len(cluster) > 1 else "."),
                hint=f"Wait for it with 'labctl logs --follow {run_id}', then fetch.",
            )
        outcome = _fetch_results(store, record, head.runs, run_id, info, ui)
    outcome.exit_code = 0  # fetching a failed run's results is still a successful fetch
    return outcome


def _beside(script: str) -> str | None:
    """pip's lines of the requirements.txt and environment.yml beside a script of this computer's, read (and
    refused) before anything is reached."""
    local = Path(script).expanduser()
    found = [local.parent / name for name in PROJECT_FILES] if local.is_file() else []
    texts = [validate.read_requirements(f, "The script's") for f in found if f.exists() or f.is_symlink()]
    return "".join(texts) if texts else None


def joined_requirements(lab: str | None, script: str) -> str | None:
    """The lab's own lines, then the script's it lacks; None when the lab has them all."""
    have = (lab or "").splitlines()
    new = [line for line in script.splitlines() if line.strip() and line not in have]
    return "\n".join([*have, *new]) + "\n" if new else None


def _install_packages(store: StateStore, record: LabRecord, wanted: str, ui: Reporter) -> LabRecord:
    """As `up --requirements` with the lab's and the script's lines: a new container, so no run may be training."""
    with lab_lock(record.name, "install the script's packages", ui):
        record = store.load(record.name)
        training = [info.run_id for info in head_runs(record, ui) if info.state == "running"]
        if training:
            raise UsageError(
                f"Run {training[0]} is training in lab '{record.name}', and the packages in the script's "
                "requirements.txt need a new lab container, which would end it.",
                hint=f"Wait for it ('labctl logs --follow {training[0]}') or cancel it, then run the script again.",
            )
        before, record.requirements = record.requirements, wanted
        try:
            record = prepare_lab(record, ui, image=Settings().get("image"))
        except LabctlError:
            record.requirements = before
            raise
        store.save(record)
    return record


def run_script(
    ui: Reporter, script: str, args: list[str] | None = None, name: str | None = None, detach: bool = False
) -> Outcome:
    args = args or []
    store = StateStore()
    record = store.resolve(name)
    wanted = joined_requirements(record.requirements, _beside(script) or "")
    if wanted is not None:
        record = _install_packages(store, record, wanted, ui)
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
            deadline = time.monotonic() + (wait if stop_nodes(cluster, run_id) else 2.0)
            infos = [node.runs.info(run_id) for node in cluster]
            while any(info.state == "running" for info in infos) and time.monotonic() < deadline:
                time.sleep(0.5)
                infos = [node.runs.info(run_id) for node in cluster]
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
            recorded.state, recorded.shown, recorded.finished_at = "stopped", None, now_iso()
    store.save(record)
    shown = ", ".join(kept[:12]) + (f" and {len(kept) - 12} more" if len(kept) > 12 else "")
    state = infos[0].state
    text = (
        f"Run {run_id} stopped ({state}). Kept in the lab's /workspace/runs/{run_id}: {shown or 'nothing'}.\n"
        f"Bring it here with 'labctl fetch {run_id}'."
    )
    return Outcome({"run_id": run_id, "state": state, "kept": kept}, text)


def _nodes_asked(opts: RunLabOptions, record: LabRecord) -> int:
    count = len(record.nodes)
    nodes = opts.nodes or (1 if opts.notebook else count)  # 0 and less refused by RunLabOptions.check
    if nodes > count:
        have = f"{count} machine{'s' if count != 1 else ''}"
        raise UsageError(
            f"--nodes {opts.nodes} asks for more machines than lab '{record.name}' has: it has {have}.",
            hint=f"Give the lab {opts.nodes} machines with 'labctl up --name {record.name} --nodes {opts.nodes}' "
            f"(or one --host per machine), or pass --nodes {count} or fewer.",
        )
    return nodes


def run_nodes(record: LabRecord, run_id: str) -> int:
    """1 for a run this computer has no record of."""
    return next((int(r.options.get("nodes") or 1) for r in record.runs if r.run_id == run_id), 1)
