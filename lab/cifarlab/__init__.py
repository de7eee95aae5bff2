"""cifarlab: the training core behind the lab notebook and ``labctl run-lab``.

It never imports labctl: it is what runs on the lab machine. Needs torch, numpy and Pillow; torchvision only
for the CIFAR-10 download, matplotlib only for the plots, nbclient only to execute the notebook.
"""

from __future__ import annotations

from cifarlab.config import ConfigError, TrainConfig
from cifarlab.data import Data, ImageDataset, load_data, sample
from cifarlab.devices import pick_device
from cifarlab.errors import DataError, LabError
from cifarlab.evaluate import load_checkpoint, predict_logits, score
from cifarlab.images import Split
from cifarlab.models import FastNet, TutorialNet, build_model, count_parameters
from cifarlab.runlog import per_class_table
from cifarlab.train import augment, train

__version__ = "0.1.0"
__all__ = [
    "ConfigError",
    "Data",
    "DataError",
    "FastNet",
    "ImageDataset",
    "LabError",
    "Split",
    "TrainConfig",
    "TutorialNet",
    "augment",
    "build_model",
    "count_parameters",
    "load_checkpoint",
    "load_data",
    "per_class_table",
    "pick_device",
    "predict_logits",
    "sample",
    "score",
    "train",
]
