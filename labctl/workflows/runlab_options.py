"""run-lab's options, checked, and their one translation into the lab's arguments; the one shape of a result."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from labctl.distributed import LaunchPlan, describe, launch_argv, launch_env, plain_argv, plan_launch
from labctl.errors import UsageError
from labctl.files import lab_dir
from labctl.spec import Settings
from labctl.ui import clock, table_text

if TYPE_CHECKING:
    from cifarlab.options import Option as LabOption

TORCHRUN = ("python", "-m", "torch.distributed.run")  # torchrun, wherever its console script is not on the PATH


@dataclass(frozen=True)
class Launch:
    plan: LaunchPlan | None  # None: the notebook
    argv: list[str]
    env: dict[str, str]
    summary: str  # as the run's first line tells it


def _read_lab(module: str) -> ModuleType:
    """Read from the file: importing the cifarlab package would load torch (these two import nothing of it)."""
    spec = importlib.util.spec_from_file_location(f"cifarlab_{module}", lab_dir() / "cifarlab" / f"{module}.py")
    assert spec is not None and spec.loader is not None
    loaded = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # a dataclass looks up its module
    spec.loader.exec_module(loaded)
    return loaded


LAB_OPTIONS: dict[str, LabOption] = dict(_read_lab("options").OPTIONS)
LAB_CONFIG = _read_lab("config")  # the lab's TrainConfig checks every training value, here as in the lab
OPTIONS_HINT = "See 'labctl run-lab --help' for the options."


def results_root() -> Path:
    return Path(str(Settings().get("results_dir")))


@dataclass
class RunLabOptions:
    name: str | None = None  # the lab (default: the only one)
    here: bool = False  # in this Python environment, no container
    notebook: bool = False  # execute the notebook instead of `cifarlab train`
    notebook_file: str | None = None  # with notebook: the user's own, on this computer or in /workspace
    detach: bool = False  # start the run and return
    out: Path | None = None  # the results directory of a --here run
    data: str | None = None  # cifar10, synthetic[:N], or a path on this computer or on the machine
    gpus: int | None = None  # GPUs to train on (one process each, torchrun); None: every GPU the machine has
    nodes: int | None = None  # machines of the lab to train on together; None: every one (one for the notebook)
    training: dict[str, Any] = field(default_factory=dict)  # the LAB_OPTIONS given (epochs=2, ...)
    extra: list[str] = field(default_factory=list)  # --set KEY=VALUE: any other option the lab has
    resume: str | None = None  # a run of the lab's to go on with from its checkpoint
    no_resume: str | None = None  # a run of the lab's to leave stopped when the lab comes back

    @property
    def device(self) -> str | None:
        return self.training.get("device")

    def check(self) -> RunLabOptions:
        """Every refusal of these options, before anything connects."""
        if self.resume or self.no_resume:
            return self._check_resume()
        sets = parse_sets(self.extra)
        for key in ("out", "data", "data_root") if not self.notebook else ():
            if key in sets:
                raise UsageError(
                    f"--set {key}=...: run-lab sets {key} itself.", hint="Give --data (or --out with --here)."
                )
        values = {**self.training, **sets}
        if self.notebook:  # the notebook's other --set keys are its LAB_* parameters (workers, print_every, ...)
            fields = {f.name for f in dataclasses.fields(LAB_CONFIG.TrainConfig)}
            values = {key: value for key, value in values.items() if key in fields}
        try:
            LAB_CONFIG.TrainConfig().with_strings({key: str(value) for key, value in values.items()}).resolved()
        except LAB_CONFIG.ConfigError as exc:
            raise UsageError(str(exc), hint=OPTIONS_HINT) from None
        for flag, count, what in (("--gpus", self.gpus, "GPUs"), ("--nodes", self.nodes, "machines")):
            if count is not None and count < 1:
                raise UsageError(f"{flag} {count} is not a number of {what}.", hint="Use 1 or more, or leave it out.")
        if self.notebook and self.gpus is not None:
            raise UsageError(
                "--gpus applies to training runs: the notebook runs in one process, on one GPU.",
                hint="Leave out --notebook to train on several GPUs, or --gpus to run the notebook.",
            )
        if self.notebook and (self.training.get("model", "tutorial") != "tutorial" or self.training.get("optimizer")):
            raise UsageError(
                "--notebook runs the tutorial as written: the tutorial model with SGD.",
                hint="Drop --model/--optimizer, or leave out --notebook to train other settings.",
            )
        if (self.nodes or 1) > 1 and self.here:
            raise UsageError(
                f"--here trains on this computer only, and --nodes {self.nodes} asks for several machines.",
                hint="Drop --here to train on the lab's machines, or --nodes to train here.",
            )
        if (self.nodes or 1) > 1 and self.notebook:
            raise UsageError(
                f"--notebook runs in one Jupyter kernel, on one machine, and --nodes {self.nodes} asks for several.",
                hint="Leave out --notebook to train on several machines, or --nodes to run the notebook.",
            )
        if self.here and self.detach:
            raise UsageError("--detach only applies to runs on a lab machine.", hint="Drop --detach, or drop --here.")
        if self.here and self.gpus is not None:
            raise UsageError(
                "--gpus applies to runs on a lab machine: --here trains in this Python process.",
                hint="Drop --gpus; for several GPUs here, run 'torchrun --nproc-per-node N -m cifarlab train ...'.",
            )
        if self.out is not None and not self.here:
            raise UsageError("--out applies to --here runs.", hint="Remote results go to the results_dir setting.")
        check_data(self.data, here=self.here)
        return self

    def _check_resume(self) -> RunLabOptions:
        flag, run = ("--resume", self.resume) if self.resume else ("--no-resume", self.no_resume)
        others: dict[str, Any] = {"--no-resume": self.no_resume if self.resume else None, "--here": self.here}
        others.update({"--notebook": self.notebook, "--data": self.data, "--gpus": self.gpus, "--nodes": self.nodes})
        others.update({"--set": self.extra, **{f"--{k.replace('_', '-')}": v for k, v in self.training.items()}})
        given = [name for name, value in others.items() if value]
        if given:
            raise UsageError(
                f"{flag} {run} goes on with the run's own options, in the lab; {', '.join(given)} would change them.",
                hint=f"Give {flag} RUN alone (with --detach if you like), or start a new run without it.",
            )
        return self


DATA_KEYWORDS = ("cifar10", "synthetic")
MACHINE_PREFIX = "machine:"  # --data machine:PATH: data already on the lab's machine, not on this computer
_SET_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
DATA_HINT = (
    "Give cifar10 (downloaded on the machine), synthetic or synthetic:N (N >= 20 images), the path of "
    "train/<class>/*.jpg on this computer (a directory, .tar or .tar.gz), or machine:PATH for data already on "
    "the lab's machine."
)


def check_data(data: str | None, *, here: bool = False) -> None:
    if data is None or data in DATA_KEYWORDS:
        return
    if data.startswith("synthetic:"):
        count = data.removeprefix("synthetic:")
        if not count.isdigit() or int(count) < 20:
            raise UsageError(
                f"--data {data}: N in synthetic:N must be a number of images, 20 or more.", hint="E.g. synthetic:2000."
            )
        return
    if data.startswith(MACHINE_PREFIX) and not here and data.removeprefix(MACHINE_PREFIX).strip():
        return
    if not data.strip() or not Path(data).expanduser().exists():
        raise UsageError(f"--data '{data}' is neither a dataset keyword nor a path on this computer.", hint=DATA_HINT)


def parse_sets(items: list[str]) -> dict[str, str]:
    """Keys in the lab's spelling (max_steps, not max-steps)."""
    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _SET_KEY.match(key):
            raise UsageError(
                f"--set '{item}' is not KEY=VALUE with a KEY of letters, digits, '_' or '-'.",
                hint="For example --set max_steps=100.",
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise UsageError(f"--set {key}=... holds a control character (a newline?).", hint="Give a plain value.")
        values[key.replace("-", "_")] = value.strip()
    return values


def lab_values(opts: RunLabOptions, *, out: str, data: str, data_root: str | None = None) -> dict[str, Any]:
    """The values of ``python -m cifarlab train|notebook`` for these options, ``None`` for those left out."""
    defaults = {key: option.default for key, option in LAB_OPTIONS.items() if option.default is not None}
    given = {"out": out, "data": data, "data_root": data_root, **defaults, **opts.training, **parse_sets(opts.extra)}
    if opts.notebook:  # the tutorial's model (``check`` refused another)
        given.pop("model")
    return given


def cifarlab_args(opts: RunLabOptions, *, out: str, data: str, data_root: str | None = None) -> list[str]:
    """``train --key value ...`` or ``notebook``: the flags the table marks, the rest ``--param KEY=VALUE`` (LAB_KEY)"""
    given = lab_values(opts, out=out, data=data, data_root=data_root)
    if not opts.notebook:
        return ["train", *_flags(given)]
    own = {"out", *(key for key, option in LAB_OPTIONS.items() if option.notebook)}
    flags = {key: given.pop(key) for key in list(given) if key in own}
    return ["notebook", *_flags(flags), *_flags(given, "--param")]


def launch(
    opts: RunLabOptions,
    args: list[list[str]],
    *,
    run_id: str,
    gpus_per_node: list[int],
    addresses: list[str],
    rdzv_port: int,
    log_dir: str,
) -> list[Launch]:
    """Each node's start (``args``: its ``cifarlab_args``, node 0 first): plain python, or torchrun per GPU."""
    if opts.notebook:  # one kernel, one process (``check`` refused --gpus)
        summary = "the notebook, in one process (a Jupyter kernel) on one GPU at most"
        return [Launch(None, plain_argv(args[0]), {}, summary)]
    plans = plan_launch(
        run_id=run_id,
        gpus_per_node=gpus_per_node,
        addresses=addresses,
        gpus_requested=opts.gpus,
        rdzv_port=rdzv_port,
        cpu_only=opts.device == "cpu",
    )
    if plans[0].procs_per_node > 1 and opts.device not in (None, "auto", "cuda"):
        raise UsageError(
            f"--device {opts.device} names one device, and {plans[0].procs_per_node} processes would share it.",
            hint="Leave --device out (each process takes the GPU of its local rank), or pass --gpus 1.",
        )
    return [
        Launch(plan, launch_argv(plan, train[1:], log_dir=log_dir, torchrun=TORCHRUN), launch_env(plan), describe(plan))
        for plan, train in zip(plans, args, strict=True)  # train[0] is "train"
    ]


def _flags(values: dict[str, Any], param: str = "") -> list[str]:
    pairs = [(key, str(value)) for key, value in values.items() if value is not None]
    if param:
        return [arg for key, value in pairs for arg in (param, f"{key}={value}")]
    return [arg for key, value in pairs for arg in ("--" + key.replace("_", "-"), value)]


def read_metrics(results: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((results / "metrics.json").read_text()))
    except (OSError, ValueError):
        return {}  # a run that saved none, or a notebook of the user's own


def run_result(
    run_id: str,
    where: str,
    state: str,
    results: Path,
    metrics: dict[str, Any] | None = None,
    *,
    files_verified: int | None,
) -> dict[str, Any]:
    """One shape for a finished run, wherever it ran (``--json`` of run-lab, fetch and --here alike)."""
    metrics = read_metrics(results) if metrics is None else metrics
    facts = {key: metrics.get(key) for key in ("accuracy", "per_class_accuracy", "wall_s", "images_per_s", "device")}
    plots = {  # the lab draws SVGs; the notebook, as the tutorial does, PNGs
        name: next((p for p in (results / f"{name}.svg", results / f"{name}.png") if p.is_file()), None)
        for name in ("loss_curve", "confusion_matrix")
    }
    return {
        **{"run_id": run_id, "where": where, "state": state, "results": str(results)},
        **facts,
        "per_class_accuracy": facts["per_class_accuracy"] or {},
        "model": metrics.get("model"),
        **{name: str(plot) if plot else None for name, plot in plots.items()},
        **{"files_verified": files_verified, "verified": files_verified is not None, "metrics": metrics},
    }


def result_text(result: dict[str, Any]) -> str:
    metrics, lines = result["metrics"], []
    if result["per_class_accuracy"]:
        rows = [
            (str(name), "-" if acc is None else f"{float(acc) * 100:.1f}%")
            for name, acc in result["per_class_accuracy"].items()
        ]
        lines.append(table_text("Accuracy per class", ("class", "accuracy"), rows, right=("accuracy",)))
    if metrics.get("status") == "failed" and metrics.get("error"):
        # The lab saves its results and this error when, under torchrun, a rank or its machine is lost.
        first = str(metrics["error"]).splitlines()[0][:300]
        lines.append(f"The run stopped at step {metrics.get('steps')}: {first}\nThe checkpoint of that step was kept.")
    if result["accuracy"] is not None:
        lines.append(f"Overall accuracy: {float(result['accuracy']) * 100:.1f}%")
    if result["wall_s"] is not None:
        lines.append(f"Time: {clock(float(result['wall_s']))}")
    for key, label in (("loss_curve", "Loss curve"), ("confusion_matrix", "Confusion matrix")):
        if result[key]:
            lines.append(f"{label}: {result[key]}")
    checked = f", {result['files_verified']} files verified" if result["files_verified"] else ""
    lines.append(f"Run {result['run_id']} {result['state']}; results in {result['results']}{checked}")
    return "\n".join(lines)
