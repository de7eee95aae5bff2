"""A trained model at work: predictions, scores and checkpoints, for training and the evaluate/predict commands."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cifarlab.config import TrainConfig
from cifarlab.devices import autocast
from cifarlab.errors import LabError
from cifarlab.models import build_model


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
        with autocast(device, dtype):
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


def save_checkpoint(
    path: Path,
    model: nn.Module,
    cfg: TrainConfig,
    classes: list[str],
    step: int,
    epoch: float,
    layout: Mapping[str, Any] | None = None,
) -> None:
    """Atomically, so a run killed mid-write still leaves the previous checkpoint intact.

    ``layout``: how the run was spread (``world_size``, ``nodes``, ``procs_per_node``, ``backend``,
    ``rank0_host``); one process on this machine when left out.
    """
    state = {
        "format": "cifarlab/1",
        "model": cfg.model,
        "model_kwargs": model_kwargs(cfg),
        "classes": classes,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "step": step,
        "epoch": epoch,
        "world_size": 1,  # how many ranks trained it, then on how many nodes
        "nodes": 1,
        "procs_per_node": 1,
        "backend": None,
        "rank0_host": None,
        **(layout or {}),
        "config": dataclasses.asdict(cfg),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """What the model's constructor needs besides the class count, as stored in the checkpoint."""
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
