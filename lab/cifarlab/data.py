"""Data: every source becomes one uint8 tensor (N, 3, 32, 32) in memory, decoded once.

Sources
- ``cifar10``: torchvision's CIFAR-10 (downloaded into ``data_root`` when online; torchvision is imported only here).
- a directory or a ``.tar``/``.tar.gz`` holding ``train/<class>/*.jpg`` (and optionally ``test/<class>/*.jpg``),
  read straight from the archive, never unpacked to disk.
- ``synthetic`` or ``synthetic:N``: N small class-dependent patterns with noise, learnable in a few steps (tests).

Training then slices batches from memory; there is no per-image Python work once the tensor exists.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import mmap
import multiprocessing
import os
import sys
import tarfile
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SIZE = 32


class LabError(Exception):
    """A failure the user can fix; the command line prints its message (no traceback) and exits non-zero."""


class DataError(LabError):
    """A dataset that is missing or not in the expected shape; the message names the path and the layout."""


@dataclass
class Split:
    images: torch.Tensor  # uint8, (N, 3, 32, 32)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Data:
    train: Split
    test: Split | None
    classes: list[str]
    source: str
    note: str = ""
    cache: str = ""
    decoding: Decoding | None = None  # set while the images are still being decoded in the background


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


def _decode(blob: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as opened:
        im = opened.convert("RGB")
        if im.size != (SIZE, SIZE):
            im = im.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8)


def _decode_many(blobs: list[bytes]) -> np.ndarray:
    return np.stack([_decode(b) for b in blobs]) if blobs else np.zeros((0, SIZE, SIZE, 3), np.uint8)


@functools.cache
def _torchvision_decoder() -> bool:
    """Whether torchvision's libjpeg-turbo decoder can be used here."""
    try:
        with warnings.catch_warnings():  # newer torchvision announces a move of its decoders; they still work
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_jpeg  # noqa: F401
    except Exception:  # torchvision is optional (absent in the lab image) or built without image support
        return False
    return True


def _decode_jpegs_torchvision(blobs: list[bytes], all_cores: bool = True) -> torch.Tensor | None:
    """libjpeg-turbo through torchvision, ~4x faster than PIL per image; None when it cannot do them all.

    ``all_cores``: decode the batch on every core for the duration of the call (not from a background thread,
    where the process-wide thread setting of the trainer must stay as it is).
    """
    if not _torchvision_decoder():
        return None
    from torchvision.io import ImageReadMode, decode_jpeg

    if not all(b[:2] == b"\xff\xd8" for b in blobs):
        return None
    try:
        # bytearray: a writable buffer, so torch does not warn about sharing read-only memory
        tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
        threads = torch.get_num_threads()
        if all_cores:
            torch.set_num_threads(max(threads, os.cpu_count() or 1))  # a batch decodes in parallel: use every core
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                out = decode_jpeg(tensors, mode=ImageReadMode.RGB)
        finally:
            if all_cores:
                torch.set_num_threads(threads)
    except Exception:
        return None
    if any(t.shape != (3, SIZE, SIZE) for t in out):
        return None
    return torch.stack(out)


def decode_images(blobs: list[bytes], workers: int | None = None) -> torch.Tensor:
    """Decode encoded images to (N, 3, 32, 32) uint8: torchvision's decoder if present, else PIL in processes."""
    if not blobs:
        return torch.zeros(0, 3, SIZE, SIZE, dtype=torch.uint8)
    fast = _decode_jpegs_torchvision(blobs)
    if fast is not None:
        return fast
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(blobs) < 2000:
        arr = _decode_many(blobs)
    else:
        chunk = (len(blobs) + workers * 4 - 1) // (workers * 4)
        parts = [blobs[i : i + chunk] for i in range(0, len(blobs), chunk)]
        with ProcessPoolExecutor(workers) as pool:
            arr = np.concatenate(list(pool.map(_decode_many, parts)))
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def _split_of(parts: list[str]) -> tuple[str, str] | None:
    """('train'|'test', class) for a path like ``[prefix/]train/<class>/<file>``; None for anything else."""
    if len(parts) < 3 or not parts[-1].lower().endswith(IMAGE_SUFFIXES) or parts[-1].startswith("."):
        return None
    split, cls = parts[-3], parts[-2]
    return (split, cls) if split in ("train", "test") else None


def _walk_directory(root: Path) -> Iterator[tuple[str, str, bytes]]:
    for split in ("train", "test"):
        base = root / split
        if not base.is_dir():
            continue
        for cls_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            for f in sorted(cls_dir.iterdir()):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    yield split, cls_dir.name, f.read_bytes()


def _walk_tar(path: Path) -> Iterator[tuple[str, str, bytes]]:
    try:
        fast = _read_plain_tar(path)
        if fast is not None:
            yield from fast
            return
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                where = _split_of(member.name.replace("\\", "/").strip("/").split("/"))
                if where is None:
                    continue
                fh = tar.extractfile(member)
                if fh is not None:
                    yield where[0], where[1], fh.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read the archive {path}: {exc}. Expected a readable .tar or .tar.gz.") from exc


def _read_plain_tar(path: Path) -> list[tuple[str, str, bytes]] | None:
    """Walk ustar headers in memory (10x faster than tarfile for 50,000 tiny members).

    Returns None for anything but plain files and folders (long names, pax headers, other compressions), which
    the tarfile module then reads instead.
    """
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    elif raw[:3] == b"BZh" or raw[:6] == b"\xfd7zXZ\x00":
        return None
    view = memoryview(raw)
    out: list[tuple[str, str, bytes]] = []
    pos = 0
    while pos + 512 <= len(raw):
        header = raw[pos : pos + 512]
        if header == b"\0" * 512:
            break
        if header[257:262] != b"ustar":
            return None
        kind = header[156:157]
        size = int(header[124:136].rstrip(b"\0 ").decode() or "0", 8)
        if kind not in (b"0", b"\0", b"5"):
            return None
        name = header[0:100].split(b"\0", 1)[0].decode()
        prefix = header[345:500].split(b"\0", 1)[0].decode()
        if prefix:
            name = f"{prefix}/{name}"
        start = pos + 512
        if kind != b"5":
            where = _split_of(name.strip("/").split("/"))
            if where is not None:
                out.append((where[0], where[1], bytes(view[start : start + size])))
        pos = start + (size + 511) // 512 * 512
    return out


def _read_image_folder(path: Path) -> tuple[dict[str, list[bytes]], dict[str, torch.Tensor], list[str]]:
    """The encoded images and labels of each part (train, test) of a folder or archive, checked, not decoded."""
    if not path.exists():
        raise DataError(
            f"the dataset {path} does not exist. Expected a directory or a .tar/.tar.gz containing "
            "train/<class>/*.jpg (and optionally test/<class>/*.jpg)."
        )
    items: Iterable[tuple[str, str, bytes]] = _walk_directory(path) if path.is_dir() else _walk_tar(path)
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


# ------------------------------------------------------------------------------------------------ decoding ahead


def _shared_images(n: int) -> torch.Tensor:
    """An uninitialised (n, 3, 32, 32) uint8 tensor in anonymous shared memory: a forked child's writes show here."""
    nbytes = n * 3 * SIZE * SIZE
    if nbytes == 0:
        return torch.empty(0, 3, SIZE, SIZE, dtype=torch.uint8)
    buf = mmap.mmap(-1, nbytes)  # MAP_SHARED | MAP_ANONYMOUS
    return torch.frombuffer(buf, dtype=torch.uint8).view(n, 3, SIZE, SIZE)


def _decode_chunk(blobs: list[bytes]) -> torch.Tensor:
    images = _decode_jpegs_torchvision(blobs, all_cores=False)
    if images is None:
        images = torch.from_numpy(_decode_many(blobs)).permute(0, 3, 1, 2)
    return images


Plan = list[tuple[str | None, str, torch.Tensor]]  # (split whose progress it advances, archive part, its rows)


class Decoding:
    """Decodes a data set's images in the background, in the order a training loop will read them.

    ``open_image_folder`` returns a `Data` whose image tensors are allocated but not yet filled, with one of these
    as ``data.decoding``. The trainer calls ``start(first)`` with its first epoch's order of the training rows; the
    training images are then decoded in exactly that order, chunk by chunk, then the held-out ones, then whatever
    else the archive holds (for the cache). ``wait(split, rows)`` blocks until the first ``rows`` rows of that
    order are in (all of the split's rows when ``rows`` is None), so training starts on the first chunk while the
    rest decodes on the core that the trainer leaves free. The pixels are exactly those of `load_image_folder`;
    only the moment they arrive differs.

    On Linux the decoding runs in a forked process that writes into shared memory (decoding in a thread of the
    training process would fight it for the GIL: each image costs some Python); elsewhere in a thread. That process
    also writes the cache (``on_done``), but only after `release` (the trainer calls it when it no longer needs
    the cores; `join` and the end of the program do too), so that serialising it does not slow training.
    """

    def __init__(self, blobs: dict[str, list[bytes]], source: str, chunk: int = 1024, process: bool | None = None):
        self.blobs = blobs
        self.source = source
        self.chunk = chunk
        self.process = sys.platform.startswith("linux") if process is None else process
        # every part decoded in full, in archive order (what the cache stores)
        self.full = {part: self._alloc(len(b)) for part, b in blobs.items()}
        # split name -> (archive part, rows of that part, the split's own image tensor)
        self.targets: dict[str, tuple[str, torch.Tensor, torch.Tensor]] = {}
        self.on_done: Callable[[Decoding], object] | None = None
        self.done_s: float | None = None  # seconds the whole decode took, once it is over
        self._progress: dict[str, int] = {}
        self._error: str | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._write_now: Any = None  # a process Event: the trainer no longer needs the second core

    def _alloc(self, n: int) -> torch.Tensor:
        return _shared_images(n) if self.process else torch.empty(n, 3, SIZE, SIZE, dtype=torch.uint8)

    def target(self, split: str, part: str, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The (not yet filled) image tensor of ``split``, made of ``rows`` (default: all) of archive ``part``."""
        if self._thread is not None:
            raise RuntimeError("the decoding has started; its splits are fixed")
        rows = torch.arange(len(self.blobs[part])) if rows is None else rows
        images = self._alloc(len(rows))
        self.targets[split] = (part, rows, images)
        return images

    def start(self, first: torch.Tensor | None = None, split: str = "train") -> None:
        """Begin in the background, with the rows of ``split`` in the order ``first`` (default: in order)."""
        if self._thread is not None:
            return
        plan: Plan = []
        covered = {part: torch.zeros(len(b), dtype=torch.bool) for part, b in self.blobs.items()}
        names = [split] + [s for s in self.targets if s != split] if split in self.targets else list(self.targets)
        for name in names:
            part, rows, _ = self.targets[name]
            if name == split and first is not None:
                rows = rows[first]
            fresh = rows[~covered[part][rows]]
            covered[part][rows] = True
            plan.append((name, part, fresh))
        for part, seen in covered.items():
            if not bool(seen.all()):
                plan.append((None, part, (~seen).nonzero().flatten()))
        self._progress = {name: 0 for name in self.targets}
        t0 = time.time()
        if self.process:
            ctx = multiprocessing.get_context("fork")
            receiver, sender = ctx.Pipe(duplex=False)
            self._write_now = ctx.Event()
            child = ctx.Process(target=self._child, args=(plan, sender), name="cifarlab-decode", daemon=True)
            child.start()
            sender.close()
            self._thread = threading.Thread(target=self._relay, args=(receiver, child, t0), name="cifarlab-decode")
        else:
            self._thread = threading.Thread(target=self._in_thread, args=(plan, t0), name="cifarlab-decode")
        self._thread.start()

    def _decode(self, plan: Plan, report: Callable[[str | None, int], None]) -> None:
        """Decode the plan chunk by chunk into the full tensors and every split that uses the rows."""
        positions = {}
        for name, (part, rows, _) in self.targets.items():
            pos = torch.full((len(self.blobs[part]),), -1, dtype=torch.long)
            pos[rows] = torch.arange(len(rows))
            positions[name] = pos
        for split, part, rows in plan:
            for lo in range(0, len(rows), self.chunk):
                idx = rows[lo : lo + self.chunk]
                images = _decode_chunk([self.blobs[part][int(i)] for i in idx])
                self.full[part][idx] = images
                for name, (p, _, out) in self.targets.items():
                    if p == part:
                        where = positions[name][idx]
                        keep = where >= 0
                        out[where[keep]] = images[keep]
                report(split, len(idx))

    def _child(self, plan: Plan, sender: Any) -> None:
        torch.set_num_threads(1)  # one core for the decoding; the trainer has the other(s)
        try:
            self._decode(plan, lambda name, n: sender.send((name, n)) if name is not None else None)
            sender.send(("decoded", 0))
            if self.on_done is not None:  # the cache write, too, stays off the trainer's core: once it is done
                self._write_now.wait()
                self.on_done(self)
            sender.send(("done", 0))
        except BaseException as exc:
            sender.send(("error", f"{type(exc).__name__}: {exc}"))
        finally:
            sender.close()

    def _relay(self, receiver: Any, child: Any, t0: float) -> None:
        try:
            while True:
                try:
                    name, n = receiver.recv()
                except EOFError:
                    name, n = "error", "the decoding process ended early"
                if name == "decoded":
                    self._decoded(t0)
                    while not self._write_now.wait(0.2):  # until `release`, or the program ends
                        if not threading.main_thread().is_alive():
                            self._write_now.set()
                elif name == "done":
                    break
                elif name == "error":
                    self._fail(str(n))
                    return
                else:
                    with self._cond:
                        self._progress[name] += n
                        self._cond.notify_all()
        finally:
            receiver.close()
            child.join()
        self.blobs, self.full = {}, {}  # the splits keep their own tensors

    def _in_thread(self, plan: Plan, t0: float) -> None:
        def report(name: str | None, n: int) -> None:
            if name is not None:
                with self._cond:
                    self._progress[name] += n
                    self._cond.notify_all()

        try:
            self._decode(plan, report)
        except Exception as exc:
            self._fail(f"{type(exc).__name__}: {exc}")
            return
        self._decoded(t0)
        if self.on_done is not None:
            self.on_done(self)
        self.blobs, self.full = {}, {}

    def _fail(self, error: str) -> None:
        with self._cond:
            self._error = error
            self._cond.notify_all()

    def _decoded(self, t0: float) -> None:
        self.done_s = time.time() - t0
        with self._cond:
            self._progress = {name: len(rows) for name, (_, rows, _) in self.targets.items()}
            self._cond.notify_all()

    def wait(self, split: str, rows: int | None = None) -> None:
        """Block until ``split``'s first ``rows`` rows (in the started order; None: all of them) are decoded."""
        if self._thread is None:
            self.start()
        total = len(self.targets[split][1])
        need = total if rows is None else min(rows, total)
        with self._cond:
            while self._progress.get(split, 0) < need and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise DataError(f"an image in {self.source} could not be decoded: {self._error}")

    def release(self) -> None:
        """Let the decoding process write the cache now (it waits for this, or for the program's end)."""
        if self._write_now is not None:
            self._write_now.set()

    def join(self) -> None:
        """Wait for the decoding to end, including its cache write."""
        self.release()
        if self._thread is not None:
            self._thread.join()


DECODE_CHUNK = 1024  # images per step of a background decoding (about 40 ms of one core for CIFAR-10 JPEGs)


def open_image_folder(path: Path, process: bool | None = None) -> Data:
    """Like `load_image_folder`, but returns at once with ``data.decoding`` set: the pixels arrive in the background.

    ``process``: decode in a forked process (default on Linux) rather than a thread. A thread is only used with
    torchvision's decoder, which spends most of its time outside the GIL; without it (Pillow), and without a
    process, everything is decoded before returning, as `load_image_folder` does.
    """
    process = sys.platform.startswith("linux") if process is None else process
    if not process and not _torchvision_decoder():
        return load_image_folder(path)
    blobs, labels, classes = _read_image_folder(path)
    decoding = Decoding(blobs, str(path), chunk=DECODE_CHUNK, process=process)
    train = Split(decoding.target("train", "train"), labels["train"])
    test = Split(decoding.target("test", "test"), labels["test"]) if "test" in blobs else None
    return Data(train, test, classes, source=str(path), decoding=decoding)


# ------------------------------------------------------------------------------------------------ decoded cache

CACHE_VERSION = 1


def _fingerprint(path: Path) -> str:
    """Changes whenever the data changes: size and mtime of the archive, or of every file under a directory."""
    h = hashlib.sha256(f"cifarlab-cache-v{CACHE_VERSION}|{path.resolve()}".encode())
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            if f.is_file():
                st = f.stat()
                h.update(f"|{f.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}".encode())
    else:
        st = path.stat()
        h.update(f"|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def cache_dirs(path: Path) -> list[Path]:
    """Where a cache may live: $CIFARLAB_CACHE_DIR if set; else next to the data, then the user's cache dir."""
    override = os.environ.get("CIFARLAB_CACHE_DIR")
    if override:
        return [Path(override).expanduser()]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cifarlab"
    parent = path.resolve().parent
    return [parent, base] if _writable(parent) else [base]


def _writable(folder: Path) -> bool:
    """Writable by us and meant to be written: a folder without write bits counts as read-only, even for root."""
    try:
        return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)
    except OSError:
        return False


def cache_path_for(path: Path) -> list[Path]:
    name = f"{path.name}.cache-{_fingerprint(path)}.pt"
    return [d / name for d in cache_dirs(path)]


def _read_cache(candidates: list[Path]) -> Data | None:
    for c in candidates:
        if c.is_file():
            try:
                blob = torch.load(c, map_location="cpu", weights_only=True)
                test = Split(blob["test_images"], blob["test_labels"]) if "test_images" in blob else None
                return Data(
                    Split(blob["train_images"], blob["train_labels"]),
                    test,
                    list(blob["classes"]),
                    source=str(blob["source"]),
                    cache=f"reused {c}",
                )
            except Exception:  # a torn or foreign file: rebuild it
                continue
    return None


def _write_cache(candidates: list[Path], data: Data, prefix: str) -> str:
    blob: dict[str, object] = {
        "train_images": data.train.images,
        "train_labels": data.train.labels,
        "classes": data.classes,
        "source": data.source,
    }
    if data.test is not None:
        blob.update(test_images=data.test.images, test_labels=data.test.labels)
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


_WRITERS: list[threading.Thread] = []
_DECODINGS: list[Decoding] = []


def wait_for_cache_writes() -> None:
    """Block until caches being written in the background (also by a decoding still under way) are on disk."""
    while _WRITERS:
        _WRITERS.pop().join()
    while _DECODINGS:
        _DECODINGS.pop().join()


def load_image_folder_cached(
    path: Path, workers: int | None = None, background: bool = False, stream: bool = False
) -> Data:
    """Decode once, then reuse the uint8 tensors on later runs until the data's files change.

    With ``background`` the cache file is written by a thread while training starts (the process still waits
    for it before exiting), which takes the write off a cold run's clock. With ``stream`` a cold load returns
    before decoding (see `Decoding`); the cache is written once the decoding is over.
    """
    if not path.exists():
        return load_image_folder(path, workers)  # raises the clear error
    candidates = cache_path_for(path)
    data = _read_cache(candidates)
    if data is not None:
        return data
    if stream:
        data = open_image_folder(path)
        decoding = data.decoding
        if decoding is not None:
            # the labels of the whole archive, as the cache stores them (the caller may split ``data`` later)
            train_labels = data.train.labels
            test_labels = data.test.labels if data.test is not None else None
            classes, source = data.classes, data.source

            def write(done: Decoding) -> None:
                test = Split(done.full["test"], test_labels) if test_labels is not None else None
                _write_cache(
                    candidates, Data(Split(done.full["train"], train_labels), test, classes, source), path.name
                )

            decoding.on_done = write
            _DECODINGS.append(decoding)
            data.cache = f"building {candidates[0].parent} cache once decoded"
            return data
    else:
        data = load_image_folder(path, workers)
    if background:
        writer = threading.Thread(target=_write_cache, args=(candidates, data, path.name), name="cifarlab-cache")
        writer.start()
        _WRITERS.append(writer)
        data.cache = f"building {candidates[0].parent} cache in the background"
    else:
        data.cache = _write_cache(candidates, data, path.name)
    return data


# ------------------------------------------------------------------------------------------------ CIFAR-10


def load_cifar10(root: Path) -> Data:
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
