"""The lab's options as people type them, declared once.

``python -m cifarlab train|notebook`` builds its flags from this table, and ``labctl run-lab`` reads this file on
its own (it imports nothing: reading it loads no torch) for its training options and the arguments it passes on.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Option(NamedTuple):
    help: str
    run_lab: str = ""  # the placeholder of `labctl run-lab --FLAG` (N, RATE, ...); "": reached by --set KEY=VALUE only
    type: type = str  # what run-lab parses the value as
    choices: tuple[str, ...] = ()  # what run-lab accepts; the training core checks every value again
    default: Any = None  # what run-lab passes when the option is not given
    notebook: bool = False  # a flag of `cifarlab notebook` too; the others reach the notebook as LAB_* parameters


# Keyed by TrainConfig field, in the order run-lab passes them on.
OPTIONS: dict[str, Option] = {
    "model": Option(
        "tutorial (the notebook's CNN) or fast.", "MODEL", choices=("tutorial", "fast"), default="tutorial"
    ),
    "seed": Option("Random seed.", "N", int, default=0, notebook=True),
    "epochs": Option("Training epochs.", "N", float, notebook=True),
    "batch_size": Option("Batch size.", "N", int, notebook=True),
    "lr": Option("Learning rate.", "RATE", float),
    "optimizer": Option("sgd or adamw.", "OPTIMIZER", choices=("sgd", "adamw")),
    "device": Option("auto, cuda, mps or cpu.", "DEVICE", choices=("auto", "cuda", "mps", "cpu"), notebook=True),
    "holdout": Option("Share of train/ held out for evaluation without a test/.", "FRACTION", float),
    "max_steps": Option("stop after this many steps (smoke tests)", notebook=True),
    "data": Option(
        "cifar10 (download), synthetic[:N], or a directory/.tar/.tar.gz holding train/<class>/*.jpg", notebook=True
    ),
    "data_root": Option("where --data cifar10 downloads to (default ./data or $CIFARLAB_DATA_ROOT)"),
    "cache": Option("keep decoded images in a cache file next to the data (or the user cache dir)"),
    "width": Option("width multiplier of the fast model (0.25-0.5 on a CPU, 1+ on a GPU)"),
    "recipe": Option("classic (the tutorial's settings) or fast (large batches, one-cycle); default by model"),
    "amp": Option("mixed precision: auto (CUDA: bf16/fp16; CPU: bf16 for the fast model given AMX), bf16, fp16, off"),
    "compile": Option("torch.compile the model"),
    "log_every": Option("seconds between progress lines when stdout is not a terminal"),
    "out": Option("run directory (default runs/<time>)"),
}
