"""Small generated data for the lab's tests: a JPEG folder and its .tar.gz, never the real data set."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the lab's tests need PyTorch (pip install '.[lab]')")
pytest.importorskip("PIL", reason="the lab's tests need Pillow (pip install '.[lab]')")

CLASSES = ("cat", "dog", "ship")
REPO = Path(__file__).resolve().parents[2]
# real CIFAR-10 training images (lossy JPEGs), kept beside the repository rather than in it
CIFAR10_ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-train-jpeg.tar.gz"


def make_jpeg_folder(root: Path, per_class: int = 6, with_test: bool = False) -> Path:
    """train/<class>/NNNN.jpg with a colour per class (and noise), so labels can be checked from pixels."""
    from PIL import Image

    colours = {"cat": (220, 40, 40), "dog": (40, 200, 40), "ship": (40, 40, 220)}
    splits = ("train", "test") if with_test else ("train",)
    for split in splits:
        for k, cls in enumerate(CLASSES):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class if split == "train" else 2):
                img = Image.new("RGB", (32, 32), colours[cls])
                img.putpixel((i % 32, k), (255, 255, 255))
                img.save(d / f"{i:04d}.jpg", quality=95)
    return root


def make_targz(folder: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        for split in sorted(p.name for p in folder.iterdir() if p.is_dir()):
            tar.add(folder / split, arcname=split)
    return dest


@pytest.fixture
def jpeg_folder(tmp_path: Path) -> Path:
    return make_jpeg_folder(tmp_path / "imgs")


@pytest.fixture
def jpeg_targz(tmp_path: Path, jpeg_folder: Path) -> Path:
    return make_targz(jpeg_folder, tmp_path / "imgs.tar.gz")


@pytest.fixture
def cifar10_archive() -> Path:
    """The real images: ../shared/data/ from the repository root, or $CIFARLAB_TEST_ARCHIVE."""
    path = Path(os.environ.get("CIFARLAB_TEST_ARCHIVE") or CIFAR10_ARCHIVE)
    if not path.is_file():
        pytest.skip(f"the real CIFAR-10 images are not at {path} (a copy of shared/ beside the repository)")
    return path


@pytest.fixture(autouse=True)
def lab_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Decoded-image caches go to a per-test folder, never next to shared data or the user's cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CIFARLAB_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    """The tests use tiny batches: one thread each avoids contention on a busy machine."""
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
