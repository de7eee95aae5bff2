"""Data: every source becomes one uint8 tensor (N, 3, 32, 32) in memory, decoded once (see `cifarlab.images`).

Sources
- ``cifar10``: torchvision's CIFAR-10 (downloaded into ``data_root`` when online; torchvision is imported only here).
- a directory or a ``.tar``/``.tar.gz`` holding ``train/<class>/*.jpg`` (and optionally ``test/<class>/*.jpg``),
  read straight from the archive, never unpacked to disk.
- ``synthetic`` or ``synthetic:N``: N small class-dependent patterns with noise, learnable in a few steps (tests).

Training then slices batches from memory; there is no per-image Python work once the tensor exists. This module
is the plain path; `cifarlab.fastload` holds what makes it fast (tar reader, decoding ahead, cache).
`ImageDataset` hands the same images to a classic ``DataLoader`` with torchvision transforms.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cifarlab import fastload
from cifarlab.errors import DataError, LabError
from cifarlab.fastload import Decoding, wait_for_cache_writes
from cifarlab.images import IMAGE_SUFFIXES, SIZE, Split, decode_images, torchvision_decoder

__all__ = [
    "CIFAR10_CLASSES",
    "Data",
    "DataError",
    "ImageDataset",
    "LabError",
    "Split",
    "load_data",
    "load_image_folder",
    "open_image_folder",
    "sample",
    "wait_for_cache_writes",
]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass
class Data:
    """A data set in memory: training and test images, class names, and where they came from."""

    train: Split
    test: Split | None
    classes: list[str]
    source: str
    note: str = ""
    cache: str = ""
    decoding: Decoding | None = None  # set while the images are still being decoded in the background

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> Data:
        """``n_train`` training and ``n_test`` test images drawn at random (None: all), for short runs.

        Folders and archives list their images class by class, so the first N would be of one or two classes.
        """
        if self.decoding is not None:
            raise DataError("the images are still being decoded; take a subset of fully loaded data.")
        if self.test is None:
            raise DataError("this data has no test split to take a subset of.")
        train, test = self.train, self.test
        pick_train, pick_test = sample(len(train), n_train, seed), sample(len(test), n_test, seed)
        train = Split(train.images[pick_train], train.labels[pick_train])
        test = Split(test.images[pick_test], test.labels[pick_test])
        return Data(train, test, self.classes, self.source, self.note, self.cache)

    def dataset(self, part: str, transform: Callable[[Any], Any] | None = None) -> ImageDataset:
        """The ``train`` or ``test`` images as a Dataset for a ``DataLoader``, with torchvision transforms."""
        split = self.train if part == "train" else self.test
        if split is None:
            raise DataError(f"this data has no {part} split.")
        return ImageDataset(split, self.classes, transform)


def sample(n: int, k: int | None, seed: int = 0) -> torch.Tensor:
    """``k`` of ``range(n)`` drawn at random (all of them when ``k`` is None or larger), in increasing order."""
    if k is None or k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


class ImageDataset(torch.utils.data.Dataset[tuple[Any, int]]):
    """A `Split` as a map-style Dataset of (PIL image, label), so torchvision transforms apply as to CIFAR10."""

    def __init__(self, split: Split, classes: list[str], transform: Callable[[Any], Any] | None = None) -> None:
        self.split = split
        self.classes = classes  # as torchvision's CIFAR10 has them
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        image: Any = Image.fromarray(self.split.images[i].permute(1, 2, 0).numpy())
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.split.labels[i])


# ------------------------------------------------------------------------------------------------ synthetic


def synthetic(n_train: int = 2000, n_test: int = 500, num_classes: int = 10, seed: int = 1234) -> Data:
    """Each class is a fixed smooth colour pattern; images are that pattern, shifted a little, plus noise."""
    g = torch.Generator().manual_seed(seed)
    base = (torch.rand(num_classes, 3, 4, 4, generator=g) > 0.5).float()
    patterns = torch.nn.functional.interpolate(base, size=(SIZE + 8, SIZE + 8), mode="bilinear", align_corners=False)

    def make(n: int) -> Split:
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=g)]
        dx, dy = torch.randint(0, 9, (2, n), generator=g)
        rows = dy[:, None] + torch.arange(SIZE)
        cols = dx[:, None] + torch.arange(SIZE)
        imgs = patterns[labels][torch.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
        imgs = imgs.permute(0, 3, 1, 2) * 0.7 + 0.3 * torch.rand(n, 3, SIZE, SIZE, generator=g)
        return Split((imgs * 255).round().clamp(0, 255).to(torch.uint8), labels.long())

    classes = [f"class{i}" for i in range(num_classes)]
    return Data(make(n_train), make(n_test), classes, source=f"synthetic:{n_train}")


# ------------------------------------------------------------------------------------------------ image folders


def _walk_directory(root: Path) -> Iterator[tuple[str, str, bytes]]:
    """(split, class, encoded image) for every ``train|test/<class>/<image>`` file under ``root``."""
    for split in ("train", "test"):
        base = root / split
        if not base.is_dir():
            continue
        for cls_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            for f in sorted(cls_dir.iterdir()):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    yield split, cls_dir.name, f.read_bytes()


def _read_image_folder(path: Path) -> tuple[dict[str, list[bytes]], dict[str, torch.Tensor], list[str]]:
    """The encoded images and labels of each part (train, test) of a folder or archive, checked, not decoded."""
    if not path.exists():
        raise DataError(
            f"the dataset {path} does not exist. Expected a directory or a .tar/.tar.gz containing "
            "train/<class>/*.jpg (and optionally test/<class>/*.jpg)."
        )
    items: Iterable[tuple[str, str, bytes]] = _walk_directory(path) if path.is_dir() else fastload.walk_tar(path)
    blobs: dict[str, list[bytes]] = {"train": [], "test": []}
    names: dict[str, list[str]] = {"train": [], "test": []}
    for part, cls, blob in items:
        blobs[part].append(blob)
        names[part].append(cls)
    if not blobs["train"]:
        raise DataError(
            f"no training images found in {path}. Expected train/<class>/<image>.jpg inside it "
            f"(image suffixes: {', '.join(IMAGE_SUFFIXES)}), e.g. train/cat/0001.jpg."
        )
    classes = sorted(set(names["train"]))
    if len(classes) < 2:
        raise DataError(f"{path} has only one class under train/ ({classes[0]}); a classifier needs at least two.")
    unknown = sorted(set(names["test"]) - set(classes))
    if unknown:
        raise DataError(f"{path} has test classes that are not in train/: {', '.join(unknown)}.")
    index = {c: i for i, c in enumerate(classes)}
    labels = {part: torch.tensor([index[c] for c in names[part]], dtype=torch.long) for part in names}
    return {part: b for part, b in blobs.items() if b}, labels, classes


def load_image_folder(path: Path, workers: int | None = None) -> Data:
    """Read ``train/<class>/*`` (and ``test/<class>/*`` if present) from a directory or a tar archive."""
    blobs, labels, classes = _read_image_folder(path)

    def split(name: str) -> Split:
        try:
            images = decode_images(blobs[name], workers)
        except Exception as exc:  # PIL raises a handful of types for broken files
            raise DataError(f"an image under {name}/ in {path} could not be decoded: {exc}") from exc
        return Split(images, labels[name])

    test = split("test") if "test" in blobs else None
    return Data(split("train"), test, classes, source=str(path))


def open_image_folder(path: Path, process: bool | None = None) -> Data:
    """Like `load_image_folder`, but returns at once with ``data.decoding`` set: the pixels arrive in the background.

    ``process``: decode in a forked process (default on Linux) rather than a thread. A thread is only used with
    torchvision's decoder, which spends most of its time outside the GIL; without it (Pillow), and without a
    process, everything is decoded before returning, as `load_image_folder` does.
    """
    process = sys.platform.startswith("linux") if process is None else process
    if not process and not torchvision_decoder():
        return load_image_folder(path)
    blobs, labels, classes = _read_image_folder(path)
    decoding = Decoding(blobs, str(path), chunk=fastload.DECODE_CHUNK, process=process)
    train = Split(decoding.target("train", "train"), labels["train"])
    test = Split(decoding.target("test", "test"), labels["test"]) if "test" in blobs else None
    return Data(train, test, classes, source=str(path), decoding=decoding)


# ------------------------------------------------------------------------------------------------ decoded cache


def _cache_blob(data: Data) -> dict[str, object]:
    """What the cache file stores: the tensors of both splits, the classes and the source."""
    blob: dict[str, object] = {
        "train_images": data.train.images,
        "train_labels": data.train.labels,
        "classes": data.classes,
        "source": data.source,
    }
    if data.test is not None:
        blob.update(test_images=data.test.images, test_labels=data.test.labels)
    return blob


def _from_cache(blob: dict[str, Any], path: Path) -> Data:
    """The `Data` a cache file holds."""
    test = Split(blob["test_images"], blob["test_labels"]) if "test_images" in blob else None
    train = Split(blob["train_images"], blob["train_labels"])
    return Data(train, test, list(blob["classes"]), source=str(blob["source"]), cache=f"reused {path}")


def load_image_folder_cached(
    path: Path, workers: int | None = None, background: bool = False, stream: bool = False
) -> Data:
    """Decode once, then reuse the uint8 tensors on later runs until the data's files change.

    With ``background`` the cache file is written by a thread while training starts (the process still waits
    for it before exiting), which takes the write off a cold run's clock. With ``stream`` a cold load returns
    before decoding (see `fastload.Decoding`); the cache is written once the decoding is over.
    """
    if not path.exists():
        return load_image_folder(path, workers)  # raises the clear error
    candidates = fastload.cache_path_for(path)
    found = fastload.read_cache(candidates)
    if found is not None:
        return _from_cache(*found)
    data = open_image_folder(path) if stream else load_image_folder(path, workers)
    if data.decoding is not None:
        # the labels of the whole archive, as the cache stores them (the caller may split ``data`` later)
        train_labels, test = data.train.labels, data.test

        def write(done: Decoding) -> None:
            full_test = Split(done.full["test"], test.labels) if test is not None else None
            whole = Data(Split(done.full["train"], train_labels), full_test, data.classes, data.source)
            fastload.write_cache(candidates, _cache_blob(whole), path.name)

        fastload.write_cache_once_decoded(data.decoding, write)
        data.cache = f"building {candidates[0].parent} cache once decoded"
    elif background:
        fastload.write_cache_in_background(candidates, _cache_blob(data), path.name)
        data.cache = f"building {candidates[0].parent} cache in the background"
    else:
        data.cache = fastload.write_cache(candidates, _cache_blob(data), path.name)
    return data


# ------------------------------------------------------------------------------------------------ CIFAR-10


def load_cifar10(root: Path) -> Data:
    """torchvision's CIFAR-10, downloaded the first time, as uint8 tensors."""
    try:
        import torchvision
    except ImportError as exc:
        raise DataError(
            "--data cifar10 needs torchvision to download CIFAR-10, and it is not installed. Install it "
            "(pip install torchvision) or pass --data PATH to train/<class>/*.jpg or a .tar.gz of it."
        ) from exc
    try:
        sets = [torchvision.datasets.CIFAR10(str(root), train=t, download=True) for t in (True, False)]
    except Exception as exc:  # URLError, OSError, checksum errors...
        raise DataError(
            f"could not get CIFAR-10 into {root}: {exc}. It downloads from the internet the first time; when "
            "offline, pass --data PATH to train/<class>/*.jpg or a .tar.gz of it, or --data synthetic."
        ) from exc

    def split(ds: object) -> Split:
        arr = torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2).contiguous()  # type: ignore[attr-defined]
        return Split(arr, torch.tensor(ds.targets, dtype=torch.long))  # type: ignore[attr-defined]

    return Data(split(sets[0]), split(sets[1]), list(sets[0].classes), source="cifar10")


# ------------------------------------------------------------------------------------------------ entry point


def holdout_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) indices, sorted; the same for the same n, fraction and seed."""
    if not 0 < fraction < 1:
        raise DataError(f"--holdout must be between 0 and 1 (exclusive), got {fraction}.")
    k = max(1, round(n * fraction))
    if k >= n:
        raise DataError(f"--holdout {fraction} leaves no training images out of {n}.")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[k:].sort().values, perm[:k].sort().values


def holdout_split(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """A deterministic (by seed) held-out part of the training images, for data without a test split."""
    train_idx, test_idx = holdout_indices(len(train), fraction, seed)
    return Split(train.images[train_idx], train.labels[train_idx]), Split(
        train.images[test_idx], train.labels[test_idx]
    )


def load_data(
    spec: str,
    *,
    data_root: str | Path | None = None,
    holdout: float | None = None,
    seed: int = 0,
    workers: int | None = None,
    cache: bool = True,
    background_cache: bool = False,
    stream: bool = False,
) -> Data:
    """Load a data source by name or path (see the module docstring) and make sure there is a test split.

    ``stream``: for an image folder or archive not yet cached, return before the images are decoded, with
    ``data.decoding`` to start and wait for (see `Decoding`); the caller must not read the pixels before that.
    """
    if spec == "synthetic" or spec.startswith("synthetic:"):
        try:
            n = int(spec.split(":", 1)[1]) if ":" in spec else 2000
        except ValueError as exc:
            raise DataError(f"--data {spec}: expected synthetic or synthetic:N with N a number of images.") from exc
        if n < 20:
            raise DataError(f"--data {spec}: use at least 20 synthetic images.")
        data = synthetic(n, max(10, n // 4))
    elif spec == "cifar10":
        root = Path(data_root) if data_root else Path(os.environ.get("CIFARLAB_DATA_ROOT", "data"))
        data = load_cifar10(root.expanduser())
    else:
        path = Path(spec).expanduser()
        if cache:
            data = load_image_folder_cached(path, workers, background=background_cache, stream=stream)
        elif stream:
            data = open_image_folder(path)
        else:
            data = load_image_folder(path, workers)
    if holdout or data.test is None:
        fraction = holdout or 0.1
        if data.test is None and not holdout:
            data.note = f"no test/ split in {data.source}: holding out {fraction:.0%} of train/ (--holdout)"
        if data.decoding is not None:  # nothing decoded yet: the split is made of rows still to come
            train_idx, test_idx = holdout_indices(len(data.train), fraction, seed)
            labels = data.train.labels
            data.train = Split(data.decoding.target("train", "train", train_idx), labels[train_idx])
            data.test = Split(data.decoding.target("test", "train", test_idx), labels[test_idx])
        else:
            data.train, data.test = holdout_split(data.train, fraction, seed)
    return data
