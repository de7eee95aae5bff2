"""Training: one flat loop, the same for the notebook, the command line and torchrun. Read `train` first; its
parts follow in the order they run: `setup`, `fit` (the loop), `evaluate_now` and `finish`.

Under torchrun each rank trains on its own shard of every epoch with DistributedDataParallel; rank 0 alone
evaluates and writes, every rank prints a line when it starts training and one when it ends. When a rank or its
machine is lost, rank 0 keeps the checkpoint of the last step and a metrics.json that says "failed" and why.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import re
import signal
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.sgd import sgd

from cifarlab import models
from cifarlab.config import ConfigError, LabError, TrainConfig
from cifarlab.data import Data, load_data
from cifarlab.runlog import Meter, RunLog, plots, write_json

STOP_CHECK = 16  # under torchrun the ranks agree every this many steps whether one was told to stop
# where and how fast a run trains, not what it learns: a resumed run may change these, and nothing else
PLACE = {"out", "device", "data_root", "cache", "log_every", "threads", "compile", "eval_batch_size"}


def train(
    config: TrainConfig, stream: TextIO | None = None, data: Data | None = None, resume: str | Path | None = None
) -> dict[str, Any]:
    """Train, evaluate and write the run directory; returns the metrics (``metrics.json``), whose ``status`` is
    "succeeded" or "interrupted" (a failure raises). ``data``: an already loaded dataset (the notebook's);
    ``resume``: a checkpoint (or its run directory) to go on from, which only rank 0 needs to read."""
    t0 = time.time()
    dist = Dist.from_env()
    device = models.pick_device(config.device, dist.local_rank)
    cfg = config.resolved(device.type)
    out = Path(cfg.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    cfg.out = str(out)
    if dist.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    log = RunLog(out, stream, cfg.log_every, master=dist.rank == 0, t0=t0)
    log.emit("start", run_dir=str(out.resolve()), options=dataclasses.asdict(cfg), device=str(device), **dist.sizes())
    run: Run | None = None
    # Ctrl-C and SIGTERM set `stop` (only the main thread may handle signals), also while a failure is handled:
    # torchrun's SIGTERM to the surviving ranks must not cut that short
    stop, main = StopFlag(), threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, stop.handle) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        ckpt = resumable(resume, cfg) if resume is not None and dist.rank == 0 else None
        run = setup(cfg, dist, device, log, data)
        if resume is not None:
            restore(run, ckpt, str(resume))
        fit(run, stop)
        return finish(run, stop)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        error = f"{type(exc).__name__}: {exc}"
        if dist.world > 1:
            step = f" at step {run.step}/{run.steps_total}" if run is not None else " before training"
            log.rank_line(f"{dist.tag} {status}{step}: {explain(exc)}")
            if run is not None and run.step and dist.rank == 0 and isinstance(exc, Exception):
                try:  # most often another rank or node was lost: the steps done are not lost too
                    write_results(run, "failed", None, error)
                except Exception as again:  # a broken device cannot hand the weights back
                    log.line(f"could not save the checkpoint of step {run.step}: {type(again).__name__}: {again}")
        log.emit("done", status=status, accuracy=None, wall_s=round(time.time() - t0, 3), error=error)
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if run is not None and run.data.decoding is not None:
            run.data.decoding.close()
        log.close()


# ------------------------------------------------------------------------------------------------ processes


@dataclass(frozen=True)
class Dist:
    """This process among torchrun's (world 1: a plain single process): its global rank, its rank among its node's
    processes (local), and its node's index among the nodes (torchrun's GROUP_RANK, not the order of the ranks)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world: int = 1
    node: int = 0
    nodes: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Dist:
        world, local_world = int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", 1)))
        nodes = int(env.get("GROUP_WORLD_SIZE", max(1, world // max(1, local_world))))
        rank, local_rank, node = (int(env.get(k, 0)) for k in ("RANK", "LOCAL_RANK", "GROUP_RANK"))
        return cls(world, rank, local_rank, local_world, node, nodes)

    @property
    def tag(self) -> str:
        """Who this process is, for its own lines: "rank 1/4 (local 1/2, node 0 on host-a)"."""
        where = f"local {self.local_rank}/{self.local_world}, node {self.node} on {socket.gethostname()}"
        return f"rank {self.rank}/{self.world} ({where})"

    def sizes(self) -> dict[str, int]:
        return {"world_size": self.world, "nodes": self.nodes, "procs_per_node": self.local_world}

    def layout(self) -> dict[str, Any]:
        """How the run was spread, as metrics.json and the checkpoint record it (rank 0 writes both)."""
        backend = str(torch.distributed.get_backend()) if torch.distributed.is_initialized() else None
        return {**self.sizes(), "backend": backend, "rank0_host": socket.gethostname()}


# what a collective says when another rank's process or machine went away (gloo, NCCL, the c10d store)
_PEER_LOST = re.compile(
    r"Connection (reset|closed) by peer|Broken pipe|Connection refused|remote process exited|ncclRemoteError|"
    r"NCCL communicator was aborted|Socket Timeout|timed out|Timeout",
    re.IGNORECASE,
)


def explain(exc: BaseException) -> str:
    """An error as one line; a collective's failure says first that another rank (or its machine) was lost."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    lost = isinstance(exc, getattr(torch.distributed, "DistError", ())) or _PEER_LOST.search(text)
    return f"another rank stopped answering (its process or machine was lost): {text}" if lost else text


class StopFlag:
    """Turns Ctrl-C and SIGTERM into "finish this step, save, report interrupted"; a second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __bool__(self) -> bool:
        return self.reason is not None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name


# ------------------------------------------------------------------------------------------------ batches


def augment(x: torch.Tensor, flip: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """The images ``flip`` marks mirrored, then random crops with zero padding, for a uint8 batch on its device."""
    n, _, h, w = x.shape
    dev = x.device
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if pad <= 0:
        return x
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), device=dev)
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, :, None]
    cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, :]
    out = padded[torch.arange(n, device=dev)[:, None, None], :, rows, cols]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


class Batches:
    """This rank's batches, sliced from the images in memory: its shard of a new permutation every epoch. While the
    images still decode in the background (`cifarlab.data.Decoding`), each batch waits for its rows."""

    def __init__(self, data: Data, cfg: TrainConfig, dist: Dist, device: torch.device) -> None:
        assert cfg.batch_size is not None
        self.n = len(data.train)
        self.rank, self.world, self.device = dist.rank, dist.world, device
        self.per_rank = self.n // dist.world  # images each rank reads per epoch
        self.batch = max(1, cfg.batch_size // dist.world)  # this rank's share of a step
        drop_last = cfg.recipe == "fast"
        self.per_epoch = self.per_rank // self.batch if drop_last else math.ceil(self.per_rank / self.batch)
        if self.per_epoch < 1:
            raise ConfigError(f"--batch-size {cfg.batch_size} is larger than the {self.n} training images.")
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.first = torch.randperm(self.n, generator=self.gen)
        # alternating flips (airbench's): a random half of the images mirrored in even epochs, the rest in odd ones
        self.mirror = (torch.rand(self.n, generator=torch.Generator().manual_seed(cfg.seed + 1)) < 0.5).to(device)
        self.decoding = data.decoding
        if self.decoding is not None:
            self.decoding.start(self.first)
        self.images, self.labels = data.train.images.to(device), data.train.labels.to(device)
        self.perm, self.order = self.first, torch.empty(0, dtype=torch.long)

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The step's images, labels and which of them to mirror."""
        i = step % self.per_epoch
        if i == 0:
            self.use(self.first if step == 0 else torch.randperm(self.n, generator=self.gen))
        if self.decoding is not None:
            self.decoding.wait("train", (i + 1) * self.batch if step < self.per_epoch else None)
        idx = self.order[i * self.batch : (i + 1) * self.batch]
        return self.images[idx], self.labels[idx], self.mirror[idx] ^ bool(step // self.per_epoch % 2)

    def use(self, perm: torch.Tensor) -> None:
        """The epoch's order of all images (kept for a checkpoint), of which this rank reads its share."""
        self.perm, self.order = perm, perm[self.rank :: self.world][: self.per_rank].to(self.device)


def lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    """Linear warm-up then linear decay to zero (one-cycle), or constant."""
    if cfg.schedule == "constant":
        return 1.0
    warm = int((cfg.warmup or 0.0) * total)
    low, end = (0.2, 0.07) if cfg.schedule == "triangle" else (0.0, 0.0)
    if step < warm:
        return low + (1 - low) * (step + 1) / warm
    return max(0.0, end + (1 - end) * (total - step) / max(1, total - warm))


# ------------------------------------------------------------------------------------------------ setup


@dataclass
class Run:
    cfg: TrainConfig
    dist: Dist
    device: torch.device
    log: RunLog
    data: Data
    batches: Batches
    raw: nn.Module  # the network itself: evaluated and saved
    model: nn.Module  # what the loop calls: ``raw``, possibly wrapped in DDP and compiled
    optimizer: Any  # SGD or torch's AdamW
    scaler: Any  # a GradScaler for fp16, else None
    dtype: torch.dtype | None  # mixed precision, or None
    lookahead: dict[str, torch.Tensor] | None
    load_s: float
    steps_total: int = 0
    step: int = 0
    scores: dict[str, Any] | None = None  # of the latest evaluation
    history: list[dict[str, Any]] = field(default_factory=list)  # one item per evaluation
    meter: Meter = field(init=False)

    def __post_init__(self) -> None:
        assert self.cfg.epochs is not None
        self.steps_total = max(1, round(self.cfg.epochs * self.batches.per_epoch))
        self.steps_total = min(self.steps_total, self.cfg.max_steps or self.steps_total)
        self.meter = Meter(self.dist.world)

    def epoch(self) -> float:
        return round(self.step / self.batches.per_epoch, 4)

    def eval_due(self) -> bool:
        """At the last step, and every ``--eval-every`` epochs' worth of steps unless ``--no-eval-each-epoch``."""
        every = max(1, round(self.cfg.eval_every * self.batches.per_epoch))
        return self.step == self.steps_total or (self.cfg.eval_each_epoch and self.step % every == 0)


def setup(cfg: TrainConfig, dist: Dist, device: torch.device, log: RunLog, data: Data | None) -> Run:
    """Threads, the process group, the data, the network (wrapped for DDP and compile) and its optimiser. On each
    node local rank 0 loads the data first (once per node); after a barrier the node's other ranks read its cache."""
    assert cfg.batch_size is not None and cfg.lr is not None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif device.type == "cpu" and cfg.batch_size < 64:
        torch.set_num_threads(1)  # tiny batches leave nothing to split between threads: extra ones only contend
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before the process group, which binds NCCL to this GPU
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if dist.world > 1 and not torch.distributed.is_initialized():
        bind = {"device_id": device} if device.type == "cuda" else {}  # NCCL to this GPU (torch 2.3 and later)
        torch.distributed.init_process_group("nccl" if bind else "gloo", **bind)  # type: ignore[arg-type]
    t_load = time.time()
    if data is None:
        log.phase(f"loading the data ({cfg.data})")
        for turn in (0, 1):
            if (dist.local_rank == 0) == (turn == 0):
                ahead = dist.world == 1 and device.type == "cpu"  # train on the first images while the rest decode
                knobs: dict[str, Any] = {"holdout": cfg.holdout, "seed": cfg.seed, "cache": cfg.cache, "ahead": ahead}
                data = load_data(cfg.data, data_root=cfg.data_root, **knobs)
            if dist.world > 1:
                torch.distributed.barrier()
    assert data is not None
    load_s = time.time() - t_load
    batches = Batches(data, cfg, dist, device)
    decoding = "background" if data.decoding is not None else "done"
    sizes = {"n_train": len(data.train), "n_test": len(data.test), "classes": data.classes}
    log.emit("data", source=data.source, **sizes, load_s=round(load_s, 3), decoding=decoding, note=data.note)
    if data.note:
        log.line(f"note: {data.note}")

    torch.manual_seed(cfg.seed)
    raw = models.build_model(cfg.model, num_classes=len(data.classes), **models.model_kwargs(cfg)).to(device)
    if isinstance(raw, models.FastNet):
        # from the first epoch's first 5,000 images, a random draw (folders and archives list theirs class by class)
        # that is decoded first: training need not wait for the rest
        if data.decoding is not None:
            data.decoding.wait("train", 5000)
        raw.init_whitening(data.train.images[batches.first[:5000]])
    raw = raw.to(memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    model = raw
    if dist.world > 1:
        model = nn.parallel.DistributedDataParallel(raw, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    optimizer = make_optimizer(cfg, raw, batches.per_epoch)
    dtype = models.amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None  # fp16 needs loss scaling
    torch.manual_seed(cfg.seed + 1000 * dist.rank)  # different augmentations per rank, same weights everywhere
    # airbench's lookahead: a running average of the weights (and batch-norm statistics) that they return to
    lookahead = {k: v.clone() for k, v in raw.state_dict().items() if v.is_floating_point()} if cfg.lookahead else None
    return Run(cfg, dist, device, log, data, batches, raw, model, optimizer, scaler, dtype, lookahead, load_s)


def make_optimizer(cfg: TrainConfig, raw: nn.Module, per_epoch: int) -> Any:
    """Biases and batch-norm parameters at ``bias_lr`` times the rate, undecayed (unless that is above 1: then as
    much per step as the weights, as airbench's); a whitening bias trains for the first 3 epochs only."""
    assert cfg.lr is not None and cfg.bias_lr is not None and cfg.weight_decay is not None
    wd, bias, whiten = cfg.weight_decay, cfg.bias_lr, getattr(getattr(raw, "whiten", None), "bias", None)
    params = [p for p in raw.parameters() if p.requires_grad and p is not whiten]
    groups: list[dict[str, Any]] = [
        {"params": [p for p in params if p.ndim >= 2], "lr": cfg.lr, "weight_decay": wd},
        {"params": [p for p in params if p.ndim < 2], "lr": cfg.lr * bias, "weight_decay": wd / bias * (bias > 1)},
    ]
    if whiten is not None:
        groups.append({"params": [whiten], "lr": cfg.lr, "weight_decay": wd, "until": 3 * per_epoch})
    optimizer = torch.optim.AdamW(groups) if cfg.optimizer == "adamw" else SGD(groups, cfg.momentum, cfg.nesterov)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    return optimizer


class SGD:
    """torch.optim.SGD: torch's own update function on the same state, without the import of torch._dynamo that
    torch.optim makes at its first step, over a second on the clock of every run (benchmarks/RESULTS.md)."""

    def __init__(self, groups: list[dict[str, Any]], momentum: float | None, nesterov: bool | None) -> None:
        self.param_groups, self.momentum, self.nesterov = groups, momentum or 0.0, bool(nesterov)
        self.buffers: dict[torch.Tensor, torch.Tensor | None] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in (p for group in self.param_groups for p in group["params"]):
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            bufs = [self.buffers.get(p) for p in params]  # sgd() fills in the new ones
            knobs: dict[str, Any] = {"momentum": self.momentum, "nesterov": self.nesterov, "dampening": 0}
            knobs.update(lr=g["lr"], weight_decay=g["weight_decay"], maximize=False)
            sgd(params, [p.grad for p in params], bufs, **knobs)
            self.buffers.update(zip(params, bufs, strict=True))

    def state_dict(self) -> dict[str, Any]:
        return {"momentum": [self.buffers.get(p) for g in self.param_groups for p in g["params"]]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        params = [p for g in self.param_groups for p in g["params"]]
        self.buffers = {
            p: None if b is None else b.to(p.device) for p, b in zip(params, state["momentum"], strict=True)
        }


# ------------------------------------------------------------------------------------------------ the loop


def fit(run: Run, stop: StopFlag) -> None:
    """One optimiser step per batch; progress now and then; an evaluation where one is due."""
    cfg, batches, meter, data, parameters = run.cfg, run.batches, run.meter, run.data, models.count_parameters(run.raw)
    sizes = {"steps_total": run.steps_total, "steps_per_epoch": batches.per_epoch, "batch_size": cfg.batch_size}
    run.log.emit("model", name=cfg.model, parameters=parameters, **sizes)
    run.log.line(
        f"training {cfg.model} ({parameters:,} parameters, recipe {cfg.recipe}) on {run.device} for "
        f"{run.steps_total} steps of {cfg.batch_size} images; {len(data.train)} train / {len(data.test)} test images"
    )
    if run.dist.world > 1:  # every rank says that it is there, and what it trains on
        run.log.rank_line(
            f"{run.dist.tag} starts on {run.device} ({run.dist.layout()['backend']}): shard of {batches.per_rank} "
            f"images, {batches.batch} per step, {run.steps_total} steps"
            + (f"; data {data.cache}" if data.cache else "")
        )
    if run.step == run.steps_total and not any(h["step"] == run.step for h in run.history):
        evaluate_now(run)  # resumed from a stop at the last step, before its evaluation
    run.model.train()
    meter.resume()
    run.log.last_event_t = meter.t_train  # the first progress event comes a second later
    while run.step < run.steps_total:
        x, y, flip = batches.get(run.step)
        if cfg.augment:
            x = augment(x, flip, pad=cfg.crop_pad)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for group in run.optimizer.param_groups:
            on = run.step < group.get("until", run.steps_total)
            group["lr"] = group["initial_lr"] * lr_factor(cfg, run.step, run.steps_total) * on
        with torch.autocast(run.device.type, dtype=run.dtype, enabled=run.dtype is not None):
            loss = F.cross_entropy(run.model(x), y, label_smoothing=cfg.label_smoothing or 0.0)
        run.optimizer.zero_grad(set_to_none=True)
        if run.scaler is not None:  # fp16: scaled, so that small gradients do not round to zero
            run.scaler.scale(loss).backward()
            run.scaler.step(run.optimizer)
            run.scaler.update()
        else:
            loss.backward()
            run.optimizer.step()
        meter.pending.append(loss.detach())
        meter.images += int(y.shape[0])
        run.step += 1
        if run.lookahead is not None and (run.step % 5 == 0 or run.step == run.steps_total):
            decay = 1.0 if run.step == run.steps_total else 0.95**5 * (run.step / run.steps_total) ** 3
            for key, value in run.raw.state_dict().items():
                if key in run.lookahead:
                    value.copy_(run.lookahead[key].lerp_(value, 1 - decay))

        now, lr = time.time(), run.optimizer.param_groups[0]["lr"]
        if run.log.due(now):
            run.log.report(now, meter, run.step, run.steps_total, batches.per_epoch, lr)
        if stop_agreed(run, stop):
            break
        if run.eval_due():
            run.log.report(now, meter, run.step, run.steps_total, batches.per_epoch, lr, final=run.log.tty)
            meter.pause()
            evaluate_now(run)
            meter.resume()
    meter.pause()


def stop_agreed(run: Run, stop: StopFlag) -> bool:
    """Whether to stop after this step. Under torchrun the ranks stop at the same step: every `STOP_CHECK` steps
    they share their flags, an all-reduce and a host sync that would hold up every step if done at each."""
    if run.dist.world == 1 or run.step % STOP_CHECK:
        return run.dist.world == 1 and bool(stop)
    flag = torch.tensor([1.0 if stop else 0.0], device=run.device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    if flag.item() and not stop:
        stop.reason = "peer"  # another rank was stopped
    return bool(stop)


def evaluate_now(run: Run) -> None:
    """Rank 0 scores the test images, logs the epoch and saves a checkpoint; the other ranks wait for it."""
    if run.dist.rank == 0:
        run.log.phase(f"scoring the {len(run.data.test)} test images")
        if run.data.decoding is not None:
            run.data.decoding.wait("test")
        cfg, test = run.cfg, run.data.test
        how = (cfg.eval_batch_size, cfg.tta or 0, bool(cfg.channels_last), run.dtype)
        logits = models.predict_logits(run.raw, test.images, run.device, *how)
        run.scores = models.score(logits.argmax(1), run.data.test.labels, run.data.classes)
        run.meter.flush()
        accuracy = run.scores["accuracy"]
        recent = run.meter.losses[-run.batches.per_epoch :]  # the last epoch's worth of steps
        loss = round(sum(recent) / len(recent), 5) if recent else None
        item = {"epoch": run.epoch(), "step": run.step, "loss": loss, "accuracy": accuracy}
        run.history.append({**item, "elapsed_s": round(time.time() - run.log.t0, 3)})
        run.log.emit("epoch", **run.history[-1])
        run.log.line(f"epoch {run.epoch():g}: test accuracy {accuracy:.2%}")
        save(run)
    if run.dist.world > 1:
        torch.distributed.barrier()


def save(run: Run) -> None:
    path = Path(str(run.cfg.out)) / "checkpoint.pt"
    extra = {**run.dist.layout(), "resume": resume_state(run)}
    models.save_checkpoint(path, run.raw, run.cfg, run.data.classes, run.step, run.epoch(), extra)


# ------------------------------------------------------------------------------------------------ resume


def resume_state(run: Run) -> dict[str, Any]:
    """What rank 0 saves besides the weights so that a resumed run goes on as if never stopped: the optimiser's
    momentum, the data order, the random state and what the run reports of its past (losses, evaluations)."""
    return {
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "lookahead": run.lookahead,
        "order_rng": run.batches.gen.get_state(),
        "perm": run.batches.perm,
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
        "meter": {"losses": run.meter.losses, "images": run.meter.images, "train_s": run.meter.train_s},
        "history": run.history,
        "scores": run.scores,
    }


def resumable(path: str | Path, cfg: TrainConfig) -> dict[str, Any]:
    """The checkpoint to go on from, refused before any training if this run would not learn as the first did."""
    ckpt = models.read_checkpoint(path)
    if not ckpt.get("resume"):
        raise LabError(f"{path} holds the weights only, not what resuming needs; start a new run.")
    for key, value in dataclasses.asdict(cfg).items():
        if key not in PLACE and ckpt["config"].get(key) != value:
            raise ConfigError(
                f"--{key.replace('_', '-')} {value} differs from the {ckpt['config'].get(key)} of the run to resume "
                f"({path}): a resumed run goes on as it began. Leave the option out, or start a new run."
            )
    return ckpt


def restore(run: Run, ckpt: dict[str, Any] | None, where: str) -> None:
    """Rank 0's checkpoint, sent to every rank (another node has no copy); the other ranks draw their own
    augmentations again, from a seed of their rank and the step."""
    if run.dist.world > 1:
        torch.distributed.broadcast_object_list(box := [ckpt], src=0)
        ckpt = box[0]
    assert ckpt is not None
    state, run.step = ckpt["resume"], ckpt["step"]
    run.raw.load_state_dict(ckpt["state_dict"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.scaler is not None and state["scaler"]:
        run.scaler.load_state_dict(state["scaler"])
    if run.lookahead is not None and state["lookahead"]:
        run.lookahead = {k: v.to(run.device) for k, v in state["lookahead"].items()}
    run.batches.gen.set_state(state["order_rng"])
    run.batches.use(state["perm"])
    if run.dist.rank == 0:
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] is not None and run.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], run.device)
    else:
        torch.manual_seed(run.cfg.seed + 1000 * run.dist.rank + run.step)
    meter = state["meter"]
    run.meter.losses, run.meter.images, run.meter.train_s = meter["losses"], meter["images"], meter["train_s"]
    run.history, run.scores, run.log.last_event_len = state["history"], state["scores"], len(run.meter.losses)
    run.log.emit("resume", step=run.step, epoch=run.epoch(), checkpoint=where)
    run.log.line(f"resuming at step {run.step}/{run.steps_total} (epoch {run.epoch():g}) from {where}")


# ------------------------------------------------------------------------------------------------ finish


def finish(run: Run, stop: StopFlag) -> dict[str, Any]:
    """Save on a stop; rank 0 writes metrics.json and the plots; a background decoding writes its cache; the
    process group ends."""
    status = "interrupted" if stop else "succeeded"
    if stop:
        run.log.line(f"stopping on {stop.reason}: saving the checkpoint")
    if run.log.tty:
        run.log.line("")
    if run.dist.world > 1:
        run.log.rank_line(
            f"{run.dist.tag} ends {status}: {run.step}/{run.steps_total} steps, {run.meter.images} images "
            f"({run.meter.images * run.dist.world} on all ranks)"
        )
    metrics = write_results(run, status, stop.reason)
    if run.data.decoding is not None:
        run.data.decoding.finish()  # the cache write waited for the cores until now
    run.log.emit("done", status=status, accuracy=metrics["accuracy"], wall_s=metrics["wall_s"], error=None)
    if run.dist.world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return metrics


def write_results(run: Run, status: str, stopped_by: str | None, error: str | None = None) -> dict[str, Any]:
    """On rank 0: the checkpoint of the last step (when no evaluation just saved it), the plots unless the run
    failed, and metrics.json (with ``error`` when it failed). Every rank returns the metrics."""
    run.meter.flush()
    metrics = run_metrics(run, status, stopped_by)
    if run.dist.rank != 0:
        return metrics
    if status != "succeeded":
        save(run)
    if error:
        metrics["error"] = error
        run.log.line(f"saved the checkpoint of step {run.step}/{run.steps_total} in {run.cfg.out}")
    else:
        run.log.phase("drawing the loss curve and the confusion matrix")
        plots(Path(str(run.cfg.out)), run.meter.losses, run.scores)
    write_json(Path(str(run.cfg.out)) / "metrics.json", metrics)
    return metrics


def run_metrics(run: Run, status: str, stopped_by: str | None) -> dict[str, Any]:
    """The contents of metrics.json (documented in lab/README.md)."""
    scores, data, meter, device = run.scores or {}, run.data, run.meter, run.device
    images = meter.images * run.dist.world  # every rank takes the same number of steps of the same size
    decoded_s = None if data.decoding is None else data.decoding.done_s
    return {
        "status": status,
        "accuracy": scores.get("accuracy"),
        "per_class_accuracy": scores.get("per_class_accuracy"),
        "confusion_matrix": scores.get("confusion_matrix"),
        "classes": data.classes,
        "loss_per_step": [round(v, 5) for v in meter.losses],
        "images_per_s": round(images / meter.train_s, 1) if meter.train_s > 0 else 0.0,  # all ranks together
        "images": images,
        "train_s": round(meter.train_s, 3),
        "wall_s": round(time.time() - run.log.t0, 3),
        "steps": run.step,
        "steps_total": run.steps_total,
        "epochs_completed": run.epoch(),
        "history": run.history,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or None,
        **run.dist.layout(),  # world_size, nodes, procs_per_node, backend, rank0_host
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "model": {"name": run.cfg.model, "parameters": models.count_parameters(run.raw)},
        "data": {
            "source": data.source,
            "n_train": len(data.train),
            "n_test": len(data.test),
            "load_s": round(run.load_s, 3),
            "decode_s": None if decoded_s is None else round(decoded_s, 3),
            "note": data.note,
        },
        "options": dataclasses.asdict(run.cfg),
        "interrupted_by": stopped_by,
    }
