"""Run inside the test base image once torch (a CPU build) and torchvision are installed: make torchvision import.

Where no CPU build of torchvision can be fetched (PyTorch's own index is out of reach), the one at hand is PyPI's
CUDA build. Its Python half works with a CPU torch, and its compiled ops simply do not load, which torchvision
allows for, except in one place: importing it registers fake kernels for its ``nms`` and ``qnms`` ops without
asking whether they loaded, and fails with "operator torchvision::nms does not exist". This declares the two ops'
schemas when the compiled ops are missing (calling them still raises torchvision's own "Couldn't load custom C++
ops"; the lab never does), then checks what the notebook uses: transforms, ImageFolder and make_grid.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

DECLARE = """

if not _has_ops():  # labctl's test image: a CPU torch, whose ops _meta_registrations still names
    from torch import library as _op_library

    for _name in ("nms", "qnms"):
        _op_library.define(f"torchvision::{_name}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
"""


def declare_missing_ops() -> None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("torchvision is not installed")
    extension = Path(next(iter(spec.submodule_search_locations))) / "extension.py"
    text = extension.read_text()
    if DECLARE not in text:
        extension.write_text(text + DECLARE)


def check() -> str:
    import torch
    import torchvision
    from PIL import Image
    from torchvision import datasets, transforms

    with tempfile.TemporaryDirectory() as root:
        for k, name in enumerate(("cat", "dog")):
            (Path(root) / name).mkdir()
            Image.new("RGB", (32, 32), (200 * k, 40, 40)).save(Path(root) / name / "0.jpg")
        normalize = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
        images = datasets.ImageFolder(root, transform=normalize)
        assert images.classes == ["cat", "dog"] and images[0][0].shape == (3, 32, 32), images
        grid = torchvision.utils.make_grid(torch.stack([images[0][0], images[1][0]]))
        assert grid.shape[0] == 3, grid.shape
    return f"torchvision {torchvision.__version__} works with torch {torch.__version__}"


if __name__ == "__main__":
    declare_missing_ops()
    print(check())
