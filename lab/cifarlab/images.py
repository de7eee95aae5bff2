"""Images in memory: the uint8 `Split` every data source becomes, and the decoders that fill it.

Every source ends as one uint8 tensor (N, 3, 32, 32) plus int64 labels, decoded once; training then slices
batches from memory with no per-image Python work. torchvision's libjpeg-turbo decodes JPEGs when it is
installed (about 4x faster than Pillow); Pillow decodes everything else.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SIZE = 32  # CIFAR-10 images are 32x32; other sizes are resized on decoding


@dataclass
class Split:
    """One part of a data set (train or test) as tensors."""

    images: torch.Tensor  # uint8, (N, 3, 32, 32)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _decode(blob: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as opened:
        im = opened.convert("RGB")
        if im.size != (SIZE, SIZE):
            im = im.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8)


def decode_many(blobs: list[bytes]) -> np.ndarray:
    """Pillow, one image after the other: the decoder that reads every format."""
    return np.stack([_decode(b) for b in blobs]) if blobs else np.zeros((0, SIZE, SIZE, 3), np.uint8)


@functools.cache
def torchvision_decoder() -> bool:
    """Whether torchvision's libjpeg-turbo decoder can be used here."""
    try:
        with warnings.catch_warnings():  # newer torchvision announces a move of its decoders; they still work
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_jpeg  # noqa: F401
    except Exception:  # torchvision is optional (absent in the lab image) or built without image support
        return False
    return True


def decode_jpegs_torchvision(blobs: list[bytes], all_cores: bool = True) -> torch.Tensor | None:
    """libjpeg-turbo through torchvision, ~4x faster than PIL per image; None when it cannot do them all.

    ``all_cores``: decode the batch on every core for the duration of the call (not from a background thread,
    where the process-wide thread setting of the trainer must stay as it is).
    """
    if not torchvision_decoder():
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
    fast = decode_jpegs_torchvision(blobs)
    if fast is not None:
        return fast
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(blobs) < 2000:
        arr = decode_many(blobs)
    else:
        chunk = (len(blobs) + workers * 4 - 1) // (workers * 4)
        parts = [blobs[i : i + chunk] for i in range(0, len(blobs), chunk)]
        with ProcessPoolExecutor(workers) as pool:
            arr = np.concatenate(list(pool.map(decode_many, parts)))
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def split_of(parts: list[str]) -> tuple[str, str] | None:
    """('train'|'test', class) for a path like ``[prefix/]train/<class>/<file>``; None for anything else."""
    if len(parts) < 3 or not parts[-1].lower().endswith(IMAGE_SUFFIXES) or parts[-1].startswith("."):
        return None
    split, cls = parts[-3], parts[-2]
    return (split, cls) if split in ("train", "test") else None
