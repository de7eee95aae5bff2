"""The networks and a trained one at work: device, predictions, scores and checkpoints.

Each network takes uint8 images (N, 3, 32, 32) or floats in [0, 1] and normalises them itself, so that a checkpoint
is all a later `evaluate` or `predict` needs.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cifarlab.config import ConfigError, LabError, TrainConfig


class Normalize(nn.Module):
    """uint8 or [0, 1] floats in, standardised floats out (the tutorial's ``Normalize((0.5,)*3, (0.5,)*3)``)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        return (x - self.mean) / self.std


class TutorialNet(nn.Module):
    """The tutorial's CNN, layer for layer (62,006 parameters), with its input normalisation as a first layer."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.norm = Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = self.pool if torch.is_grad_enabled() else max_pool_2x2
        x = self.norm(x)
        x = pool(F.relu(self.conv1(x)))
        x = pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``nn.MaxPool2d(2, 2)``'s output, equal bit for bit, from the four corners of each window: without a backward
    pass 2x faster on a CPU, where torch's kernel takes 9 ns per element of 6 channels (benchmarks/RESULTS.md)."""
    x = x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2]
    return torch.maximum(
        torch.maximum(x[..., ::2, ::2], x[..., ::2, 1::2]), torch.maximum(x[..., 1::2, ::2], x[..., 1::2, 1::2])
    )


def _conv_bn(c_in: int, c_out: int, airbench: bool = False) -> nn.Sequential:
    """conv, batch norm, ReLU; or airbench94's conv, pool, norm (no scale, eps 1e-12, momentum 0.6), GELU."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    if not airbench:
        return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))
    nn.init.dirac_(conv.weight.data[:c_in])  # the first filters start as the identity, as airbench's do
    norm = nn.BatchNorm2d(c_out, eps=1e-12, momentum=0.4)  # torch's momentum is 1 - airbench's 0.6
    norm.weight.requires_grad_(False)
    return nn.Sequential(conv, nn.MaxPool2d(2), norm, nn.GELU())


class _Block(nn.Module):
    """conv, pool, conv with a residual add, or airbench94's plain group (its pool inside the first conv)."""

    def __init__(self, c_in: int, c_out: int, airbench: bool = False) -> None:
        super().__init__()
        self.residual = not airbench
        self.conv1 = _conv_bn(c_in, c_out, airbench)
        self.pool = nn.Identity() if airbench else nn.MaxPool2d(2)
        self.conv2 = _conv_bn(c_out, c_out, airbench)
        if airbench:  # the second conv keeps the resolution: its pool goes
            self.conv2[1] = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv1(x))
        return x + self.conv2(x) if self.residual else self.conv2(x)


class FastNet(nn.Module):
    """After airbench: a frozen 2x2 conv that whitens image patches (``init_whitening``), three blocks, a max-pool
    head. ``airbench`` (CUDA): airbench94's network, 64-256-256 channels times ``width``. Otherwise (CPU): ResNet-9's
    64-128-256-512 times ``width`` behind one more stem conv; ``lean`` pools after it, so that every block runs at a
    quarter of the pixels, 4x less compute for a few points of accuracy where the network is compute-bound."""

    def __init__(self, num_classes: int = 10, width: float = 1.0, lean: bool = False, airbench: bool = False) -> None:
        super().__init__()
        w = [24] + [max(8, round(c * width)) for c in ((64, 256, 256) if airbench else (64, 128, 256, 512))]
        self.norm = Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
        self.whiten = nn.Conv2d(3, 24, 2, bias=airbench)
        self.whiten.weight.requires_grad_(False)  # frozen: no backward pass through its weights
        if self.whiten.bias is not None:
            nn.init.zeros_(self.whiten.bias)
        self.stem: nn.Module = nn.GELU()
        if not airbench:
            self.stem = nn.Sequential(nn.ReLU(), _conv_bn(24, w[1]), nn.MaxPool2d(2) if lean else nn.Identity())
            w = w[1:]
        self.layers = nn.Sequential(*(_Block(w[i], w[i + 1], airbench) for i in range(3)))
        self.head = nn.Linear(w[3], num_classes, bias=False)
        self.scale = 1 / 9 if airbench else 1 / 8  # small initial logits: a steadier start at high learning rates

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Filters from the eigenvectors of the 2x2 patch covariance, scaled to unit variance, and their negatives."""
        x = self.norm(images.to(self.whiten.weight.device)).float()
        patches = x.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
        cov = patches.T @ patches / patches.shape[0]
        eigvals, eigvecs = torch.linalg.eigh(cov.double())
        filters = (eigvecs.T / (eigvals + eps).sqrt()[:, None]).float().view(12, 3, 2, 2)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(self.whiten(self.norm(x))))
        x = F.adaptive_max_pool2d(x, 1).flatten(1)
        return self.head(x) * self.scale


def build_model(name: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """A model by preset name; ``kwargs`` (e.g. ``width``) go to its constructor."""
    models: dict[str, type[nn.Module]] = {"tutorial": TutorialNet, "fast": FastNet}
    if name not in models:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(models)}")
    return models[name](num_classes=num_classes, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Every parameter, trainable or not (the tutorial's network has 62,006)."""
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------------ at work


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """CUDA, then Apple MPS, then CPU; a forced device that is absent is a clear error."""
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r} is not a device name; use auto, cuda, cuda:N, mps or cpu.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but this PyTorch sees no CUDA GPU; use --device auto or cpu.")
    if device.type == "mps" and not mps:
        raise ConfigError("--device mps was asked for but Apple's MPS is not available here; use auto or cpu.")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU has it, else fp16 (or as asked). On a CPU bf16 for the fast network where the CPU has AMX
    tiles (matrix units: its steps 1.5x faster there), else nothing: slower without them; too few channels in the
    tutorial network; and airbench's recipe, whose batch norm runs in bf16 on a CPU, learned far less in tests."""
    if cfg.amp == "off" or device.type not in ("cuda", "cpu"):
        return None
    if device.type == "cpu":
        amx = cfg.model == "fast" and not cfg.airbench and getattr(torch.cpu, "_is_amx_tile_supported", bool)()
        return torch.bfloat16 if cfg.amp == "bf16" or (cfg.amp == "auto" and amx) else None
    bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and torch.cuda.is_bf16_supported())
    return torch.bfloat16 if bf16 else torch.float16


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int = 1000,
    tta: int = 0,
    channels_last: bool = False,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Logits for uint8 images in large batches. Test-time augmentation as airbench's: ``tta`` 1 adds the mirrored
    image's logits; 2 also those of both views shifted by a pixel either way (reflected borders)."""
    was_training = model.training
    model.eval()

    def views(x: torch.Tensor) -> torch.Tensor:  # the image and its mirror, each in the memory format asked for
        pair = [x, x.flip(3)] if tta else [x]
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return sum(model(v.contiguous(memory_format=fmt)).float() for v in pair)

    outs = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size].to(device, non_blocking=True)
        logits = views(x)
        if tta >= 2:
            unit = x.float() / 255 if x.dtype == torch.uint8 else x  # as Normalize reads them
            padded = F.pad(unit, (1, 1, 1, 1), mode="reflect")
            logits = logits + (views(padded[:, :, :-2, :-2]) + views(padded[:, :, 2:, 2:])) / 2
        outs.append(logits.cpu())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.zeros(0)


def score(preds: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Overall and per-class accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    k = len(classes)
    confusion = torch.bincount(labels * k + preds, minlength=k * k).view(k, k)
    totals = confusion.sum(1).tolist()
    per_class = {c: confusion[i, i].item() / totals[i] if totals[i] else None for i, c in enumerate(classes)}
    total = int(labels.numel())
    return {
        "accuracy": float((preds == labels).sum()) / total if total else None,
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
        "n_test": total,
    }


def save_checkpoint(
    path: Path, model: nn.Module, cfg: TrainConfig, classes: list[str], step: int, epoch: float, extra: dict[str, Any]
) -> None:
    """Atomically, so a run killed mid-write still leaves the previous checkpoint intact. ``extra``: how the run was
    spread (``world_size``, ``nodes``, ``procs_per_node``, ``backend``, ``rank0_host``) and what resuming needs."""
    state = {
        "format": "cifarlab/1",
        "model": cfg.model,
        "model_kwargs": model_kwargs(cfg),
        "classes": classes,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "step": step,
        "epoch": epoch,
        **extra,
        "config": dataclasses.asdict(cfg),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """What the model's constructor needs besides the class count, as stored in the checkpoint."""
    if cfg.model != "fast":
        return {}
    return {"width": 1.0 if cfg.width is None else cfg.width, "lean": bool(cfg.lean), "airbench": bool(cfg.airbench)}


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint of a run directory or file, on the CPU, whatever device saved it."""
    path = Path(path).expanduser()
    path = path / "checkpoint.pt" if path.is_dir() else path
    if not path.is_file():
        raise LabError(f"no checkpoint at {path}; pass a run directory or its checkpoint.pt.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise LabError(f"{path} is not a readable cifarlab checkpoint ({exc}).") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != "cifarlab/1":
        raise LabError(f"{path} is not a cifarlab checkpoint.")
    return ckpt


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The model (in eval mode, on ``device``) and the checkpoint's metadata."""
    ckpt = read_checkpoint(path)
    try:
        model = build_model(ckpt["model"], num_classes=len(ckpt["classes"]), **ckpt["model_kwargs"])
        model.load_state_dict(ckpt["state_dict"])
    except Exception as exc:
        raise LabError(f"{path} is not a readable cifarlab checkpoint ({exc}).") from exc
    model.to(device).eval()
    return model, ckpt
