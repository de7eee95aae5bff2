"""The speed machinery of loading: a fast tar reader, decoding ahead of training, and the decoded-image cache.

None of it changes a pixel; each earns its place in ``benchmarks/lab_speed.py``:

- `walk_tar` reads ustar headers in memory, 10x faster than the tarfile module for 50,000 tiny members.
- `Decoding` decodes in a background process in the order the first epoch reads the images, so that training
  starts on the first ones decoded instead of waiting for all of them.
- The cache keeps decoded images as a uint8 tensor file, keyed on the data's size and modification time, so a
  second run skips decoding altogether.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import mmap
import multiprocessing
import os
import sys
import tarfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from cifarlab.errors import DataError
from cifarlab.images import SIZE, decode_jpegs_torchvision, decode_many, split_of

# ------------------------------------------------------------------------------------------------ tar reader


def walk_tar(path: Path) -> Iterator[tuple[str, str, bytes]]:
    """(split, class, encoded image) for every ``[prefix/]train|test/<class>/<image>`` member of an archive."""
    try:
        fast = _read_plain_tar(path)
        if fast is not None:
            yield from fast
            return
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                where = split_of(member.name.replace("\\", "/").strip("/").split("/"))
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
            where = split_of(name.strip("/").split("/"))
            if where is not None:
                out.append((where[0], where[1], bytes(view[start : start + size])))
        pos = start + (size + 511) // 512 * 512
    return out


# ------------------------------------------------------------------------------------------------ decoding ahead

DECODE_CHUNK = 1024  # images per step of a background decoding (about 40 ms of one core for CIFAR-10 JPEGs)


def _shared_images(n: int) -> torch.Tensor:
    """An uninitialised (n, 3, 32, 32) uint8 tensor in anonymous shared memory: a forked child's writes show here."""
    nbytes = n * 3 * SIZE * SIZE
    if nbytes == 0:
        return torch.empty(0, 3, SIZE, SIZE, dtype=torch.uint8)
    buf = mmap.mmap(-1, nbytes)  # MAP_SHARED | MAP_ANONYMOUS
    return torch.frombuffer(buf, dtype=torch.uint8).view(n, 3, SIZE, SIZE)


def _decode_chunk(blobs: list[bytes]) -> torch.Tensor:
    """One chunk, on one thread: the trainer keeps the other cores."""
    images = decode_jpegs_torchvision(blobs, all_cores=False)
    if images is None:
        images = torch.from_numpy(decode_many(blobs)).permute(0, 3, 1, 2)
    return images


Plan = list[tuple[str | None, str, torch.Tensor]]  # (split whose progress it advances, archive part, its rows)


class Decoding:
    """Decodes a data set's images in the background, in the order a training loop will read them.

    `cifarlab.data.open_image_folder` returns a `Data` whose image tensors are allocated but not yet filled, with
    one of these as ``data.decoding``. The trainer calls ``start(first)`` with its first epoch's order of the
    training rows; the training images are then decoded in exactly that order, chunk by chunk, then the held-out
    ones, then whatever else the archive holds (for the cache). ``wait(split, rows)`` blocks until the first
    ``rows`` rows of that order are in (all of the split's rows when ``rows`` is None), so training starts on the
    first chunk while the rest decodes on the core that the trainer leaves free. The pixels are exactly those of
    `load_image_folder`; only the moment they arrive differs.

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
        if self.process and sys.platform != "win32":  # Windows has no fork: the thread below decodes there
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
        """The forked process: decode into shared memory, report progress, then write the cache when released."""
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
        """A thread of the trainer: turns the child's messages into progress that `wait` sees."""
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
        """Decoding without a process (not on Linux): torchvision's decoder releases the GIL."""

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


# ------------------------------------------------------------------------------------------------ decoded cache

CACHE_VERSION = 1
CACHE_KEYS = {"train_images", "train_labels", "classes", "source"}  # and test_images, test_labels if any


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
    """The cache file's possible paths, best first; its name changes with the data."""
    name = f"{path.name}.cache-{_fingerprint(path)}.pt"
    return [d / name for d in cache_dirs(path)]


def read_cache(candidates: list[Path]) -> tuple[dict[str, Any], Path] | None:
    """The first readable cache (its tensors by name, and its path); a torn or foreign file is skipped."""
    for c in candidates:
        if c.is_file():
            try:
                blob = torch.load(c, map_location="cpu", weights_only=True)
                if isinstance(blob, dict) and blob.keys() >= CACHE_KEYS:
                    return blob, c
            except Exception:  # a torn or foreign file: rebuild it
                continue
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


def write_cache_in_background(candidates: list[Path], blob: dict[str, object], prefix: str) -> None:
    """Write from a thread, so that training starts now; `wait_for_cache_writes` (and the program's end) waits."""
    writer = threading.Thread(target=write_cache, args=(candidates, blob, prefix), name="cifarlab-cache")
    writer.start()
    _WRITERS.append(writer)


def write_cache_once_decoded(decoding: Decoding, write: Callable[[Decoding], object]) -> None:
    """Have the decoding write the cache when it is done (see `Decoding.release`)."""
    decoding.on_done = write
    _DECODINGS.append(decoding)


_WRITERS: list[threading.Thread] = []
_DECODINGS: list[Decoding] = []


def wait_for_cache_writes() -> None:
    """Block until caches being written in the background (also by a decoding still under way) are on disk."""
    while _WRITERS:
        _WRITERS.pop().join()
    while _DECODINGS:
        _DECODINGS.pop().join()
