"""The networks. Each takes uint8 images (N, 3, 32, 32) or floats in [0, 1] and normalises them itself.

Normalisation lives inside the model so that a checkpoint is all a later `evaluate` or `predict` needs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


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


class _MaxPool2x2(torch.autograd.Function):
    """2x2 max-pooling with stride 2, exactly as ``F.max_pool2d`` computes it, forward and backward.

    The forward is two elementwise maxima over strided views (vectorised, ~9x faster on a CPU than the pooling
    kernel for the tutorial network's few channels); the backward sends each output's gradient to the element
    ``max_pool2d`` would pick: the first maximum of its window in row-major order. Identical results for finite
    values (the tests compare both bit for bit); only a window holding a NaN may route its gradient elsewhere.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        a, b, c, d = _corners(x)
        y = torch.maximum(torch.maximum(a, b), torch.maximum(c, d))
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        x, y = ctx.saved_tensors
        a, b, c, _ = _corners(x)
        first = a == y
        taken = first.clone()
        second = (b == y) & ~taken
        taken |= second
        third = (c == y) & ~taken
        taken |= third
        out = torch.empty_like(x)
        for corner, pick in zip(_corners(out), (first, second, third, ~taken), strict=True):
            torch.mul(grad, pick, out=corner)
        return out


def _corners(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-left, top-right, bottom-left, bottom-right elements of every 2x2 window (views, no copies)."""
    return x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d``, with a faster exact path for 2x2 windows of stride 2 on even-sized inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plain = (
            self.kernel_size in (2, (2, 2))
            and self.stride in (2, (2, 2))
            and self.padding in (0, (0, 0))
            and self.dilation in (1, (1, 1))
            and not self.return_indices
            and not self.ceil_mode
            and x.dim() == 4
            and x.shape[-1] % 2 == 0
            and x.shape[-2] % 2 == 0
        )
        return _MaxPool2x2.apply(x) if plain else super().forward(x)


class TutorialNet(nn.Module):
    """The classic tutorial CNN, layer for layer: 62,006 parameters."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.norm = Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = MaxPool2d(2, 2)  # nn.MaxPool2d(2, 2), computed faster
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class _Block(nn.Module):
    """conv, pool, conv with a residual add: each block halves the resolution and widens the features."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = _conv_bn(c_out, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv1(x))
        return x + self.conv2(x)


class FastNet(nn.Module):
    """A small residual network after ResNet-9 and airbench: whitened stem, three residual blocks, max-pool head.

    ``width`` scales every layer (1.0: 64-128-256-512 channels, ResNet-9's). ``lean`` pools right after the stem,
    so that every block runs at a quarter of the pixels: 4x less compute for a few points of accuracy, which is
    the better trade on a CPU, where the network is compute-bound. The stem is a frozen 2x2 convolution that
    whitens image patches (set from the training data by ``init_whitening``, as airbench does): the network then
    starts from decorrelated inputs and learns in fewer steps.
    """

    def __init__(self, num_classes: int = 10, width: float = 1.0, lean: bool = False) -> None:
        super().__init__()
        w = [max(8, round(c * width)) for c in (64, 128, 256, 512)]
        self.norm = Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
        self.whiten = nn.Conv2d(3, 24, 2, bias=False)
        self.whiten.weight.requires_grad_(False)  # frozen, bias-free: no backward pass through the first two layers
        self.stem = nn.Sequential(nn.ReLU(), _conv_bn(24, w[0]), nn.MaxPool2d(2) if lean else nn.Identity())
        self.layers = nn.Sequential(_Block(w[0], w[1]), _Block(w[1], w[2]), _Block(w[2], w[3]))
        self.head = nn.Linear(w[3], num_classes, bias=False)
        self.scale = 1 / 8  # small initial logits, as in airbench: a steadier start at high learning rates

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


MODELS: dict[str, type[nn.Module]] = {"tutorial": TutorialNet, "fast": FastNet}


def build_model(name: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """A model by preset name; ``kwargs`` (e.g. ``width``) go to its constructor."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name](num_classes=num_classes, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Every parameter, trainable or not (the tutorial's network has 62,006)."""
    return sum(p.numel() for p in model.parameters())
