"""Every training option in one place (`TrainConfig`), the recipes that fill in those left unset, and the errors.

A recipe is a named set of knobs, one comment each. "classic" is the tutorial as published. "fast" uses the
hardware: large batches from memory, a one-cycle schedule, test-time augmentation; for the fast network also
augmentation and label smoothing on a CPU, and on CUDA airbench94's network and recipe.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


class LabError(Exception):
    """A failure the user can fix: the command line prints its message, without a traceback, and exits with 2."""


class ConfigError(LabError):
    """An option value the training core cannot use."""


class DataError(LabError):
    """A dataset that is missing or not in the expected shape; the message names the path and the layout."""


# ------------------------------------------------------------------------------------------------ recipes

CLASSIC: dict[str, Any] = dict(
    epochs=2.0,  # passes over the training images
    batch_size=4,  # images per step, summed over all ranks
    lr=0.001,  # peak learning rate
    optimizer="sgd",  # sgd or adamw
    momentum=0.9,  # SGD momentum
    nesterov=False,  # Nesterov's variant of momentum
    weight_decay=0.0,  # L2 penalty on weights (never on biases or batch-norm scales)
    schedule="constant",  # constant; onecycle: linear warm-up then linear decay to zero; triangle: see AIRBENCH
    warmup=0.0,  # fraction of the run spent warming up (onecycle)
    label_smoothing=0.0,  # share of the target spread over the other classes
    augment=False,  # random crops and flips, on the device
    tta=0,  # test-time augmentation: 1 adds the mirrored image's logits, 2 also shifted views (airbench's)
    channels_last=False,  # NHWC memory layout
    lookahead=False,  # every 5 steps pull the weights toward their running average (airbench's)
    bias_lr=1.0,  # learning rate multiplier of batch-norm biases (decayed as much per step as the weights when > 1)
)
FAST_TUTORIAL: dict[str, Any] = {
    **CLASSIC,
    "epochs": 1.3,  # enough to pass the classic run's accuracy
    "batch_size": 64,  # 16x fewer steps, each keeping the cores busy
    "lr": 0.05,  # scaled up with the batch
    "nesterov": True,
    "weight_decay": 5e-4,
    "schedule": "onecycle",
    "warmup": 0.15,
    "tta": 1,
    "threads": None,  # every core: 1.2x faster on a quiet 2-core machine; `--threads 1` where others share the cores
}
FAST_NET: dict[str, Any] = {
    **FAST_TUTORIAL,
    "epochs": 10.0,
    "batch_size": 256,
    "lr": 0.8,  # batch norm lets the residual network take a large step
    "warmup": 0.2,
    "label_smoothing": 0.2,  # a softer target for a network that would otherwise grow over-confident
    "augment": True,  # needed by a network large enough to memorise the images
    "channels_last": True,
    "width": 0.25,  # a CPU is compute-bound: a quarter of the channels ...
    "lean": True,  # ... and blocks at a quarter of the pixels
    "airbench": False,
}
# On CUDA: airbench94 (github.com/KellerJordan/cifar10-airbench) as published, its hyperparameters converted
# from its summed loss to the mean loss used here (lr 11.5 / (1 + 1 / (1 - 0.85)), weight decay per step).
AIRBENCH: dict[str, Any] = {
    **FAST_NET,
    **dict(epochs=9.9, batch_size=1024, lr=1.5, momentum=0.85, weight_decay=0.0153 / 11.5, bias_lr=64.0, tta=2),
    **dict(schedule="triangle", warmup=0.23),  # 0.2 of the peak rate, up to it at 23% of the run, 0.07 at its end
    **dict(lookahead=True, width=1.0, lean=False, airbench=True),
}
# recipe -> model -> defaults; the fast network has no "classic" way to train
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "classic": {"tutorial": CLASSIC, "fast": FAST_NET},
    "fast": {"tutorial": FAST_TUTORIAL, "fast": FAST_NET},
}


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
    airbench: bool | None = None
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
    tta: int | None = None
    channels_last: bool | None = None
    lookahead: bool | None = None
    bias_lr: float | None = None
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

    def resolved(self, device_type: str = "cpu") -> TrainConfig:
        """A copy with the recipe applied (the fast network's sized for the device) and every value checked."""
        recipe = self.recipe or ("classic" if self.model == "tutorial" else "fast")
        if recipe not in RECIPES:
            raise ConfigError(f"unknown recipe {recipe!r}; choose classic or fast.")
        table = RECIPES[recipe]
        if self.model not in ("tutorial", "fast"):
            raise ConfigError(f"unknown model {self.model!r}; choose tutorial or fast.")
        defaults = AIRBENCH if self.model == "fast" and device_type == "cuda" else table[self.model]
        cfg = dataclasses.replace(self, recipe=recipe)
        for key, value in defaults.items():
            if getattr(cfg, key) is None:
                setattr(cfg, key, value)
        cfg.check()
        return cfg

    def check(self) -> None:
        """Raise a `ConfigError` that names the option and what it accepts."""

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(what)

        # nan and inf are refused too: no run ends on them
        need(0 < (self.epochs or 0) < math.inf, f"--epochs must be a positive number, got {self.epochs}.")
        need(self.batch_size is not None and self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}.")
        for flag, rate in (("--lr", self.lr), ("--bias-lr", self.bias_lr)):
            need(0 < (rate or 0) < math.inf, f"{flag} must be a positive number, got {rate}.")
        need(self.holdout is None or 0 < self.holdout < 1, f"--holdout must be between 0 and 1, got {self.holdout}.")
        need(0 <= self.seed < 2**32, f"--seed must be a whole number from 0 to 4294967295, got {self.seed}.")
        need(self.optimizer in ("sgd", "adamw"), f"--optimizer must be sgd or adamw, got {self.optimizer!r}.")
        need(self.schedule in ("constant", "onecycle", "triangle"), f"--schedule: no {self.schedule!r} schedule.")
        need(self.amp in ("auto", "bf16", "fp16", "off"), f"--amp must be auto, bf16, fp16 or off, got {self.amp!r}.")
        need(self.width is None or self.width > 0, f"--width must be positive, got {self.width}.")
        need(self.max_steps is None or self.max_steps >= 1, f"--max-steps must be >= 1, got {self.max_steps}.")
        need(self.eval_batch_size >= 1, "--eval-batch-size must be >= 1.")
        need(0 <= self.crop_pad <= 16, f"--crop-pad must be between 0 and 16 pixels, got {self.crop_pad}.")
        need(self.eval_every > 0, f"--eval-every is in epochs and must be positive, got {self.eval_every}.")
        need(self.threads is None or self.threads >= 1, "--threads must be >= 1.")
        need(0 <= (self.warmup or 0) < 1, f"--warmup is a fraction of the run in [0, 1), got {self.warmup}.")
        need(0 <= (self.label_smoothing or 0) < 1, "--label-smoothing must be in [0, 1).")
        need(self.tta in (0, 1, 2), f"--tta is 0 (none), 1 (mirror) or 2 (mirror and shifts), got {self.tta}.")

    def with_strings(self, values: dict[str, str]) -> TrainConfig:
        """A copy with KEY=VALUE text applied (command-line values, ``--set``); unknown keys are an error."""
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
            return ("0", "false", "no", "off", "1", "true", "yes", "on").index(text.strip().lower()) >= 4
        if type_text.startswith("int"):
            return int(text)
        if type_text.startswith("float"):
            return float(text)
    except ValueError as exc:
        raise ConfigError(f"option {key}: {text!r} is not a valid {type_text.split(' ')[0]}.") from exc
    return text
