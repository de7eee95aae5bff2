"""Data: every source becomes uint8 images (N, 3, 32, 32) and int64 labels in memory, decoded once.

Sources: ``cifar10`` (torchvision's, downloaded into ``data_root``); a directory or ``.tar``/``.tar.gz`` holding
``train/<class>/*.jpg`` (optionally ``test/<class>/*.jpg``), read in memory, decoded once and cached beside the data
(or in the user's cache directory) until its files change; ``synthetic[:N]``, learnable patterns for the tests.
Training slices batches from these tensors; `ImageDataset` hands them to a classic ``DataLoader``.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import importlib.util
import io
import multiprocessing
import os
import sys
import tarfile
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cifarlab.config import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SIZE = 32  # CIFAR-10 images are 32x32; other sizes are resized on decoding
CHUNK = 1024  # images per task of a decoding process (about 40 ms of one core for CIFAR-10 JPEGs)
CACHE_VERSION = 1
Rows = dict[str, tuple[str, "torch.Tensor | None"]]  # split -> (part of the folder it comes from, its rows; None: all)


@dataclass
class Split:
    images: torch.Tensor  # uint8, (N, 3, 32, 32)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def rows(self, rows: torch.Tensor | None) -> Split:
        return self if rows is None else Split(self.images[rows], self.labels[rows])


@dataclass
class Data:
    train: Split
    test: Split
    classes: list[str]
    source: str
    note: str = ""
    cache: str = ""  # what happened to the cache file, in words
    decoding: Decoding | None = None  # set while the images are still being decoded in the background

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> Data:
        """``n_train`` training and ``n_test`` test images drawn at random (None: all): folders list them by class."""
        if self.decoding is not None:
            raise DataError("the images are still being decoded; take a subset of fully loaded data.")
        train = self.train.rows(sample(len(self.train), n_train, seed))
        return Data(train, self.test.rows(sample(len(self.test), n_test, seed)), self.classes, self.source, self.note)

    def dataset(self, part: str, transform: Callable[[Any], Any] | None = None) -> ImageDataset:
        """The ``train`` or ``test`` images as a Dataset for a ``DataLoader``, with torchvision transforms."""
        return ImageDataset(self.train if part == "train" else self.test, self.classes, transform)


def sample(n: int, k: int | None, seed: int = 0) -> torch.Tensor:
    """``k`` of ``range(n)`` drawn at random (all of them when ``k`` is None or larger), in increasing order."""
    if k is None or k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


class ImageDataset(torch.utils.data.Dataset[tuple[Any, int]]):
    """A `Split` as a map-style Dataset of (PIL image, label), so torchvision transforms apply as to CIFAR10."""

    def __init__(self, split: Split, classes: list[str], transform: Callable[[Any], Any] | None = None) -> None:
        self.split, self.classes, self.transform = split, classes, transform  # classes: as torchvision's CIFAR10

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        image: Any = Image.fromarray(self.split.images[i].permute(1, 2, 0).numpy())
        return (self.transform(image) if self.transform else image), int(self.split.labels[i])


# ------------------------------------------------------------------------------------------------ entry point


def load_data(
    spec: str,
    *,
    data_root: str | Path | None = None,
    holdout: float | None = None,
    seed: int = 0,
    cache: bool = True,
    ahead: bool = False,
) -> Data:
    """Load a data source by name or path; without a test split, hold one out. ``ahead``: an image folder not yet
    cached returns before it is decoded, with ``data.decoding`` to start and wait for before reading pixels."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        try:
            n = int(spec.split(":", 1)[1]) if ":" in spec else 2000
        except ValueError as exc:
            raise DataError(f"--data {spec}: expected synthetic or synthetic:N with N a number of images.") from exc
        if n < 20:
            raise DataError(f"--data {spec}: use at least 20 synthetic images.")
        parts, classes, source = synthetic(n, max(10, n // 4)), [f"class{i}" for i in range(10)], f"synthetic:{n}"
        cached = ""
    elif spec == "cifar10":
        root = Path(data_root) if data_root else Path(os.environ.get("CIFARLAB_DATA_ROOT", "data"))
        (parts, classes), source, cached = load_cifar10(root.expanduser()), "cifar10", ""
    else:
        path = Path(spec).expanduser()
        found = read_cache(cache_paths(path)) if cache and path.exists() else None
        if found is None:
            return load_image_folder(path, holdout, seed, cache, ahead)
        blob, where = found
        parts = {p: Split(blob[f"{p}_images"], blob[f"{p}_labels"]) for p in ("train", "test") if f"{p}_images" in blob}
        classes, source, cached = list(blob["classes"]), str(blob["source"]), f"reused {where}"
    rows, note = split_rows({p: len(s) for p, s in parts.items()}, holdout, seed, source)
    train, test = (parts[part].rows(r) for part, r in rows.values())
    return Data(train, test, classes, source, note, cache=cached)


def split_rows(counts: dict[str, int], holdout: float | None, seed: int, source: str) -> tuple[Rows, str]:
    """Where the train and test splits come from: the ``test`` part if there is one and no ``--holdout``, else a
    held-out part of ``train`` (deterministic by seed); and a note when the holdout was not asked for."""
    if "test" in counts and not holdout:
        return {"train": ("train", None), "test": ("test", None)}, ""
    fraction = holdout or 0.1
    train, test = holdout_indices(counts["train"], fraction, seed)
    note = "" if holdout else f"no test/ split in {source}: holding out {fraction:.0%} of train/ (--holdout)"
    return {"train": ("train", train), "test": ("train", test)}, note


def holdout_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) indices, sorted; the same for the same n, fraction and seed."""
    if not 0 < fraction < 1:
        raise DataError(f"--holdout must be between 0 and 1 (exclusive), got {fraction}.")
    k = max(1, round(n * fraction))
    if k >= n:
        raise DataError(f"--holdout {fraction} leaves no training images out of {n}.")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[k:].sort().values, perm[:k].sort().values


def synthetic(n_train: int = 2000, n_test: int = 500, num_classes: int = 10, seed: int = 1234) -> dict[str, Split]:
    """Each class is a fixed smooth colour pattern; images are that pattern, shifted a little, plus noise."""
    g = torch.Generator().manual_seed(seed)
    base = (torch.rand(num_classes, 3, 4, 4, generator=g) > 0.5).float()
    patterns = torch.nn.functional.interpolate(base, size=(SIZE + 8, SIZE + 8), mode="bilinear", align_corners=False)

    def make(n: int) -> Split:
        labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
        dx, dy = torch.randint(0, 9, (2, n), generator=g)
        rows, cols = dy[:, None] + torch.arange(SIZE), dx[:, None] + torch.arange(SIZE)
        imgs = patterns[labels][torch.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
        imgs = imgs.permute(0, 3, 1, 2) * 0.7 + 0.3 * torch.rand(n, 3, SIZE, SIZE, generator=g)
        return Split((imgs * 255).round().clamp(0, 255).to(torch.uint8), labels.long())

    return {"train": make(n_train), "test": make(n_test)}


def load_cifar10(root: Path) -> tuple[dict[str, Split], list[str]]:
    """torchvision's CIFAR-10, downloaded the first time, as uint8 tensors."""
    try:
        import torchvision
    except ImportError as exc:
        raise DataError(
            "--data cifar10 needs torchvision to download CIFAR-10, and it is not installed. Install it "
            "(pip install torchvision) or pass --data PATH to train/<class>/*.jpg or a .tar.gz of it."
        ) from exc
    try:
        sets = {
            p: torchvision.datasets.CIFAR10(str(root), train=p == "train", download=True) for p in ("train", "test")
        }
    except Exception as exc:  # URLError, OSError, checksum errors...
        raise DataError(
            f"could not get CIFAR-10 into {root}: {exc}. It downloads from the internet the first time; when "
            "offline, pass --data PATH to train/<class>/*.jpg or a .tar.gz of it, or --data synthetic."
        ) from exc
    parts = {
        p: Split(torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets))
        for p, ds in sets.items()
    }
    return parts, list(sets["train"].classes)


# ------------------------------------------------------------------------------------------------ image folders


def load_image_folder(path: Path, holdout: float | None, seed: int, cache: bool = True, ahead: bool = False) -> Data:
    """An image folder or archive, read and decoded (in the background with ``ahead``), then cached."""
    candidates = cache_paths(path) if cache and path.exists() else []
    blobs, labels, classes = read_image_folder(path)
    rows, note = split_rows({p: len(b) for p, b in blobs.items()}, holdout, seed, str(path))
    ahead = ahead and sys.platform.startswith("linux")  # where forking a process that runs torch is safe
    decoding = Decoding(blobs, rows, str(path), workers=1 if ahead else min(8, os.cpu_count() or 1))
    split = {name: Split(decoding.images[name], labels[part][decoding.rows[name]]) for name, (part, _) in rows.items()}
    data = Data(split["train"], split["test"], classes, str(path), note, decoding=decoding)
    if candidates:
        data.cache = f"building {candidates[0].parent} cache once decoded"

        def write() -> None:  # the whole folder, as decoded, before any holdout
            whole: dict[str, object] = {"classes": classes, "source": str(path)}
            for part, blob_list in blobs.items():
                images = torch.empty(len(blob_list), 3, SIZE, SIZE, dtype=torch.uint8)
                for name in (name for name, (p, _) in rows.items() if p == part):
                    images[decoding.rows[name]] = split[name].images
                whole.update({f"{part}_images": images, f"{part}_labels": labels[part]})
            data.cache = write_cache(candidates, whole, path.name)

        decoding.then = write
    if not ahead:
        decoding.finish()
        data.decoding = None
    return data


def read_image_folder(path: Path) -> tuple[dict[str, list[bytes]], dict[str, torch.Tensor], list[str]]:
    """The encoded images and the labels of each part (train, test) of a folder or archive, checked."""
    if not path.exists():
        raise DataError(
            f"the dataset {path} does not exist. Expected a directory or a .tar/.tar.gz containing "
            "train/<class>/*.jpg (and optionally test/<class>/*.jpg)."
        )
    blobs: dict[str, list[bytes]] = {"train": [], "test": []}
    names: dict[str, list[str]] = {"train": [], "test": []}
    files = [(str(f.relative_to(path)), f.read_bytes()) for f in sorted(path.glob("*/*/*")) if f.is_file()]
    for name, blob in files if path.is_dir() else read_tar(path):
        parts = name.replace("\\", "/").strip("/").split("/")
        image = parts[-1].lower().endswith(IMAGE_SUFFIXES) and not parts[-1].startswith(".")
        if len(parts) >= 3 and parts[-3] in blobs and image:
            blobs[parts[-3]].append(blob)
            names[parts[-3]].append(parts[-2])
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
    labels = {p: torch.tensor([index[c] for c in names[p]], dtype=torch.long) for p in blobs if blobs[p]}
    return {p: b for p, b in blobs.items() if b}, labels, classes


def read_tar(path: Path) -> list[tuple[str, bytes]]:
    """(member name, its bytes) for every file of a .tar or .tar.gz, read in memory."""
    try:
        raw = path.read_bytes()
        raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        # Walking the ustar headers here reads the lab-speed benchmark's 50,000 images in 0.8 s, decompression
        # included; tarfile took 2.3 s: 1.5 s of the cold run's 8.0 s (benchmarks/RESULTS.md). It reads the rest.
        pos, out = 0, []
        while raw[pos + 257 : pos + 262] == b"ustar" and raw[pos + 156 : pos + 157] in b"05\0":
            size, start = int(raw[pos + 124 : pos + 136].rstrip(b"\0 ") or b"0", 8), pos + 512
            prefix, name = (raw[pos + a : pos + b].split(b"\0", 1)[0].decode() for a, b in ((345, 500), (0, 100)))
            out.append((f"{prefix}/{name}" if prefix else name, raw[start : start + size]))
            pos = start + (size + 511) // 512 * 512
        if raw[pos : pos + 512].strip(b"\0") == b"":
            return out
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:  # pax headers, long names, bzip2, xz
            return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as exc:
        raise DataError(f"cannot read the archive {path}: {exc}. Expected a readable .tar or .tar.gz.") from exc


# ------------------------------------------------------------------------------------------------ decoding


def decode_images(blobs: list[bytes]) -> torch.Tensor:
    """Encoded images to (N, 3, 32, 32) uint8: JPEGs by torchvision's libjpeg-turbo (about 4x faster per image),
    Pillow for the rest and where torchvision is absent (the lab image)."""
    try:
        if blobs and all(b[:2] == b"\xff\xd8" for b in blobs):
            decode = jpeg_decoder()
            out = [decode(torch.frombuffer(bytearray(b), dtype=torch.uint8), 3, False) for b in blobs]  # 3: RGB
            if all(t.shape == (3, SIZE, SIZE) for t in out):
                return torch.stack(out)
    except Exception:  # torchvision missing or built without image support, an odd JPEG: Pillow decides
        pass
    from PIL import Image

    arrays = []
    for blob in blobs:
        with Image.open(io.BytesIO(blob)) as opened:
            im = opened.convert("RGB")
            arrays.append(np.asarray(im if im.size == (SIZE, SIZE) else im.resize((SIZE, SIZE)), dtype=np.uint8))
    images = np.stack(arrays) if arrays else np.zeros((0, SIZE, SIZE, 3), np.uint8)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


@functools.cache
def jpeg_decoder() -> Callable[..., torch.Tensor]:
    """torchvision's JPEG decoder, its library loaded without importing torchvision: 0.01 s instead of the
    1-2 s that importing it takes (torch._dynamo among its imports), on the clock of every cold run."""
    spec = importlib.util.find_spec("torchvision")
    assert spec is not None and spec.origin is not None
    libraries = (f for f in Path(spec.origin).parent.glob("image*") if f.suffix in (".so", ".pyd", ".dylib"))
    torch.ops.load_library(str(next(libraries)))
    return torch.ops.image.decode_jpeg


_BLOBS: dict[str, list[bytes]] = {}  # the folder's encoded images, which a forked decoding process inherits


def _decode_rows(part: str, rows: list[int]) -> np.ndarray:
    return decode_images([_BLOBS[part][i] for i in rows]).numpy()


class Decoding:
    """Decodes a folder's images in forked processes (where there is fork), chunk by chunk, in the order
    ``start(first)`` gives (the first epoch's), so that training begins on the first chunk while one process
    decodes the rest on a core the trainer leaves free. The tutorial's cold run then takes 16 s less to its
    accuracy than after decoding first, on the loaded 2-core machine (benchmarks/RESULTS.md). The pixels are a
    plain loader's (tested). ``then`` runs once all are in (the cache write, deferred by the trainer to its end)."""

    def __init__(self, blobs: dict[str, list[bytes]], rows: Rows, source: str, workers: int) -> None:
        self.blobs, self.source, self.workers = blobs, source, workers
        self.rows = {name: torch.arange(len(blobs[p])) if r is None else r for name, (p, r) in rows.items()}
        self.parts = {name: p for name, (p, _) in rows.items()}
        self.images = {name: torch.empty(len(r), 3, SIZE, SIZE, dtype=torch.uint8) for name, r in self.rows.items()}
        self.chunks: dict[str, list[tuple[torch.Tensor, list[int], Future[np.ndarray] | None]]] | None = None
        self.then: Callable[[], None] | None = None
        self.done_s: float | None = None  # seconds from the start to the last image decoded
        self.pool: ProcessPoolExecutor | None = None

    def start(self, first: torch.Tensor | None = None) -> None:
        """Begin with the training rows in the order ``first`` (positions in the split; default: in order)."""
        global _BLOBS
        if self.chunks is not None:
            return
        orders = {
            name: (first if name == "train" and first is not None else torch.arange(len(rows))).split(CHUNK)
            for name, rows in self.rows.items()
        }
        self.t0, self.threads, self.left = time.time(), torch.get_num_threads(), sum(map(len, orders.values()))
        _BLOBS = self.blobs  # a forked process inherits them: only row numbers travel to it
        if self.workers and sys.platform.startswith("linux"):
            fork = multiprocessing.get_context("fork")
            self.pool = ProcessPoolExecutor(self.workers, fork, initializer=torch.set_num_threads, initargs=(1,))
            torch.set_num_threads(max(1, self.threads - self.workers))
        self.chunks = {name: [] for name in orders}
        for name, order in orders.items():
            for pos in order:
                rows = self.rows[name][pos].tolist()
                future = self.pool.submit(_decode_rows, self.parts[name], rows) if self.pool else None
                if future is not None:
                    future.add_done_callback(self._one_done)
                self.chunks[name].append((pos, rows, future))  # without a pool: decoded when waited for

    def _one_done(self, _: object) -> None:
        self.left -= 1  # only the pool's own thread calls this
        self.done_s = time.time() - self.t0 if self.left == 0 else None

    def wait(self, split: str, rows: int | None = None) -> None:
        """Block until ``split``'s first ``rows`` images (in the started order; None: all) are decoded."""
        self.start()
        assert self.chunks is not None
        need = len(self.rows[split]) if rows is None else rows
        chunks, got = self.chunks[split], len(self.rows[split]) - sum(len(c[0]) for c in self.chunks[split])
        while chunks and (got < need or (chunks[0][2] is not None and chunks[0][2].done())):
            pos, rows_of_chunk, future = chunks.pop(0)
            try:
                images = future.result() if future else _decode_rows(self.parts[split], rows_of_chunk)
            except Exception as exc:
                raise DataError(f"an image in {self.source} could not be decoded: {exc}") from exc
            self.images[split][pos] = torch.from_numpy(images)
            got += len(pos)
        if self.pool is not None and self.left == 0:
            self.close()  # the decoding's core is the trainer's again

    def finish(self) -> None:
        """Every image in, then ``then`` (the cache write); the processes end."""
        self.start()
        for split in self.rows:
            self.wait(split)
        self.done_s = self.done_s or time.time() - self.t0
        self.close()
        if self.then is not None:
            self.then()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)  # at most the chunk in hand: ~40 ms
            torch.set_num_threads(self.threads)
            self.pool = None


# ------------------------------------------------------------------------------------------------ decoded cache


def cache_paths(path: Path) -> list[Path]:
    """Where the cache file may be, best first: $CIFARLAB_CACHE_DIR; else beside the data when its folder is writable
    (and has write bits, even for root), then the user's cache directory. Its name changes with the data's files."""
    h = hashlib.sha256(f"cifarlab-cache-v{CACHE_VERSION}|{path.resolve()}".encode())
    for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if f.is_file():
            st = f.stat()
            h.update(f"|{f.relative_to(path) if path.is_dir() else ''}|{st.st_size}|{st.st_mtime_ns}".encode())
    name = f"{path.name}.cache-{h.hexdigest()[:16]}.pt"
    override = os.environ.get("CIFARLAB_CACHE_DIR")
    if override:
        return [Path(override).expanduser() / name]
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cifarlab"
    parent = path.resolve().parent
    with contextlib.suppress(OSError):
        if os.access(parent, os.W_OK) and parent.stat().st_mode & 0o222:
            return [parent / name, user / name]
    return [user / name]


def read_cache(candidates: list[Path]) -> tuple[dict[str, Any], Path] | None:
    """The first readable cache (its tensors by name, and its path); a torn or foreign file is skipped."""
    for c in candidates:
        with contextlib.suppress(Exception):  # a torn or foreign file: rebuild it
            blob = torch.load(c, map_location="cpu", weights_only=True)
            if isinstance(blob, dict) and blob.keys() >= {"train_images", "train_labels", "classes", "source"}:
                return blob, c
    return None


def write_cache(candidates: list[Path], blob: dict[str, object], prefix: str) -> str:
    """Atomically, to the first writable candidate; older caches of the same data are removed."""
    for c in candidates:
        tmp = c.with_name(f"{c.name}.{os.getpid()}.tmp")
        try:
            c.parent.mkdir(parents=True, exist_ok=True)
            torch.save(blob, tmp)
            os.replace(tmp, c)
        except OSError:  # a read-only data folder: try the next place
            with contextlib.suppress(OSError):
                tmp.unlink()
            continue
        for stale in c.parent.glob(f"{prefix}.cache-*.pt"):
            if stale != c:
                with contextlib.suppress(OSError):
                    stale.unlink()
        return f"built {c}"
    return "not cached (no writable cache directory)"
