"""`labctl run-lab --here`: train the bundled lab in this Python environment, no cloud and no container.

The training core (``cifarlab``) is imported from the installed package, or from the bundled ``lab/`` folder
when only labctl is installed; it needs the ``lab`` extra (torch, Pillow, ...).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from labctl import runs
from labctl.assets import lab_dir
from labctl.config import Settings
from labctl.errors import LabctlError, UsageError
from labctl.ui import Outcome, Reporter
from labctl.workflows.runlab import RunLabOptions, parse_sets


def _import_core() -> ModuleType:
    """The cifarlab that ships with this labctl (its bundled ``lab/``), else an installed one.

    The bundled copy comes first so that the options translated here always match the core they are given to.
    """
    if "cifarlab" not in sys.modules:
        with contextlib.suppress(LabctlError):
            bundled = str(lab_dir())
            if (Path(bundled) / "cifarlab" / "__init__.py").is_file() and bundled not in sys.path:
                sys.path.insert(0, bundled)
    try:
        return importlib.import_module("cifarlab")
    except ModuleNotFoundError as exc:
        raise _missing_dependency(exc) from exc


def _missing_dependency(exc: ModuleNotFoundError) -> LabctlError:
    return LabctlError(
        f"run-lab --here needs the lab's Python packages, and '{exc.name}' is not installed in this environment.",
        hint="Install them with: pip install 'labctl[lab]' (PyTorch, Pillow, matplotlib, nbclient).",
    )


def build_config(opts: RunLabOptions, core: ModuleType, out: Path) -> Any:
    """The core's TrainConfig from the command line's options; every bad value becomes a UsageError."""
    given: dict[str, str] = {"data": opts.data or "cifar10", "model": opts.model, "seed": str(opts.seed)}
    for key in ("epochs", "batch_size", "lr", "optimizer", "device"):
        value = getattr(opts, key)
        if value is not None:
            given[key] = str(value)
    given.update(parse_sets(opts.extra))
    given["out"] = str(out)
    try:
        cfg = core.TrainConfig().with_strings(given)
        cfg.resolved()  # validates every value before any data is touched
    except core.LabError as exc:
        raise UsageError(str(exc), hint="See 'labctl run-lab --help' for the options.") from exc
    return cfg


def run_here(opts: RunLabOptions, ui: Reporter) -> Outcome:
    """Train (or execute the notebook) here, then show the per-class accuracy and where the results are."""
    if opts.detach:
        raise UsageError("--detach only applies to runs on a lab machine.", hint="Drop --detach, or drop --here.")
    if opts.name:
        ui.warn(f"--name {opts.name} is ignored with --here: the run happens in this Python environment.")
    core = _import_core()
    out = opts.out if opts.out is not None else Path(str(Settings().get("results_dir"))) / "here" / runs.new_run_id()
    if opts.notebook:
        return _run_notebook(opts, core, out, ui)
    cfg = build_config(opts, core, out)
    ui.info(f"Training the {cfg.model} model here on {cfg.data}; results in {out}")
    try:
        metrics = core.train(cfg, stream=sys.stderr)
    except core.ConfigError as exc:
        raise UsageError(str(exc), hint="See 'labctl run-lab --help' for the options.") from exc
    except core.LabError as exc:
        raise LabctlError(str(exc)) from exc
    status = metrics["status"]
    table = core.per_class_table(metrics)
    text = f"{table}\n\nRun {status}; results in {out}"
    if status != "succeeded":
        text += " (the last checkpoint is kept)"
    data = {
        "run_dir": str(out),
        "status": status,
        "accuracy": metrics["accuracy"],
        "per_class_accuracy": metrics["per_class_accuracy"],
        "images_per_s": metrics["images_per_s"],
        "wall_s": metrics["wall_s"],
        "device": metrics["device"],
        "model": metrics["model"],
    }
    return Outcome(data, text, exit_code={"succeeded": 0, "interrupted": 130}.get(status, 1))


def _run_notebook(opts: RunLabOptions, core: ModuleType, out: Path, ui: Reporter) -> Outcome:
    run_notebook = importlib.import_module("cifarlab.notebook").run_notebook
    params = {"data": opts.data or "cifar10", "seed": str(opts.seed)}
    for key in ("epochs", "batch_size", "lr", "device"):
        value = getattr(opts, key)
        if value is not None:
            params[key] = str(value)
    params.update(parse_sets(opts.extra))
    if opts.model != "tutorial" or opts.optimizer:
        raise UsageError("--notebook runs the tutorial model as written.", hint="Drop --model/--optimizer.")
    with ui.step("Executing the notebook"):
        try:
            executed = run_notebook(out, params)
        except core.LabError as exc:
            raise LabctlError(str(exc)) from exc
    return Outcome(
        {"run_dir": str(out), "notebook": str(executed), "status": "succeeded"},
        f"Executed notebook: {executed}\nResults in {out}",
    )
