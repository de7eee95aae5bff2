"""Training, evaluation and the run directory. One flat loop, the same for the notebook, the CLI and torchrun.

A run directory (``--out``) receives:

- ``events.jsonl``: one JSON object per line, flushed as it is written, for anyone following the run:
    ``{"event": "start", "time", "run_dir", "options", "device", "world_size"}``
    ``{"event": "data", "source", "n_train", "n_test", "classes", "load_s", "decoding", "note"}``
  (``decoding``: "background" when training starts while the images still decode, in the order it reads them)
    ``{"event": "model", "name", "parameters", "steps_total", "steps_per_epoch", "batch_size"}``
    ``{"event": "progress", "epoch", "step", "steps_total", "loss", "lr", "images_per_s", "eta_s", "elapsed_s"}``
    ``{"event": "epoch", "epoch", "step", "loss", "accuracy", "elapsed_s"}``  (``epoch`` may be fractional)
    ``{"event": "done", "status": "succeeded"|"failed"|"interrupted", "accuracy", "wall_s", "error"}``
  ``time`` is Unix seconds; ``loss`` the mean training loss since the previous event; ``accuracy`` in [0, 1]
  (null when no evaluation ran). ``done`` is always the last line, also after a failure or an interruption.
- ``metrics.json``: the summary (status, accuracy, per-class accuracy, confusion matrix, loss per step, images/s,
  device, versions, wall time, options, evaluation history).
- ``checkpoint.pt``: the model and what is needed to rebuild it (`load_checkpoint`), saved at every epoch end
  and when the run stops, so an interrupted run keeps its last state.
- ``loss_curve.png`` and ``confusion_matrix.png`` when matplotlib is installed.

Under ``torchrun`` each rank trains on its shard with DistributedDataParallel and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import torch
from torch import nn
from torch.nn import functional as F

from cifarlab.data import Data, LabError, load_data
from cifarlab.models import FastNet, build_model, count_parameters


class ConfigError(LabError):
    """An option value the training core cannot use."""


# ------------------------------------------------------------------------------------------------ options

# Recipes fill in every option left unset (None). "classic" is the tutorial as published. "fast" uses the hardware:
# large batches from memory, a one-cycle schedule, flip test-time augmentation; for the tutorial network it beats
# the classic accuracy in 1.3 epochs; for the fast network it adds augmentation and label smoothing.
_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "momentum",
    "nesterov",
    "weight_decay",
    "schedule",
    "warmup",
    "label_smoothing",
    "augment",
    "tta",
    "channels_last",
)
# fmt: off
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "classic": {
        "tutorial": dict(zip(_KEYS, (2.0, 4, 0.001, "sgd", 0.9, False, 0.0, "constant", 0.0, 0.0, False, False, False), strict=True)),  # noqa: E501
    },
    "fast": {
        "tutorial": dict(zip(_KEYS, (1.3, 64, 0.05, "sgd", 0.9, True, 5e-4, "onecycle", 0.15, 0.0, False, True, False), strict=True)),  # noqa: E501
        "fast": dict(zip(_KEYS, (10.0, 256, 0.8, "sgd", 0.9, True, 5e-4, "onecycle", 0.2, 0.2, True, True, True), strict=True)),  # noqa: E501
    },
}
# fmt: on
RECIPES["classic"]["fast"] = RECIPES["fast"]["fast"]  # the fast network has no "classic" way to train
RECIPES["fast"]["default"] = RECIPES["fast"]["fast"]


@dataclass
class TrainConfig:
    """Every training option. None means "what the recipe says" (see RECIPES)."""

    data: str = "cifar10"
    data_root: str | None = None
    holdout: float | None = None
    cache: bool = True
    model: str = "tutorial"
    width: float | None = None
    lean: bool | None = None
    recipe: str | None = None
    epochs: float | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    momentum: float | None = None
    nesterov: bool | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    warmup: float | None = None
    label_smoothing: float | None = None
    augment: bool | None = None
    crop_pad: int = 2
    tta: bool | None = None
    channels_last: bool | None = None
    amp: str = "auto"
    compile: bool = False
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    max_steps: int | None = None
    eval_each_epoch: bool = True
    eval_every: float = 1.0
    eval_batch_size: int = 250  # 1000 ran 1.7x slower on a CPU: its activations no longer fit the caches
    log_every: float = 10.0
    out: str | None = None

    def resolved(self) -> TrainConfig:
        """A copy with the recipe applied and every value checked."""
        recipe = self.recipe or ("classic" if self.model == "tutorial" else "fast")
        if recipe not in RECIPES:
            raise ConfigError(f"unknown recipe {recipe!r}; choose classic or fast.")
        table = RECIPES[recipe]
        if self.model not in ("tutorial", "fast"):
            raise ConfigError(f"unknown model {self.model!r}; choose tutorial or fast.")
        defaults = table.get(self.model, table.get("default", {}))
        cfg = dataclasses.replace(self, recipe=recipe)
        for key, value in defaults.items():
            if getattr(cfg, key) is None:
                setattr(cfg, key, value)
        cfg.check()
        return cfg

    def check(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(what)

        need(self.epochs is not None and self.epochs > 0, f"--epochs must be positive, got {self.epochs}.")
        need(self.batch_size is not None and self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}.")
        need(self.lr is not None and self.lr > 0, f"--lr must be positive, got {self.lr}.")
        need(self.optimizer in ("sgd", "adamw"), f"--optimizer must be sgd or adamw, got {self.optimizer!r}.")
        need(
            self.schedule in ("constant", "onecycle"),
            f"--schedule must be constant or onecycle, got {self.schedule!r}.",
        )
        need(self.amp in ("auto", "bf16", "fp16", "off"), f"--amp must be auto, bf16, fp16 or off, got {self.amp!r}.")
        need(self.width is None or self.width > 0, f"--width must be positive, got {self.width}.")
        need(self.max_steps is None or self.max_steps >= 1, f"--max-steps must be >= 1, got {self.max_steps}.")
        need(self.eval_batch_size >= 1, "--eval-batch-size must be >= 1.")
        need(0 <= self.crop_pad <= 16, f"--crop-pad must be between 0 and 16 pixels, got {self.crop_pad}.")
        need(self.eval_every > 0, f"--eval-every is in epochs and must be positive, got {self.eval_every}.")
        need(self.threads is None or self.threads >= 1, "--threads must be >= 1.")
        need(0 <= (self.warmup or 0) < 1, f"--warmup is a fraction of the run in [0, 1), got {self.warmup}.")
        need(0 <= (self.label_smoothing or 0) < 1, "--label-smoothing must be in [0, 1).")

    @classmethod
    def from_strings(cls, values: dict[str, str]) -> TrainConfig:
        """Build from KEY=VALUE text (``--set``), converting each value by the field's type."""
        cfg = cls()
        return cfg.with_strings(values)

    def with_strings(self, values: dict[str, str]) -> TrainConfig:
        types = {f.name: str(f.type) for f in dataclasses.fields(self)}
        cfg = dataclasses.replace(self)
        for raw_key, text in values.items():
            key = raw_key.replace("-", "_")
            if key not in types:
                raise ConfigError(f"unknown training option {raw_key!r}; known: {', '.join(sorted(types))}.")
            setattr(cfg, key, parse_value(types[key], text, raw_key))
        return cfg


def parse_value(type_text: str, text: str, key: str) -> Any:
    """Convert one option value from text according to its annotation (``int | None`` and the like)."""
    if "None" in type_text and text.strip().lower() in ("none", "null", ""):
        return None
    try:
        if type_text.startswith("bool"):
            lowered = text.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(text)
            return lowered in ("1", "true", "yes", "on")
        if type_text.startswith("int"):
            return int(text)
        if type_text.startswith("float"):
            return float(text)
    except ValueError as exc:
        raise ConfigError(f"option {key}: {text!r} is not a valid {type_text.split(' ')[0]}.") from exc
    return text


# ------------------------------------------------------------------------------------------------ devices


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """CUDA, then Apple MPS, then CPU; a forced device that is absent is a clear error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r} is not a device name; use auto, cuda, cuda:N, mps or cpu.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but this PyTorch sees no CUDA GPU; use --device auto or cpu.")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("--device mps was asked for but Apple's MPS is not available here; use auto or cpu.")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU has it, fp16 on older GPUs, nothing on CPU/MPS (slower there, not faster)."""
    if device.type != "cuda" or cfg.amp == "off":
        return None
    if cfg.amp == "fp16":
        return torch.float16
    if cfg.amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


# ------------------------------------------------------------------------------------------------ augmentation


def augment(x: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip for a whole uint8 batch, on its own device."""
    n, _, h, w = x.shape
    dev = x.device
    flip = torch.rand(n, device=dev, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if pad <= 0:
        return x
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), device=dev, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=dev, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, :, None]
    cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, :]
    out = padded[torch.arange(n, device=dev)[:, None, None], :, rows, cols]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    device: torch.device,
    *,
    batch_size: int = 1000,
    tta: bool = False,
    channels_last: bool = False,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Logits for uint8 images in large batches; with ``tta`` the mirrored image's logits are added."""
    was_training = model.training
    model.eval()
    outs = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size].to(device, non_blocking=True)
        views = [x, x.flip(3)] if tta else [x]
        if channels_last:  # each view: a flip does not keep the memory format
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        with _autocast(device, dtype):
            logits = model(views[0]).float()
            if tta:
                logits = logits + model(views[1]).float()
        outs.append(logits.cpu())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.zeros(0)


def score(preds: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Overall and per-class accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    k = len(classes)
    confusion = torch.bincount(labels * k + preds, minlength=k * k).view(k, k)
    per_class_total = confusion.sum(1)
    per_class = {
        c: (float(confusion[i, i]) / float(per_class_total[i]) if per_class_total[i] else None)
        for i, c in enumerate(classes)
    }
    total = int(labels.numel())
    return {
        "accuracy": float((preds == labels).sum()) / total if total else None,
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
        "n_test": total,
    }


# ------------------------------------------------------------------------------------------------ checkpoints


def save_checkpoint(
    path: Path, model: nn.Module, cfg: TrainConfig, classes: list[str], step: int, epoch: float
) -> None:
    """Atomically, so a run killed mid-write still leaves the previous checkpoint intact."""
    state = {
        "format": "cifarlab/1",
        "model": cfg.model,
        "model_kwargs": model_kwargs(cfg),
        "classes": classes,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "step": step,
        "epoch": epoch,
        "config": dataclasses.asdict(cfg),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    if cfg.model != "fast":
        return {}
    return {"width": 1.0 if cfg.width is None else cfg.width, "lean": bool(cfg.lean)}


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The model (in eval mode, on ``device``) and the checkpoint's metadata."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise LabError(f"no checkpoint at {path}; pass a run directory or its checkpoint.pt.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(ckpt, dict) or ckpt.get("format") != "cifarlab/1":
            raise ValueError("not a cifarlab checkpoint")
        model = build_model(ckpt["model"], num_classes=len(ckpt["classes"]), **ckpt["model_kwargs"])
        model.load_state_dict(ckpt["state_dict"])
    except Exception as exc:
        raise LabError(f"{path} is not a readable cifarlab checkpoint ({exc}).") from exc
    model.to(device).eval()
    return model, ckpt


# ------------------------------------------------------------------------------------------------ run plumbing


class Events:
    """Append-only JSON lines, flushed per line so that a follower sees each event as it happens."""

    def __init__(self, path: Path | None) -> None:
        self.fh = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 - held for the whole run

    def emit(self, event: str, **fields: Any) -> None:
        if self.fh:
            self.fh.write(json.dumps({"event": event, "time": round(time.time(), 3), **fields}) + "\n")
            self.fh.flush()

    def close(self) -> None:
        if self.fh:
            self.fh.close()


class StopFlag:
    """Turns Ctrl-C and SIGTERM into "finish this step, save, report interrupted"; a second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __bool__(self) -> bool:
        return self.reason is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopFlag]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


class Progress:
    """A live bar on a terminal; plain lines every ``log_every`` seconds otherwise (detached runs log to files)."""

    def __init__(self, stream: TextIO | None, log_every: float) -> None:
        self.stream = stream
        self.tty = bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())
        self.interval = 0.2 if self.tty else log_every
        self.last = 0.0

    def due(self, now: float) -> bool:
        return self.stream is not None and now - self.last >= self.interval

    def show(self, now: float, p: dict[str, Any], final: bool = False) -> None:
        if self.stream is None:
            return
        self.last = now
        frac = p["step"] / max(1, p["steps_total"])
        text = (
            f"epoch {p['epoch']:.2f} step {p['step']}/{p['steps_total']} loss {p['loss']:.4f} "
            f"{p['images_per_s']:.0f} img/s eta {_duration(p['eta_s'])}"
        )
        if self.tty:
            bar = "#" * int(frac * 24)
            self.stream.write(f"\r[{bar:<24}] {frac:4.0%} {text}\x1b[K" + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def line(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(("\r\x1b[K" if self.tty else "") + text + "\n")
            self.stream.flush()


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class Dist:
    """The torchrun environment (WORLD_SIZE/RANK/LOCAL_RANK); world 1 means a plain single process."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Dist:
        return cls(
            int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("RANK", "0")),
            int(os.environ.get("LOCAL_RANK", "0")),
        )

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def default_out_dir() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def _grad_scaler() -> Any:
    """fp16 needs loss scaling; torch.amp.GradScaler arrived in 2.3, torch.cuda.amp's is the older spelling."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()


def _lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    """Linear warm-up then linear decay to zero (one-cycle), or constant."""
    if cfg.schedule == "constant":
        return 1.0
    warm = int((cfg.warmup or 0.0) * total)
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(1, total - warm))


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Weight decay on weights only: decaying BN scales and biases hurts small fast runs."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    other = [p for p in params if p.ndim < 2]
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": other, "weight_decay": 0.0},
    ]
    assert cfg.lr is not None
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum or 0.0, nesterov=bool(cfg.nesterov))


def _plots(out: Path, losses: list[float], scores: dict[str, Any] | None, classes: list[str]) -> str | None:
    """loss_curve.png and confusion_matrix.png; a note instead when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: loss_curve.png and confusion_matrix.png were skipped"
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(losses, lw=0.5, alpha=0.4, label="per step")
    if len(losses) >= 10:
        k = max(1, len(losses) // 50)
        smooth = [sum(losses[max(0, i - k) : i + 1]) / len(losses[max(0, i - k) : i + 1]) for i in range(len(losses))]
        ax.plot(smooth, lw=1.5, label=f"mean of {k + 1}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_curve.png", dpi=110)
    plt.close(fig)
    if scores is not None:
        cm = torch.tensor(scores["confusion_matrix"], dtype=torch.float)
        fig, ax = plt.subplots(figsize=(6.5, 5.5))
        im = ax.imshow((cm / cm.sum(1, keepdim=True).clamp(min=1)).numpy(), cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        fig.savefig(out / "confusion_matrix.png", dpi=110)
        plt.close(fig)
    return None


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ training


def train(config: TrainConfig, stream: TextIO | None = None, data: Data | None = None) -> dict[str, Any]:
    """Train, evaluate and write the run directory; returns the metrics (also in ``metrics.json``).

    ``status`` is "succeeded" or "interrupted"; a failure writes ``done``/``failed`` and raises.
    ``data`` lets a caller (the notebook) reuse an already loaded dataset.
    """
    t0 = time.time()
    dist = Dist.from_env()
    cfg = config.resolved()
    out = Path(cfg.out) if cfg.out else default_out_dir()
    cfg.out = str(out)
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
    events = Events(out / "events.jsonl" if dist.main else None)
    progress = Progress(stream if dist.main else None, cfg.log_every)
    device = pick_device(cfg.device, dist.local_rank)
    events.emit(
        "start", run_dir=str(out.resolve()), options=dataclasses.asdict(cfg), device=str(device), world_size=dist.world
    )
    try:
        with StopFlag().installed() as stop:
            result = _train(cfg, dist, device, out, events, progress, stop, data, t0)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        events.emit(
            "done",
            status=status,
            accuracy=None,
            wall_s=round(time.time() - t0, 3),
            error=f"{type(exc).__name__}: {exc}",
        )
        events.close()
        raise
    events.close()
    return result


def _train(
    cfg: TrainConfig,
    dist: Dist,
    device: torch.device,
    out: Path,
    events: Events,
    progress: Progress,
    stop: StopFlag,
    data: Data | None,
    t0: float,
) -> dict[str, Any]:
    assert cfg.batch_size is not None and cfg.epochs is not None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif device.type == "cpu" and cfg.batch_size < 64:
        # Tiny batches leave nothing to split between threads; extra threads only spin and contend.
        torch.set_num_threads(1)
    if dist.world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # --- data: rank 0 first, so that the others find its cache
    t_load = time.time()
    if data is None:
        for turn in (True, False):
            if dist.main == turn:
                data = load_data(
                    cfg.data,
                    data_root=cfg.data_root,
                    holdout=cfg.holdout,
                    seed=cfg.seed,
                    cache=cfg.cache,
                    background_cache=dist.world == 1,  # other ranks wait for rank 0's cache file
                    # one CPU process: train on the first decoded images while the rest decode
                    stream=dist.world == 1 and device.type == "cpu",
                )
            dist.barrier()
    assert data is not None and data.test is not None
    test = data.test
    load_s = time.time() - t_load
    # the first epoch's order is drawn now so that images still being decoded arrive in that order
    perm_gen = torch.Generator().manual_seed(cfg.seed)
    first_perm = torch.randperm(len(data.train), generator=perm_gen)
    decoding = data.decoding
    threads_once_decoded = None
    if decoding is not None:
        decoding.start(first_perm)
        if decoding.process and cfg.threads and cfg.threads > 1:
            # the decoding process has a core to itself meanwhile: one thread fewer, until it is done
            threads_once_decoded = cfg.threads
            torch.set_num_threads(cfg.threads - 1)
    events.emit(
        "data",
        source=data.source,
        n_train=len(data.train),
        n_test=len(data.test),
        classes=data.classes,
        load_s=round(load_s, 3),
        decoding="background" if decoding is not None else "done",
        note=data.note,
    )
    if data.note:
        progress.line(f"note: {data.note}")

    # --- model
    torch.manual_seed(cfg.seed)
    if cfg.model == "fast":  # sized for the hardware unless asked otherwise
        on_gpu = device.type == "cuda"
        cfg.width = cfg.width if cfg.width is not None else (1.0 if on_gpu else 0.25)
        cfg.lean = cfg.lean if cfg.lean is not None else not on_gpu
    raw_model = build_model(cfg.model, num_classes=len(data.classes), **model_kwargs(cfg)).to(device)
    if isinstance(raw_model, FastNet):
        if decoding is not None:
            decoding.wait("train")
        raw_model.init_whitening(data.train.images[:5000])
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    raw_model = raw_model.to(memory_format=memory_format)
    model: nn.Module = raw_model
    if dist.world > 1:
        model = nn.parallel.DistributedDataParallel(
            raw_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    optimizer = _optimizer(cfg, raw_model)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    dtype = amp_dtype(cfg, device)
    scaler = _grad_scaler() if dtype == torch.float16 else None
    torch.manual_seed(cfg.seed + 1000 * dist.rank)  # different augmentations per rank, same weights everywhere

    # --- batches: each rank reads its own shard of every epoch's permutation
    images = data.train.images.to(device)
    labels = data.train.labels.to(device)
    per_rank = len(data.train) // dist.world
    local_batch = max(1, cfg.batch_size // dist.world)
    drop_last = cfg.recipe == "fast"
    steps_per_epoch = per_rank // local_batch if drop_last else math.ceil(per_rank / local_batch)
    if steps_per_epoch < 1:
        raise ConfigError(f"--batch-size {cfg.batch_size} is larger than the {len(data.train)} training images.")
    steps_total = max(1, round(cfg.epochs * steps_per_epoch))
    if cfg.max_steps:
        steps_total = min(steps_total, cfg.max_steps)
    n_params = count_parameters(raw_model)
    events.emit(
        "model",
        name=cfg.model,
        parameters=n_params,
        steps_total=steps_total,
        steps_per_epoch=steps_per_epoch,
        batch_size=cfg.batch_size,
    )
    progress.line(
        f"training {cfg.model} ({n_params:,} parameters, recipe {cfg.recipe}) on {device} for {steps_total} steps "
        f"of {cfg.batch_size} images; {len(data.train)} train / {len(data.test)} test images"
    )
    # evaluation points within an epoch, evenly spaced, the last one at the epoch's end
    per_epoch = max(1, math.ceil(1 / cfg.eval_every)) if cfg.eval_every < 1 else 1
    every_epochs = max(1, round(cfg.eval_every)) if cfg.eval_every >= 1 else 1
    eval_points = {round(k * steps_per_epoch / per_epoch) % steps_per_epoch for k in range(1, per_epoch + 1)}

    def evaluate() -> dict[str, Any]:
        if decoding is not None:
            decoding.wait("test")
            if threads_once_decoded:
                torch.set_num_threads(threads_once_decoded)
        logits = predict_logits(
            raw_model,
            test.images,
            device,
            batch_size=cfg.eval_batch_size,
            tta=bool(cfg.tta),
            channels_last=bool(cfg.channels_last),
            dtype=dtype,
        )
        return score(logits.argmax(1), test.labels, data.classes)

    losses: list[float] = []
    pending: list[torch.Tensor] = []
    history: list[dict[str, Any]] = []
    scores: dict[str, Any] | None = None
    train_s = 0.0
    images_seen = 0
    step = 0
    order = torch.empty(0, dtype=torch.long)
    t_train = time.time()
    last_event_t = t_train
    last_event_len = 0
    model.train()

    def flush_losses() -> None:
        if pending:
            losses.extend(torch.stack(pending).float().cpu().tolist())
            pending.clear()

    def report(now: float, final: bool = False) -> None:
        nonlocal last_event_t, last_event_len
        flush_losses()
        recent = losses[last_event_len:] or losses[-1:]
        elapsed = train_s + (now - t_train)
        rate = images_seen * dist.world / elapsed if elapsed > 0 else 0.0
        p = {
            "epoch": round(step / steps_per_epoch, 4),
            "step": step,
            "steps_total": steps_total,
            "loss": round(sum(recent) / max(1, len(recent)), 5),
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": round(rate, 1),
            "eta_s": round((steps_total - step) * elapsed / step, 1) if step else None,
            "elapsed_s": round(time.time() - t0, 3),
        }
        events.emit("progress", **p)
        if final or progress.due(now):
            progress.show(now, p, final)
        last_event_t, last_event_len = now, len(losses)

    while step < steps_total:
        if step % steps_per_epoch == 0:
            perm = first_perm if step == 0 else torch.randperm(len(data.train), generator=perm_gen)
            order = perm[dist.rank :: dist.world][:per_rank].to(device)
        i = step % steps_per_epoch
        idx = order[i * local_batch : (i + 1) * local_batch]
        if decoding is not None and step < steps_per_epoch:  # one process: ``order`` is the decoding's order
            decoding.wait("train", (i + 1) * local_batch)
            if threads_once_decoded and decoding.done_s is not None:
                torch.set_num_threads(threads_once_decoded)
                threads_once_decoded = None
        x, y = images[idx], labels[idx]
        if cfg.augment:
            x = augment(x, pad=cfg.crop_pad)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * _lr_factor(cfg, step, steps_total)
        with _autocast(device, dtype):
            loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing or 0.0)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        pending.append(loss.detach())
        step += 1
        images_seen += int(idx.numel())

        now = time.time()
        if now - last_event_t >= 1.0 or progress.due(now):
            report(now)
        if dist.world > 1:
            flag = torch.tensor([1.0 if stop else 0.0], device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            if flag.item() and not stop:
                stop.reason = "peer"
        if stop:
            break
        due = step % steps_per_epoch in eval_points and (step // steps_per_epoch) % every_epochs == 0
        if step == steps_total or (cfg.eval_each_epoch and due):
            report(now, final=progress.tty)
            train_s += time.time() - t_train
            if dist.main:
                scores = evaluate()
                flush_losses()
                epoch = round(step / steps_per_epoch, 4)
                item = {
                    "epoch": epoch,
                    "step": step,
                    "loss": events_loss(losses, steps_per_epoch),
                    "accuracy": scores["accuracy"],
                    "elapsed_s": round(time.time() - t0, 3),
                }
                history.append(item)
                events.emit("epoch", **item)
                progress.line(f"epoch {epoch:g}: test accuracy {scores['accuracy']:.2%}")
                save_checkpoint(out / "checkpoint.pt", raw_model, cfg, data.classes, step, epoch)
            dist.barrier()
            t_train = time.time()
    train_s += time.time() - t_train
    if decoding is not None:
        decoding.release()  # its cache write waited for the trainer to be done with the cores
    flush_losses()
    status = "interrupted" if stop else "succeeded"
    if stop:
        progress.line(f"stopping on {stop.reason}: saving the checkpoint")
        if dist.main:
            save_checkpoint(out / "checkpoint.pt", raw_model, cfg, data.classes, step, step / steps_per_epoch)
    if progress.tty:
        progress.line("")

    rate = images_seen * dist.world / train_s if train_s > 0 else 0.0
    wall = time.time() - t0
    metrics: dict[str, Any] = {
        "status": status,
        "accuracy": scores["accuracy"] if scores else None,
        "per_class_accuracy": scores["per_class_accuracy"] if scores else None,
        "confusion_matrix": scores["confusion_matrix"] if scores else None,
        "classes": data.classes,
        "loss_per_step": [round(v, 5) for v in losses],
        "images_per_s": round(rate, 1),
        "train_s": round(train_s, 3),
        "wall_s": round(wall, 3),
        "steps": step,
        "steps_total": steps_total,
        "epochs_completed": round(step / steps_per_epoch, 4),
        "history": history,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or None,
        "world_size": dist.world,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "model": {"name": cfg.model, "parameters": n_params},
        "data": {
            "source": data.source,
            "n_train": len(data.train),
            "n_test": len(data.test),
            "load_s": round(load_s, 3),
            "decode_s": None if decoding is None or decoding.done_s is None else round(decoding.done_s, 3),
            "note": data.note,
        },
        "options": dataclasses.asdict(cfg),
        "interrupted_by": stop.reason,
        "notes": [],
    }
    if dist.main:
        note = _plots(out, losses, scores, data.classes)
        if note:
            metrics["notes"].append(note)
            progress.line(f"note: {note}")
        _write_json(out / "metrics.json", metrics)
        events.emit("done", status=status, accuracy=metrics["accuracy"], wall_s=round(wall, 3), error=None)
    if dist.world > 1:
        dist.barrier()
        torch.distributed.destroy_process_group()
    return metrics


def events_loss(losses: list[float], window: int) -> float | None:
    recent = losses[-window:]
    return round(sum(recent) / len(recent), 5) if recent else None


def per_class_table(metrics: dict[str, Any]) -> str:
    """The accuracy table people read at the end of a run."""
    per_class = metrics.get("per_class_accuracy") or {}
    if not per_class:
        return "no evaluation ran"
    width = max(len(c) for c in per_class)
    lines = [f"{'class':<{width}}  accuracy"]
    for name, acc in per_class.items():
        lines.append(f"{name:<{width}}  {'-' if acc is None else f'{acc:7.1%}'}")
    lines.append(f"{'overall':<{width}}  {metrics['accuracy']:7.1%}")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    return {"torch": torch.__version__, "python": sys.version.split()[0]}
