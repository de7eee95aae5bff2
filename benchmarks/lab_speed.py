"""The lab's fast path against the classic tutorial loop, side by side, in one run, on the same data and split.

    python benchmarks/lab_speed.py --data ../shared/data/cifar10-train-jpeg.tar.gz --holdout 0.2

Each contender is a fresh process, timed from its start to its exit: the Python and torch imports, reading the
archive, decoding, training, evaluation, the plots and the checkpoint are all on the clock.

1. classic: the tutorial as published (batch 4, SGD lr 0.001 momentum 0.9, 2 epochs, a DataLoader with 2 workers
   decoding each JPEG with PIL then ToTensor + Normalize); its held-out accuracy A sets the target, its wall time
   the budget.
2. tutorial: the same network through ``python -m cifarlab train --recipe fast``, cold (no decoded cache): reaches
   A how many times sooner?
3. fast: the ``fast`` preset sized for a CPU, cold: its accuracy, within the budget?

``--rounds N`` repeats the whole comparison N times, the contenders alternating, to show the spread on a busy
machine. The load average is printed before and after each process.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def classic(data: str, holdout: float, seed: int, epochs: float, workers: int, threads: int) -> dict[str, Any]:
    """The tutorial's loop (run in its own process by ``--classic-arm``): train, then score the held-out images."""
    sys.path.insert(0, str(ROOT / "lab"))
    import torch
    import torchvision.transforms as transforms
    from cifarlab.data import holdout_indices, read_image_folder
    from cifarlab.models import TutorialNet
    from PIL import Image

    class JpegDataset(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
        """Encoded JPEGs in memory, decoded per item with PIL, as an ImageFolder would after the page cache."""

        def __init__(self, items: list[tuple[bytes, int]]) -> None:
            self.items = items

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            with Image.open(io.BytesIO(self.items[i][0])) as im:
                return transform(im.convert("RGB")), self.items[i][1]

    torch.set_num_threads(threads)
    blobs, labels, _ = read_image_folder(Path(data))
    items = list(zip(blobs["train"], labels["train"].tolist(), strict=True))
    train_idx, test_idx = holdout_indices(len(items), holdout, seed)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        JpegDataset([items[int(i)] for i in train_idx]), batch_size=4, shuffle=True, num_workers=workers
    )
    net = TutorialNet()
    net.norm = torch.nn.Identity()  # the tutorial normalises in its transforms: its Net, layer for layer
    criterion, optimizer = torch.nn.CrossEntropyLoss(), torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    steps_total, step = max(1, round(epochs * len(loader))), 0
    while step < steps_total:
        for inputs, targets in loader:
            optimizer.zero_grad()
            loss = criterion(net(inputs), targets)
            loss.backward()
            optimizer.step()
            step += 1
            if step % 2000 == 0:
                print(f"  classic [{step}/{steps_total}] loss {loss.item():.3f}", flush=True)
            if step >= steps_total:
                break
    test = torch.utils.data.DataLoader(
        JpegDataset([items[int(i)] for i in test_idx]), batch_size=4, num_workers=workers
    )
    correct = total = 0
    with torch.no_grad():
        for images, targets in test:
            correct += int((net(images).argmax(1) == targets).sum())
            total += targets.size(0)
    return {"accuracy": correct / total, "steps": step, "threads": threads}


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Seconds from the process's start to its exit, and its output; a failure stops the benchmark."""
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return seconds, r.stdout


def run_classic(args: argparse.Namespace, work: Path, env: dict[str, str]) -> dict[str, Any]:
    out = work / "classic.json"
    settings = [args.holdout, args.seed, args.classic_epochs, args.workers, args.classic_threads]
    argv = [sys.executable, __file__, "--data", args.data, "--classic-arm", *map(str, settings), "--json", str(out)]
    seconds, _ = timed(argv, env)
    return {**json.loads(out.read_text()), "wall_s": seconds}


def run_lab(name: str, flags: list[str], args: argparse.Namespace, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """``python -m cifarlab train`` with an empty cache: decoding the archive is on the clock."""
    out, cache = work / name, work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    common = ["--data", args.data, "--holdout", str(args.holdout), "--seed", str(args.seed), "--recipe", "fast"]
    common += ["--no-eval-each-epoch", "--log-every", "30", "--out", str(out)]
    common += ["--threads", str(args.threads)] if args.threads else []  # else the recipe's
    seconds, _ = timed(
        [sys.executable, "-m", "cifarlab", "train", *common, *flags], {**env, "CIFARLAB_CACHE_DIR": str(cache)}
    )
    m = json.loads((out / "metrics.json").read_text())
    o = m["options"]
    return {
        "accuracy": m["accuracy"],
        "wall_s": seconds,
        "inside_s": m["wall_s"],  # from train()'s start: what the imports before it are not part of
        "train_s": m["train_s"],
        "images_per_s": m["images_per_s"],
        "load_s": m["data"]["load_s"],
        "decode_s": m["data"]["decode_s"],
        "options": {
            k: o[k] for k in ("model", "width", "epochs", "batch_size", "lr", "channels_last", "tta", "threads")
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a .tar/.tar.gz with train/<class>/*.jpg")
    ap.add_argument("--holdout", type=float, default=0.2, help="held-out fraction for evaluation (0.2: 10,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--classic-epochs", type=float, default=2.0)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the classic loop (tutorial: 2)")
    ap.add_argument("--classic-threads", type=int, default=1, help="1: at batch 4 a second thread only contends")
    ap.add_argument("--threads", type=int, help="torch threads of the lab's runs (default: the recipe's)")
    ap.add_argument("--tutorial", default="", help="more cifarlab flags for the tutorial network, e.g. '--epochs 1.2'")
    ap.add_argument("--fast", default="--epochs 4 --crop-pad 0", help="cifarlab flags for the fast preset")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the comparison, the contenders alternating")
    ap.add_argument("--skip", action="append", default=[], choices=["classic", "tutorial", "fast"])
    ap.add_argument("--out", default=None, help="where the runs go (default: a temporary folder)")
    ap.add_argument("--json", dest="json_out", help="write all results to this JSON file")
    ap.add_argument("--classic-arm", nargs=5, metavar="X", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.classic_arm:  # the classic contender's own process
        h, s, e, w, t = args.classic_arm
        result = classic(args.data, float(h), int(s), float(e), int(w), int(t))
        Path(args.json_out).write_text(json.dumps(result))
        return 0

    work = Path(args.out or tempfile.mkdtemp(prefix="lab-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "lab"), os.environ.get("PYTHONPATH", "")])}
    results: dict[str, Any] = {
        "command": " ".join(sys.argv if argv is None else [Path(__file__).name, *argv]),
        "machine": {"cpus": os.cpu_count(), "processor": cpu_model()},
        "rounds": [],
    }
    contenders = [name for name in ("classic", "tutorial", "fast") if name not in args.skip]
    for k in range(args.rounds):
        rnd: dict[str, Any] = {"load_average": {"start": os.getloadavg()}}
        for name in contenders if k % 2 == 0 else contenders[::-1]:
            print(f"== round {k + 1}: {name}", flush=True)
            if name == "classic":
                rnd[name] = run_classic(args, work, env)
            else:
                flags = ["--model", name, *(args.tutorial if name == "tutorial" else args.fast).split()]
                rnd[name] = run_lab(name, flags, args, work, env)
            rnd["load_average"][f"after_{name}"] = os.getloadavg()
            print(f"   {rnd[name]}", flush=True)
        results["rounds"].append(rnd)
        summary(rnd)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def summary(rnd: dict[str, Any]) -> None:
    """The round's figures, each process from its start to its exit."""
    load = "; ".join(f"{k} {' '.join(f'{v:.1f}' for v in la)}" for k, la in rnd["load_average"].items())
    print(f"\n== summary (whole processes, start to exit); load average (1/5/15 min): {load}")
    c, t, f = rnd.get("classic"), rnd.get("tutorial"), rnd.get("fast")
    if c:
        print(f"classic loop : {c['accuracy']:.2%} held-out, {c['wall_s']:.1f} s")
    if t:
        verdict = ""
        if c:
            reached = t["accuracy"] >= c["accuracy"]
            verdict = f" -> {c['wall_s'] / t['wall_s']:.1f}x sooner" if reached else " -> classic accuracy NOT reached"
            t["speedup"] = c["wall_s"] / t["wall_s"] if reached else None
        print(f"tutorial net : {t['accuracy']:.2%} in {t['wall_s']:.1f} s ({t['inside_s']:.1f} s in train()){verdict}")
    if f:
        within = "" if not c else (" -> within" if f["wall_s"] <= c["wall_s"] else " -> OVER") + " the classic's time"
        print(f"fast preset  : {f['accuracy']:.2%} in {f['wall_s']:.1f} s ({f['inside_s']:.1f} s in train()){within}")


def cpu_model() -> str:
    """The CPU's model name as lscpu gives it (platform.processor() is often empty on Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
