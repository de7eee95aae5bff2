"""What `labctl run-lab` is asked for, said once: the options, their one translation into the lab's own command
line (``python -m cifarlab train|notebook ...``), and the one table that shows a run's result.

The run in the lab container, ``--notebook`` (whose arguments become the notebook's ``LAB_*`` parameters) and
``--here`` (which reads its training options back from the same arguments) all start from ``cifarlab_args``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labctl.distributed import LaunchPlan, describe, launch_argv, launch_env, plain_argv, plan_cluster, plan_launch
from labctl.errors import UsageError

TORCHRUN = ("python", "-m", "torch.distributed.run")  # torchrun, wherever its console script is not on the PATH


@dataclass(frozen=True)
class Launch:
    """The argv a run starts with in the lab container, its environment, and the plan (None for the notebook)."""

    plan: LaunchPlan | None
    argv: list[str]
    env: dict[str, str]

    @property
    def summary(self) -> str:
        """What runs where, for the user."""
        if self.plan is None:
            return "the notebook, in one process (a Jupyter kernel) on one GPU at most"
        return describe(self.plan)


@dataclass
class RunLabOptions:
    """What `labctl run-lab` was asked for; a training knob left at None is what the lab's recipe says."""

    # Where and how the run happens.
    name: str | None = None  # the lab (default: the only one)
    here: bool = False  # in this Python environment, no container
    notebook: bool = False  # execute the notebook instead of `cifarlab train`
    notebook_file: str | None = None  # with notebook: the user's own, on this computer or in /workspace
    detach: bool = False  # start the run and return
    out: Path | None = None  # the results directory of a --here run
    # What it trains; each becomes a flag of `python -m cifarlab` in cifarlab_args.
    model: str = "tutorial"  # tutorial (the notebook's CNN) or fast
    data: str | None = None  # cifar10, synthetic[:N], or a path on this computer or on the machine
    seed: int = 0
    epochs: float | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None  # sgd or adamw; the notebook uses SGD as written
    device: str | None = None  # auto, cuda, mps or cpu
    holdout: float | None = None  # fraction of train/ held out for evaluation when there is no test/
    gpus: int | None = None  # GPUs to train on (one process each, torchrun); None: every GPU the machine has
    nodes: int | None = None  # machines of the lab to train on together; None: every one (one for the notebook)
    extra: list[str] = field(default_factory=list)  # --set KEY=VALUE: any other option the lab has

    def check(self) -> RunLabOptions:
        """Every option checked here, before anything connects, uploads or trains; a UsageError names the bad one."""
        for flag, number in (("--epochs", self.epochs), ("--lr", self.lr)):
            if number is not None and not (math.isfinite(number) and number > 0):
                raise UsageError(f"{flag} {number:g} is not a positive number.", hint=f"For example {flag} 2.")
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError(f"--batch-size {self.batch_size} is not a positive whole number.", hint="E.g. 64.")
        if not 0 <= self.seed < 2**32:
            raise UsageError(f"--seed {self.seed} is out of range.", hint="Use a whole number from 0 to 4294967295.")
        for flag, choice, allowed in (
            ("--model", self.model, MODELS),
            ("--optimizer", self.optimizer, OPTIMIZERS),
            ("--device", self.device, DEVICES),
        ):
            if choice is not None and choice not in allowed:
                raise UsageError(f"{flag} '{choice}' is not one of {', '.join(allowed)}.", hint="Pick one of them.")
        if self.gpus is not None and self.gpus < 1:
            raise UsageError(f"--gpus {self.gpus} is not a number of GPUs.", hint="Use 1 or more, or leave it out.")
        if self.notebook and self.gpus is not None:
            raise UsageError(
                "--gpus applies to training runs: the notebook runs in one process, on one GPU.",
                hint="Leave out --notebook to train on several GPUs, or --gpus to run the notebook.",
            )
        if self.notebook and (self.model != "tutorial" or self.optimizer is not None):
            raise UsageError(
                "--notebook runs the tutorial as written: the tutorial model with SGD.",
                hint="Drop --model/--optimizer, or leave out --notebook to train other settings.",
            )
        self._check_nodes()
        check_data(self.data, here=self.here)
        parse_sets(self.extra)
        return self

    def _check_nodes(self) -> None:
        if self.nodes is None:
            return
        if self.nodes < 1:
            raise UsageError(f"--nodes {self.nodes} is not a number of machines.", hint="Use 1 or more.")
        if self.nodes > 1 and self.here:
            raise UsageError(
                f"--here trains on this computer only, and --nodes {self.nodes} asks for several machines.",
                hint="Drop --here to train on the lab's machines, or --nodes to train here.",
            )
        if self.nodes > 1 and self.notebook:
            raise UsageError(
                f"--notebook runs in one Jupyter kernel, on one machine, and --nodes {self.nodes} asks for several.",
                hint="Leave out --notebook to train on several machines, or --nodes to run the notebook.",
            )


MODELS = ("tutorial", "fast")
OPTIMIZERS = ("sgd", "adamw")
DEVICES = ("auto", "cuda", "mps", "cpu")
DATA_KEYWORDS = ("cifar10", "synthetic")
MACHINE_PREFIX = "machine:"  # --data machine:PATH: data already on the lab's machine, not on this computer
_SET_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
DATA_HINT = (
    "Give cifar10 (downloaded on the machine), synthetic or synthetic:N (N >= 20 images), the path of "
    "train/<class>/*.jpg on this computer (a directory, .tar or .tar.gz), or machine:PATH for data already on "
    "the lab's machine."
)


def check_data(data: str | None, *, here: bool = False) -> None:
    """``--data``: a keyword, synthetic:N, a path that exists here, or (for a lab) machine:PATH."""
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
    """``--set KEY=VALUE`` options as a dict with keys in the lab's spelling (max_steps, not max-steps)."""
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


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def cifarlab_args(opts: RunLabOptions, *, out: str, data: str, data_root: str | None = None) -> list[str]:
    """The arguments of ``python -m cifarlab`` for these options: ``train ...``, or ``notebook ...``.

    The notebook walks through the tutorial model with SGD; its other knobs are the notebook's parameters
    (``--param KEY=VALUE`` becomes ``LAB_KEY``).
    """
    sets = parse_sets(opts.extra)
    if not opts.notebook:
        args = ["train", "--out", out, "--data", data]
        args += ["--data-root", data_root] if data_root else []
        args += ["--model", opts.model, "--seed", str(opts.seed)]
        given = {"epochs": opts.epochs, "batch_size": opts.batch_size, "lr": opts.lr, "optimizer": opts.optimizer}
        return args + _flags({**given, "device": opts.device, "holdout": opts.holdout}) + _flags(sets)
    if opts.model != "tutorial" or opts.optimizer is not None:
        raise UsageError(
            "--notebook runs the tutorial as written: the tutorial model with SGD.",
            hint="Drop --model/--optimizer, or leave out --notebook to train other settings.",
        )
    args = ["notebook", "--out", out, "--data", data, "--seed", str(opts.seed)]
    own = {"epochs": opts.epochs, "batch_size": opts.batch_size, "device": opts.device}
    own["max_steps"] = sets.pop("max_steps", None)  # the notebook command's own flags; the rest are parameters
    params = {"data_root": data_root, "lr": opts.lr, "holdout": opts.holdout, **sets}
    return args + _flags(own) + [arg for k, v in params.items() if v is not None for arg in ("--param", f"{k}={v}")]


def launch(opts: RunLabOptions, args: list[str], *, run_id: str, gpus_available: int, log_dir: str) -> Launch:
    """How the run starts in the lab container: ``python -m cifarlab ARGS``, or torchrun with one process per GPU.

    A machine with more than one GPU trains on all of them unless ``--gpus`` says fewer; a CPU machine, the
    notebook (one kernel, one process) and ``--device cpu`` run one process.
    """
    if opts.notebook:
        if opts.gpus is not None:
            raise UsageError(
                "--gpus applies to training runs: the notebook runs in one process, on one GPU.",
                hint="Leave out --notebook to train on several GPUs, or --gpus to run the notebook.",
            )
        return Launch(None, plain_argv(args), {})
    plan = plan_launch(
        run_id=run_id, gpus_available=gpus_available, gpus_requested=opts.gpus, cpu_only=opts.device == "cpu"
    )
    _check_device(opts, plan)
    argv = launch_argv(plan, args[1:], log_dir=log_dir, torchrun=TORCHRUN)  # args[0] is "train"
    return Launch(plan, argv, launch_env(plan))


def launch_nodes(
    opts: RunLabOptions,
    args: list[list[str]],
    *,
    run_id: str,
    gpus_per_node: list[int],
    addresses: list[str],
    rdzv_port: int,
    log_dir: str,
) -> list[Launch]:
    """How the run starts on each of several nodes (``args``: each node's ``cifarlab_args``, node 0 first):
    torchrun on every node, meeting at node 0's address, each node with as many GPUs as the smallest has."""
    plans = plan_cluster(
        run_id=run_id,
        gpus_per_node=gpus_per_node,
        addresses=addresses,
        gpus_requested=opts.gpus,
        rdzv_port=rdzv_port,
        cpu_only=opts.device == "cpu",
    )
    launches = []
    for plan, node_args in zip(plans, args, strict=True):
        _check_device(opts, plan)
        argv = launch_argv(plan, node_args[1:], log_dir=log_dir, torchrun=TORCHRUN)  # node_args[0] is "train"
        launches.append(Launch(plan, argv, launch_env(plan)))
    return launches


def _check_device(opts: RunLabOptions, plan: LaunchPlan) -> None:
    """One device named for several processes on one machine cannot be shared out."""
    if plan.procs_per_node > 1 and opts.device not in (None, "auto", "cuda"):
        raise UsageError(
            f"--device {opts.device} names one device, and {plan.procs_per_node} processes would share it.",
            hint="Leave --device out (each process takes the GPU of its local rank), or pass --gpus 1.",
        )


def _flags(values: dict[str, Any]) -> list[str]:
    return [arg for key, value in values.items() if value is not None for arg in (_flag(key), str(value))]


def option_pairs(args: list[str]) -> list[tuple[str, str]]:
    """``--flag value`` pairs of a ``cifarlab_args`` list after its command, keys in the lab's spelling."""
    flags, values = args[1::2], args[2::2]
    return [(flag.removeprefix("--").replace("-", "_"), value) for flag, value in zip(flags, values, strict=True)]


def per_class_table(metrics: dict[str, Any]) -> str:
    """The per-class accuracy table people expect at the end of the tutorial, and the overall accuracy."""
    per_class = metrics.get("per_class_accuracy") or {}
    lines = []
    if per_class:
        width = max(len(str(name)) for name in per_class)
        lines.append(f"{'class':<{width}}  accuracy")
        for name, acc in per_class.items():
            shown = f"{float(acc) * 100:6.1f}%" if acc is not None else f"{'-':>7}"
            lines.append(f"{name!s:<{width}}  {shown}")
    if metrics.get("accuracy") is not None:
        lines.append(f"overall accuracy: {float(metrics['accuracy']) * 100:.1f}%")
    return "\n".join(lines)


def per_class_rich(metrics: dict[str, Any]) -> str:
    """The per-class table as a rich table (plain text, box-drawn), for the end of a run."""
    import io

    from rich.console import Console
    from rich.table import Table

    per_class = metrics.get("per_class_accuracy") or {}
    if not per_class:
        return ""
    table = Table(title="Accuracy per class", title_justify="left")
    table.add_column("class")
    table.add_column("accuracy", justify="right")
    for name, acc in per_class.items():
        table.add_row(str(name), f"{float(acc) * 100:.1f}%" if acc is not None else "-")
    buffer = io.StringIO()
    Console(file=buffer, width=60, color_system=None, force_terminal=False, highlight=False).print(table)
    return buffer.getvalue().rstrip()


def run_result(
    run_id: str, where: str, state: str, results: Path, metrics: dict[str, Any], *, files_verified: int | None
) -> dict[str, Any]:
    """One shape for a finished run, wherever it ran (``--json`` of run-lab, fetch and --here alike)."""
    plots = {name: results / f"{name}.png" for name in ("loss_curve", "confusion_matrix")}
    return {
        "run_id": run_id,
        "where": where,
        "state": state,
        "results": str(results),
        "accuracy": metrics.get("accuracy"),
        "per_class_accuracy": metrics.get("per_class_accuracy") or {},
        "wall_s": metrics.get("wall_s"),
        "images_per_s": metrics.get("images_per_s"),
        "device": metrics.get("device"),
        "model": metrics.get("model"),
        "loss_curve": str(plots["loss_curve"]) if plots["loss_curve"].is_file() else None,
        "confusion_matrix": str(plots["confusion_matrix"]) if plots["confusion_matrix"].is_file() else None,
        "files_verified": files_verified,
        "verified": files_verified is not None,
        "metrics": metrics,
    }


def _duration(seconds: float) -> str:
    whole = int(seconds)
    if whole >= 3600:
        return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
    return f"{whole // 60}:{whole % 60:02d}"


def result_text(result: dict[str, Any]) -> str:
    """What a person reads at the end of a run: the table, the accuracy, the time, where the plots are."""
    lines = [per_class_rich(result["metrics"]), failure_note(result["metrics"]) or ""]
    if result["accuracy"] is not None:
        lines.append(f"Overall accuracy: {float(result['accuracy']) * 100:.1f}%")
    if result["wall_s"] is not None:
        lines.append(f"Time: {_duration(float(result['wall_s']))}")
    for key, label in (("loss_curve", "Loss curve"), ("confusion_matrix", "Confusion matrix")):
        if result[key]:
            lines.append(f"{label}: {result[key]}")
    checked = f", {result['files_verified']} files verified" if result["files_verified"] else ""
    lines.append(f"Run {result['run_id']} {result['state']}; results in {result['results']}{checked}")
    return "\n".join(line for line in lines if line)


def failure_note(metrics: dict[str, Any]) -> str | None:
    """What stopped a failed run that still saved its results (the lab writes ``error`` when, under torchrun,
    a rank or its machine is lost: rank 0 keeps the checkpoint of the last step)."""
    error = metrics.get("error")
    if metrics.get("status") != "failed" or not error:
        return None
    first = str(error).splitlines()[0][:300]
    return f"The run stopped at step {metrics.get('steps')}: {first}\nThe checkpoint of that step was kept."
