"""airbench94 and cifarlab's fast preset to one target accuracy on one clock, in one process (gpu_check.sh).

On CUDA the fast preset is airbench94's network and recipe (cifarlab.config.AIRBENCH). Both train on the same
images of the JPEG archive and are scored on the same ones held out (10%, seed 0). The training rows are shuffled
first: airbench computes its whitening from the first 5,000 rows it is given (cifarlab from 5,000 drawn at
random), and the archive lists its images class by class. The clock, the same for both: from the start of
training, after a warm-up in this process and with the images already in memory, to the trained weights; no
evaluation or checkpoint inside it. airbench's span also holds building its network, reading its test images and
its whitening; cifarlab's is its ``train_s``, which ends on a device synchronisation. The target is airbench94's
final accuracy on this split, or 93% when airbench cannot train; cifarlab's time is that of the shortest
schedule in ``--epochs``, tried in order, whose final accuracy meets it. Each result line goes to ``--summary``
as soon as it is known.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from cifarlab import Data, Split, TrainConfig, load_data, train

FALLBACK_TARGET = 0.93


def shuffled(data: Data, seed: int) -> Data:
    """The training rows in a random order, so that the first 5,000 are a random sample of every class."""
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
    data.train = Split(data.train.images[order], data.train.labels[order])
    return data


def airbench94(data: Data, folder: Path, cuda: bool, say: Callable[[str], None]) -> tuple[float, float] | None:
    """airbench94's final accuracy on ``data`` and its seconds, from one warm run; None without CUDA."""
    import airbench
    from airbench.lib_airbench94 import hyp

    files = folder / "cifar10"  # airbench reads cifar10/{train,test}.pt (uint8 N,32,32,3) from its working directory
    files.mkdir(parents=True, exist_ok=True)
    assert data.test is not None
    for name, split in (("train", data.train), ("test", data.test)):
        rows = split.images.permute(0, 2, 3, 1).contiguous()
        torch.save({"images": rows, "labels": split.labels, "classes": data.classes}, files / f"{name}.pt")
    os.chdir(folder)
    origin = f"airbench {importlib.metadata.version('airbench')} from {Path(airbench.__file__).parent}"
    batch = hyp["opt"]["batch_size"]
    loader = airbench.CifarLoader(
        "cifar10", train=True, batch_size=batch, aug=hyp["aug"], altflip=True, gpu=0 if cuda else "cpu"
    )
    if not cuda:  # it trains on CUDA only: see that it reads these files, a batch of their first rows
        loader.images, loader.labels = loader.images[:batch], loader.labels[:batch]
        images, _ = next(iter(loader))
        say(f"- airbench94 ({origin}): data files and loader work (batch {tuple(images.shape)}); trains on CUDA only")
        return None
    airbench.warmup94(train_loader=loader)  # its own warm-up: one step, cuDNN's choices made
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    model = airbench.train94(train_loader=loader, verbose=False)  # verbose would evaluate after every epoch
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    accuracy = airbench.evaluate(model, airbench.CifarLoader("cifar10", train=False, batch_size=2000), tta_level=2)
    epochs = hyp["opt"]["train_epochs"]
    say(f"- airbench94 ({origin}): {accuracy:.2%} after {seconds:.2f} s ({epochs:g} epochs, batch {batch})")
    return float(accuracy), seconds


def cifarlab_to(target: float, data: Data, args: argparse.Namespace, say: Callable[[str], None]) -> float | None:
    """The fast preset's schedules in order until one ends at ``target`` or more, after one warm-up run."""
    runs = args.scratch / "runs"
    common: dict[str, Any] = dict(data=args.data, holdout=args.holdout, model="fast", recipe="fast", device=args.device)
    common.update(eval_each_epoch=False, log_every=5.0)
    train(TrainConfig(**common, epochs=1.0, max_steps=args.warmup_steps, out=str(runs / "warm-up")), sys.stdout, data)
    start, tried = time.time(), list[tuple[float, float]]()
    for epochs in args.epochs:
        if tried and time.time() - start + tried[-1][1] * epochs / tried[-1][0] > args.budget:
            say(f"- cifarlab: {epochs:g} epochs not tried, they would overrun the {args.budget:g} s for its schedules")
            break
        t0 = time.time()
        cfg = TrainConfig(**common, epochs=epochs, max_steps=args.max_steps, out=str(runs / f"fast-{epochs:g}"))
        m = train(cfg, sys.stdout, data)
        if m["status"] != "succeeded" or m["accuracy"] is None:
            say(f"- cifarlab fast preset, epochs {epochs:g}: {m['status']}, no accuracy")
            return None
        tried.append((epochs, time.time() - t0))
        o = m["options"]
        shape = "airbench94's network" if o["airbench"] else f"width {o['width']:g}, {'lean' if o['lean'] else 'full'}"
        head = f"- cifarlab fast preset ({shape}, batch {o['batch_size']}), epochs {epochs:g}"
        say(f"{head}: {m['accuracy']:.2%} after {m['train_s']:.2f} s")
        if m["accuracy"] >= target:
            return float(m["train_s"])
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True, help="the CIFAR-10 JPEG archive")
    ap.add_argument("--scratch", required=True, type=lambda s: Path(s).resolve(), help="for the large files")
    ap.add_argument("--summary", required=True, help="Markdown lines are appended here")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--holdout", type=float, default=0.1, help="the fraction of the archive held out for scoring")
    ap.add_argument("--epochs", type=lambda s: [float(e) for e in s.split(",")], default=[8, 9.9, 11, 13])
    ap.add_argument("--max-steps", type=int, help="cut every cifarlab run short (rehearsal)")
    ap.add_argument("--warmup-steps", type=int, default=30)
    ap.add_argument("--budget", type=float, default=150.0, help="seconds for cifarlab's schedules")
    args = ap.parse_args()

    def say(line: str) -> None:
        print(line, flush=True)
        with open(args.summary, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    data = shuffled(load_data(args.data, holdout=args.holdout, seed=0), seed=0)
    assert data.test is not None
    say(f"- data: {len(data.train)} training images in a random order (seed 0), {len(data.test)} held out")
    try:
        airbench = airbench94(data, args.scratch / "airbench", args.device.startswith("cuda"), say)
    except Exception as exc:  # not installed, torchvision missing, or failed: cifarlab still runs, against 93%
        say(f"- airbench94: could not run ({type(exc).__name__}: {exc})")
        airbench = None
    target = FALLBACK_TARGET if airbench is None else airbench[0]
    say(f"- target: {target:.2%} ({'airbench94 on this split' if airbench else 'airbench did not train'})")
    seconds = cifarlab_to(target, data, args, say)
    ours = "not reached" if seconds is None else f"{seconds:.2f} s"
    theirs = "" if airbench is None else f"airbench94 {airbench[1]:.2f} s, "
    ratio = "" if seconds is None or airbench is None else f" ({seconds / airbench[1]:.2f}x airbench94's)"
    say(f"- **time to {target:.2%}: {theirs}cifarlab's fast preset {ours}{ratio}**")
    return 0


if __name__ == "__main__":
    sys.exit(main())
