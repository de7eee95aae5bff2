"""``python -m cifarlab train|evaluate|predict|notebook``: the lab from a shell, inside or outside the container.

Exit codes: 0 success, 1 failure, 2 bad options or data, 130 interrupted (Ctrl-C or SIGTERM; checkpoint kept).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any

from cifarlab.config import LabError
from cifarlab.options import OPTIONS

NOTEBOOK_FLAGS = [key for key, option in OPTIONS.items() if option.notebook]


def _add_train_options(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, so the command line can never drift from the options."""
    from cifarlab.config import TrainConfig

    for f in dataclasses.fields(TrainConfig):
        flag, text = "--" + f.name.replace("_", "-"), OPTIONS[f.name].help if f.name in OPTIONS else None
        if str(f.type).startswith("bool"):
            p.add_argument(flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction, help=text)
        else:
            p.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=text)


def _config(args: argparse.Namespace) -> Any:
    """The TrainConfig of the flags that were given; the rest stay None for the recipe to fill, or, on a resume,
    are the run's own (another node of a torchrun has no copy of its checkpoint: it takes the flags as given)."""
    from cifarlab.config import TrainConfig
    from cifarlab.models import read_checkpoint

    names, base = [f.name for f in dataclasses.fields(TrainConfig)], TrainConfig()
    path = Path(args.resume or ".").expanduser()
    if args.resume and (path := path / "checkpoint.pt" if path.is_dir() else path).is_file():
        saved = read_checkpoint(path)["config"]
        base = TrainConfig(**{**{k: v for k, v in saved.items() if k in names}, "out": str(path.parent)})
    return base.with_strings({k: str(getattr(args, k)) for k in names if getattr(args, k) is not None})


def cmd_train(args: argparse.Namespace) -> int:
    """Train; under torchrun only rank 0 prints the table."""
    from cifarlab.runlog import per_class_table
    from cifarlab.train import train

    metrics = train(_config(args), stream=sys.stdout, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(per_class_table(metrics))
        print(f"status {metrics['status']}; results in {metrics['options']['out']}")
    return 0 if metrics["status"] == "succeeded" else 130


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a checkpoint on the test (or held-out) images of its data, or of ``--data``."""
    from cifarlab.data import load_data
    from cifarlab.models import load_checkpoint, pick_device, predict_logits, score
    from cifarlab.runlog import per_class_table

    device = pick_device(args.device)
    model, ckpt = load_checkpoint(args.checkpoint, device)
    cfg = ckpt["config"]
    data = load_data(
        args.data or cfg["data"],
        data_root=args.data_root or cfg.get("data_root"),
        holdout=args.holdout if args.holdout is not None else cfg.get("holdout"),
        seed=cfg.get("seed", 0),
    )
    if data.classes != ckpt["classes"]:
        raise LabError(f"the data's classes {data.classes} differ from the checkpoint's {ckpt['classes']}.")
    logits = predict_logits(model, data.test.images, device, tta=int(cfg.get("tta") or 0))
    metrics = score(logits.argmax(1), data.test.labels, data.classes)
    metrics["checkpoint"] = str(args.checkpoint)
    print(per_class_table(metrics))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Classify image files: the class and its probability, per image."""
    import torch

    from cifarlab.data import decode_images
    from cifarlab.models import load_checkpoint, pick_device, predict_logits

    device = pick_device(args.device)
    model, ckpt = load_checkpoint(args.checkpoint, device)
    if missing := [name for name in args.images if not Path(name).is_file()]:
        raise LabError(f"no image file at {missing[0]}.")
    blobs = [Path(name).read_bytes() for name in args.images]
    try:
        images = decode_images(blobs)
    except Exception as exc:
        raise LabError(f"could not decode one of the images: {exc}") from exc
    probs = torch.softmax(predict_logits(model, images, device, tta=int(ckpt["config"].get("tta") or 0)), 1)
    for name, p in zip(args.images, probs, strict=True):
        r = {"image": name, "class": ckpt["classes"][int(p.argmax())], "probability": round(float(p.max()), 4)}
        print(json.dumps(r) if args.json else f"{r['image']}: {r['class']} ({r['probability']:.0%})")
    return 0


def cmd_notebook(args: argparse.Namespace) -> int:
    """Execute the notebook headless; ``--param KEY=VALUE`` becomes ``LAB_KEY``."""
    from cifarlab.notebook import run_notebook

    params = dict(kv.split("=", 1) for kv in args.param)
    for key in NOTEBOOK_FLAGS:
        value = getattr(args, key)
        if value is not None:
            params[key] = str(value)
    executed = run_notebook(args.out, params, timeout=args.timeout, source=args.path, stream=sys.stdout)
    print(f"executed notebook: {executed}")
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line: train, evaluate, predict and notebook."""
    ap = argparse.ArgumentParser(prog="python -m cifarlab", description="Train and evaluate the CIFAR-10 lab.")
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a model and write a run directory")
    _add_train_options(t)
    t.add_argument("--resume", metavar="CHECKPOINT", help="go on from a run's checkpoint.pt (or its directory)")
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("evaluate", help="score a checkpoint on the test (or held-out) images")
    e.add_argument("--checkpoint", required=True, help="checkpoint.pt or its run directory")
    e.add_argument("--data", help="data source (default: the one it was trained on)")
    e.add_argument("--data-root")
    e.add_argument("--holdout", type=float)
    e.add_argument("--device", default="auto")
    e.add_argument("--out", help="also write evaluation.json here")
    e.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("predict", help="classify image files with a checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("images", nargs="+")
    p.set_defaults(func=cmd_predict)
    n = sub.add_parser("notebook", help="execute the notebook headless and keep the executed copy")
    n.add_argument("--out", required=True, help="directory for the executed notebook and its results")
    n.add_argument("--path", help="a notebook of your own instead of the lab's (run from its own folder)")
    for key in NOTEBOOK_FLAGS:
        n.add_argument("--" + key.replace("_", "-"), help=OPTIONS[key].help)
    n.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="sets LAB_KEY for the notebook")
    n.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    n.set_defaults(func=cmd_notebook)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one command; a `LabError` is a message and exit code 2, never a traceback."""
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    code = main()
    for child in multiprocessing.active_children():  # a decoding process an error left: the teardown would end it
        child.kill()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # without the interpreter's teardown after torch: 0.4 s of CPU or more (benchmarks/RESULTS.md)
