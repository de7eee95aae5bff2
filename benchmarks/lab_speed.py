"""The lab's fast path against the classic tutorial loop, side by side, in one run, on the same data and split.

    python benchmarks/lab_speed.py --data ../shared/data/cifar10-train-jpeg.tar.gz --holdout 0.2

1. classic: the tutorial as published (batch 4, SGD lr 0.001 momentum 0.9, 2 epochs, a DataLoader with 2 workers
   decoding each JPEG with PIL then ToTensor + Normalize); its held-out accuracy A sets the target.
2. tutorial, fast path, cold cache: the same network through cifarlab (decode once into a uint8 tensor, in a
   background process and in the order training reads the images, so training starts on the first decoded ones;
   batches sliced from memory, large batches with a one-cycle schedule); time to reach A, decoding included.
3. the same with a warm cache.
4. the ``fast`` preset with an epoch count that fits in the classic loop's wall time; its accuracy.

Times are wall clock from the start of each run, data loading included; Python and torch imports are not counted
for any of them. Each arm has its own torch thread setting (``--classic-threads``, ``--threads``), printed with the
load average before and after each arm. ``--smoke`` shrinks everything for a quick check (the tests run it on a
tiny generated folder).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lab"))

import torch  # noqa: E402
from cifarlab.config import TrainConfig  # noqa: E402
from cifarlab.data import holdout_indices, read_image_folder  # noqa: E402
from cifarlab.train import train  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402


class TutorialNet(nn.Module):
    """The published network, written as the tutorial writes it (normalisation happens in the transforms)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class JpegDataset(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Encoded JPEGs in memory, decoded per item with PIL, as an ImageFolder would after the page cache."""

    def __init__(self, blobs: list[bytes], labels: list[int], transform: Any) -> None:
        self.blobs, self.labels, self.transform = blobs, labels, transform

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with Image.open(io.BytesIO(self.blobs[i])) as im:
            return self.transform(im.convert("RGB")), self.labels[i]


def classic(data_path: Path, holdout: float, seed: int, epochs: float, workers: int, threads: int) -> dict[str, Any]:
    """The tutorial's loop, timed from reading the archive to the final held-out accuracy."""
    import torchvision.transforms as transforms

    torch.set_num_threads(threads)
    t0 = time.time()
    blobs, labels, _ = read_image_folder(data_path)
    train_items = list(zip(blobs["train"], labels["train"].tolist(), strict=True))
    train_idx, test_idx = holdout_indices(len(train_items), holdout, seed)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])

    def subset(idx: torch.Tensor) -> JpegDataset:
        chosen = [train_items[int(i)] for i in idx]
        return JpegDataset([b for b, _ in chosen], [label for _, label in chosen], transform)

    torch.manual_seed(seed)
    trainloader = torch.utils.data.DataLoader(subset(train_idx), batch_size=4, shuffle=True, num_workers=workers)
    testloader = torch.utils.data.DataLoader(subset(test_idx), batch_size=4, shuffle=False, num_workers=workers)
    net = TutorialNet()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    steps_total = max(1, round(epochs * len(trainloader)))
    step, seen, t_train = 0, 0, time.time()
    while step < steps_total:
        running = 0.0
        for i, (inputs, labels) in enumerate(trainloader):
            optimizer.zero_grad()
            loss = criterion(net(inputs), labels)
            loss.backward()
            optimizer.step()
            running += loss.item()
            step += 1
            seen += labels.shape[0]
            if i % 2000 == 1999:
                print(
                    f"  classic [{step}/{steps_total}] loss {running / 2000:.3f} ({time.time() - t0:.0f}s)", flush=True
                )
                running = 0.0
            if step >= steps_total:
                break
    train_s = time.time() - t_train
    correct = total = 0
    with torch.no_grad():
        for images, labels in testloader:
            predicted = net(images).argmax(1)
            total += labels.size(0)
            correct += int((predicted == labels).sum())
    return {
        "accuracy": correct / total,
        "wall_s": time.time() - t0,
        "images_per_s": seen / train_s,
        "steps": step,
        "threads": threads,
    }


def lab_run(cfg: TrainConfig) -> dict[str, Any]:
    metrics = train(cfg, stream=sys.stdout)
    return {
        "accuracy": metrics["accuracy"],
        "wall_s": metrics["wall_s"],
        "images_per_s": metrics["images_per_s"],
        "load_s": metrics["data"]["load_s"],
        "decode_s": metrics["data"].get("decode_s"),
        "threads": cfg.threads,
        "history": metrics["history"],
        "options": {k: metrics["options"][k] for k in ("model", "width", "epochs", "batch_size", "lr", "optimizer")},
    }


def time_to(history: list[dict[str, Any]], target: float) -> float | None:
    """Seconds from the start of the run to the first evaluation at or above ``target``."""
    return next((h["elapsed_s"] for h in history if h["accuracy"] >= target), None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a .tar/.tar.gz with train/<class>/*.jpg")
    ap.add_argument("--holdout", type=float, default=0.2, help="held-out fraction for evaluation (0.2: 10,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--classic-epochs", type=float, default=2.0)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the classic loop (tutorial: 2)")
    ap.add_argument("--tutorial-epochs", type=float, default=1.3, help="fast-path epochs for the tutorial network")
    ap.add_argument("--tutorial-batch", type=int, default=64)
    ap.add_argument("--tutorial-lr", type=float, default=0.05)
    ap.add_argument("--fast-epochs", type=float, default=2.5, help="fast preset epochs (fit a 2-core CPU's budget)")
    ap.add_argument(
        "--fast-crop-pad",
        type=int,
        default=0,
        help="random-crop padding; 0 = flips only, which learns faster in a run this short (it underfits)",
    )
    ap.add_argument("--fast-width", type=float, default=0.25)
    ap.add_argument("--fast-batch", type=int, default=256)
    ap.add_argument("--fast-lr", type=float, default=0.8)
    ap.add_argument("--fast-lean", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument(
        "--eval-every",
        type=float,
        default=100.0,
        help="fast-path evaluations every this many epochs (default: once, at the end of the fixed schedule)",
    )
    ap.add_argument(
        "--threads", type=int, default=2, help="torch threads of the lab's runs (2: batches of 64 split well)"
    )
    ap.add_argument(
        "--classic-threads",
        type=int,
        default=1,
        help="torch threads of the classic loop's training process (1: at batch 4 a second thread only contends)",
    )
    ap.add_argument("--skip", action="append", default=[], choices=["classic", "cold", "warm", "fast"])
    ap.add_argument("--classic-result", help="reuse a classic result (JSON from an earlier --json run)")
    ap.add_argument("--out", default=None, help="where the lab's run directories go (default: a temp dir)")
    ap.add_argument("--json", dest="json_out", help="write all results to this JSON file")
    args = ap.parse_args(argv)

    # Creating the first optimizer imports torch._dynamo (over a second). Pay that before any clock starts, so
    # that whichever run comes first is not charged for an import the others get for free.
    torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1)
    data_path = Path(args.data).expanduser()
    work = Path(args.out or tempfile.mkdtemp(prefix="lab-speed-"))
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if argv is None else " ".join(argv),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "threads": {"classic": args.classic_threads, "lab": args.threads},
        },
        "load_average": {"start": os.getloadavg()},
    }

    if args.classic_result:
        results["classic"] = json.loads(Path(args.classic_result).read_text())["classic"]
    elif "classic" not in args.skip:
        print("== classic tutorial loop", flush=True)
        results["classic"] = classic(
            data_path, args.holdout, args.seed, args.classic_epochs, args.workers, args.classic_threads
        )
        results["load_average"]["after_classic"] = os.getloadavg()
        print(f"   {results['classic']}", flush=True)
    target = results.get("classic", {}).get("accuracy", 0.0)
    budget = results.get("classic", {}).get("wall_s")

    def cfg(cache_dir: Path, **kw: Any) -> TrainConfig:
        os.environ["CIFARLAB_CACHE_DIR"] = str(cache_dir)
        base: dict[str, Any] = dict(
            data=str(data_path),
            holdout=args.holdout,
            seed=args.seed,
            recipe="fast",
            threads=args.threads,
            eval_every=args.eval_every,
            log_every=30.0,
        )
        base.update(kw)
        return TrainConfig(**base)

    cache = work / "cache"
    tut = dict(model="tutorial", epochs=args.tutorial_epochs, batch_size=args.tutorial_batch, lr=args.tutorial_lr)
    for name, label in (("cold", "cold cache"), ("warm", "warm cache")):
        if name in args.skip:
            continue
        if name == "cold" and cache.exists():
            for f in cache.iterdir():
                f.unlink()
        print(f"== tutorial network, fast path, {label}", flush=True)
        r = lab_run(cfg(cache, out=str(work / f"tutorial-{name}"), **tut))
        r["time_to_target_s"] = time_to(r["history"], target)
        results[f"tutorial_{name}"] = r
        results["load_average"][f"after_{name}"] = os.getloadavg()

    if "fast" not in args.skip:
        epochs = args.fast_epochs
        print(f"== fast preset, {epochs} epochs", flush=True)
        r = lab_run(
            cfg(
                cache,
                out=str(work / "fast"),
                model="fast",
                width=args.fast_width,
                lean=args.fast_lean,
                epochs=epochs,
                batch_size=args.fast_batch,
                lr=args.fast_lr,
                crop_pad=args.fast_crop_pad,
            )
        )
        r["accuracy_known_s"] = r["history"][-1]["elapsed_s"] if r["history"] else r["wall_s"]
        r["within_classic_time"] = budget is None or r["accuracy_known_s"] <= budget
        results["fast"] = r
        results["load_average"]["after_fast"] = os.getloadavg()

    print("\n== summary (wall seconds from the start of each run, data loading included)")
    print(
        f"threads: classic {args.classic_threads}, lab {args.threads}; load average (1/5/15 min) "
        + "; ".join(f"{k} {' '.join(f'{v:.2f}' for v in la)}" for k, la in results["load_average"].items())
    )
    if "classic" in results:
        c = results["classic"]
        print(
            f"classic loop           : {c['accuracy']:.2%} held-out in {c['wall_s']:.1f}s, "
            f"{c['images_per_s']:.0f} img/s"
        )
    for name in ("cold", "warm"):
        r = results.get(f"tutorial_{name}")
        if r:
            t = r["time_to_target_s"]
            ratio = "no classic run to compare" if not budget else (f"{budget / t:.1f}x sooner" if t else "not reached")
            print(
                f"tutorial, {name} cache   : {r['accuracy']:.2%} final; reached {target:.2%} after "
                f"{t if t is None else round(t, 1)}s ({ratio}); {r['images_per_s']:.0f} img/s; load {r['load_s']:.1f}s"
                + (f", decoded after {r['decode_s']:.1f}s in the background" if r.get("decode_s") else "")
            )
            r["speedup"] = budget / t if (t and budget) else None
    r = results.get("fast")
    if r:
        print(
            f"fast preset            : {r['accuracy']:.2%} held-out after {r['accuracy_known_s']:.1f}s "
            f"({'within' if r['within_classic_time'] else 'over'} the classic loop's time), "
            f"{r['images_per_s']:.0f} img/s"
        )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
