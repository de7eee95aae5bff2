"""`labctl run-lab --here`: the bundled lab in this Python environment (the ``lab`` extra), no cloud, no container."""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from labctl.errors import LabctlError, UsageError
from labctl.files import lab_dir, without_links
from labctl.runs import new_run_id
from labctl.ui import LiveOutput, Outcome, Reporter
from labctl.workflows.runlab_options import (
    OPTIONS_HINT,
    RunLabOptions,
    lab_values,
    read_metrics,
    result_text,
    results_root,
    run_result,
)


def _import_core() -> ModuleType:
    """The cifarlab that ships with this labctl (so the options always match the core), else an installed one."""
    if "cifarlab" not in sys.modules:
        with contextlib.suppress(LabctlError):
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
    out = without_links(root, opts.out or root / "here" / new_run_id())
    given = lab_values(opts, out=str(out), data=opts.data or "cifar10")
    values = {key: str(value) for key, value in given.items() if value is not None}
    if opts.notebook:
        return _run_notebook(values, core, out, opts.notebook_file, ui)
    try:
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


def _run_notebook(params: dict[str, str], core: ModuleType, out: Path, source: str | None, ui: Reporter) -> Outcome:
    """The notebook with the parameters ``cifarlab notebook`` would give it."""
    run_notebook = importlib.import_module("cifarlab.notebook").run_notebook
    params.pop("out")
    source = str(Path(source).expanduser().resolve()) if source else None
    ui.info(f"Executing {Path(source).name if source else 'the lab notebook'} here, cell by cell; results in {out}")
    try:
        with LiveOutput(ui, sys.stderr, "Starting the notebook's kernel") as live:
            executed = run_notebook(out, params, source=source, stream=live)
    except core.LabError as exc:
        raise LabctlError(str(exc)) from exc
    # The lab's notebook trains into LAB_OUT/run; a notebook of the user's own may write anything, or nothing.
    results = out / "run" if (out / "run" / "metrics.json").is_file() else out
    data = run_result(out.name, "here", "succeeded", results, files_verified=None)
    data["notebook"] = str(executed)
    return Outcome(data, f"Executed notebook: {executed}\n{result_text(data)}")


def here_runs() -> list[dict[str, Any]]:
    """The runs made with --here (under <results_dir>/here), oldest first, in the rows `labctl runs` shows."""
    rows = []
    for run_dir in sorted(p for p in (results_root() / "here").glob("*") if p.is_dir()):
        metrics = read_metrics(run_dir)
        row = {"run_id": run_dir.name, "where": "here", "state": str(metrics.get("status") or "unknown")}
        rows.append({**row, "accuracy": metrics.get("accuracy"), "fetched_to": str(run_dir)})
    return rows
