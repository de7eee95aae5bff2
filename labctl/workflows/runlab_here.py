"""`labctl run-lab --here`: train the bundled lab in this Python environment, no cloud and no container.

The training core (``cifarlab``) is imported from the installed package, or from the bundled ``lab/`` folder
when only labctl is installed; it needs the ``lab`` extra (torch, Pillow, ...). The options reach it as the same
``cifarlab`` arguments a run in the lab container gets (``runlab_options.cifarlab_args``).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from labctl.assets import lab_dir
from labctl.config import Settings
from labctl.errors import LabctlError, UsageError
from labctl.runs import new_run_id
from labctl.ui import Outcome, Reporter
from labctl.workflows.runlab_options import RunLabOptions, cifarlab_args, option_pairs, per_class_table


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


def build_config(args: list[str], core: ModuleType) -> Any:
    """The core's TrainConfig from ``cifarlab train`` arguments; every bad value becomes a UsageError."""
    try:
        cfg = core.TrainConfig().with_strings(dict(option_pairs(args)))
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
    if opts.gpus is not None:
        raise UsageError(
            "--gpus applies to runs on a lab machine: --here trains in this Python process.",
            hint="Drop --gpus; for several GPUs here, run 'torchrun --nproc-per-node N -m cifarlab train ...'.",
        )
    core = _import_core()
    out = opts.out if opts.out is not None else Path(str(Settings().get("results_dir"))) / "here" / new_run_id()
    args = cifarlab_args(opts, out=str(out), data=opts.data or "cifar10")
    if opts.notebook:
        return _run_notebook(args, core, out, ui)
    cfg = build_config(args, core)
    ui.info(f"Training the {cfg.model} model here on {cfg.data}; results in {out}")
    try:
        metrics = core.train(cfg, stream=sys.stderr)
    except core.ConfigError as exc:
        raise UsageError(str(exc), hint="See 'labctl run-lab --help' for the options.") from exc
    except core.LabError as exc:
        raise LabctlError(str(exc)) from exc
    status = metrics["status"]
    table = per_class_table(metrics)
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


def _run_notebook(args: list[str], core: ModuleType, out: Path, ui: Reporter) -> Outcome:
    """Execute the notebook with the parameters of ``cifarlab notebook`` arguments, as that command does."""
    run_notebook = importlib.import_module("cifarlab.notebook").run_notebook
    params: dict[str, str] = {}
    for key, value in option_pairs(args):
        if key == "param":
            key, _, value = value.partition("=")
        if key != "out":
            params[key] = value
    with ui.step("Executing the notebook"):
        try:
            executed = run_notebook(out, params)
        except core.LabError as exc:
            raise LabctlError(str(exc)) from exc
    return Outcome(
        {"run_dir": str(out), "notebook": str(executed), "status": "succeeded"},
        f"Executed notebook: {executed}\nResults in {out}",
    )
