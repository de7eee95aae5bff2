"""Training: one flat loop, the same for the notebook, the command line and torchrun.

Read `train` first: the whole run on one screen. Its parts follow in the order they run: `setup` (threads,
processes, data), `build` (network, optimiser), `fit` (the loop), `evaluate_now` (score, checkpoint) and
`finish` (metrics.json, plots). The knobs are in `cifarlab.config`; what a run directory holds is described in
`cifarlab.runlog`.

Under torchrun each rank trains on its own shard of every epoch with DistributedDataParallel; rank 0 alone
evaluates and writes, and every rank prints one line when it starts training and one when it ends. On each node
local rank 0 loads the data first, the node's other ranks after it. ``metrics.json`` and the checkpoint record
how the run was spread (processes, nodes, processes per node, backend, rank 0's host); images/s counts every
rank.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import torch
from torch import nn
from torch.nn import functional as F

from cifarlab.config import ConfigError, TrainConfig
from cifarlab.data import Data, load_data
from cifarlab.devices import amp_dtype, autocast, grad_scaler, pick_device
from cifarlab.evaluate import model_kwargs, predict_logits, save_checkpoint, score
from cifarlab.models import FastNet, build_model, count_parameters
from cifarlab.runlog import Meter, RunLog, events_loss, plots, write_json

__all__ = ["ConfigError", "TrainConfig", "augment", "train"]


def train(config: TrainConfig, stream: TextIO | None = None, data: Data | None = None) -> dict[str, Any]:
    """Train, evaluate and write the run directory; returns the metrics (also in ``metrics.json``).

    ``status`` is "succeeded" or "interrupted"; a failure writes ``done``/``failed`` and raises.
    ``data`` lets a caller (the notebook) reuse an already loaded dataset.
    """
    t0 = time.time()
    dist = Dist.from_env()
    cfg = config.resolved()
    out = Path(cfg.out) if cfg.out else default_out_dir()
    cfg.out = str(out)
    if dist.master:
        out.mkdir(parents=True, exist_ok=True)
    log = RunLog(out, stream, cfg.log_every, master=dist.master, t0=t0)
    device = pick_device(cfg.device, dist.local_rank)
    log.emit(
        "start",
        run_dir=str(out.resolve()),
        options=dataclasses.asdict(cfg),
        device=str(device),
        world_size=dist.world,
        nodes=dist.nodes,
        procs_per_node=dist.local_world,
    )
    run: Run | None = None
    # the signal handlers stay while a failure is handled: torchrun's SIGTERM to the survivors must not cut `salvage`
    with StopFlag().installed() as stop:
        try:
            data, batches, load_s = setup(cfg, dist, device, log, data)
            net = build(cfg, dist, device, data, batches)
            run = Run(cfg, dist, device, out, log, data, batches, net, load_s, count_steps(cfg, batches))
            announce(run)
            fit(run, stop)
            return finish(run, stop)
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            error = f"{type(exc).__name__}: {exc}"
            if dist.world > 1:
                step = f" at step {run.step}/{run.steps_total}" if run is not None else " before training"
                log.rank_line(f"{dist.tag} {status}{step}: {explain(exc)}")
                if run is not None and isinstance(exc, Exception):
                    salvage(run, error)
            log.emit("done", status=status, accuracy=None, wall_s=round(time.time() - t0, 3), error=error)
            raise
        finally:
            log.close()


# ------------------------------------------------------------------------------------------------ processes


@dataclass
class Dist:
    """The torchrun environment; world 1 means a plain single process.

    torchrun sets RANK/WORLD_SIZE (global), LOCAL_RANK/LOCAL_WORLD_SIZE (this node's processes) and
    GROUP_RANK/GROUP_WORLD_SIZE (this node's index among the nodes, and the node count).
    """

    world: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world: int = 1  # processes on this node
    nodes: int = 1
    node: int = 0  # this node's index (GROUP_RANK), not the order of the global ranks

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Dist:
        env = os.environ if env is None else env
        world = int(env.get("WORLD_SIZE", "1"))
        local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
        nodes = int(env.get("GROUP_WORLD_SIZE", str(max(1, world // max(1, local_world)))))
        return cls(
            world=world,
            rank=int(env.get("RANK", "0")),
            local_rank=int(env.get("LOCAL_RANK", "0")),
            local_world=local_world,
            nodes=nodes,
            node=int(env.get("GROUP_RANK", "0")),
        )

    @property
    def master(self) -> bool:
        """Rank 0: the one process that evaluates, prints and writes."""
        return self.rank == 0

    @property
    def node_master(self) -> bool:
        """Local rank 0: the process that loads the data first on its node (decodes, caches, downloads)."""
        return self.local_rank == 0

    @property
    def tag(self) -> str:
        """Who this process is, for its own lines: "rank 1/4 (local 1/2, node 0 on host-a)"."""
        where = f"local {self.local_rank}/{self.local_world}, node {self.node} on {host()}"
        return f"rank {self.rank}/{self.world} ({where})"

    def init(self, device: torch.device) -> None:
        """Join the process group: NCCL between GPUs, gloo between CPU processes."""
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    @property
    def backend(self) -> str | None:
        """The process group's backend ("nccl" or "gloo"); None for a single process."""
        if self.world > 1 and torch.distributed.is_initialized():
            return str(torch.distributed.get_backend())
        return None

    def layout(self) -> dict[str, Any]:
        """How the run was spread, as metrics.json and the checkpoint record it (rank 0 writes both)."""
        return {
            "world_size": self.world,
            "nodes": self.nodes,
            "procs_per_node": self.local_world,
            "backend": self.backend,
            "rank0_host": host(),
        }

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` is set on any rank, so that all ranks stop at the same step."""
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def total(self, count: int, device: torch.device) -> int:
        """``count`` summed over every rank."""
        if self.world == 1:
            return count
        t = torch.tensor([count], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return int(t.item())

    def close(self) -> None:
        """Leave the process group once every rank is done."""
        if self.world > 1:
            self.barrier()
            torch.distributed.destroy_process_group()


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


def host() -> str:
    """This machine's name (in a lab container on host networking: the machine's own)."""
    return socket.gethostname() or platform.node() or "?"


class StopFlag:
    """Turns Ctrl-C and SIGTERM into "finish this step, save, report interrupted"; a second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __bool__(self) -> bool:
        return self.reason is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopFlag]:
        """Handle the signals for the duration of the run (only the main thread may)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def default_out_dir() -> Path:
    """runs/<date-time>: a fresh folder per run when ``--out`` is not given."""
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


# ------------------------------------------------------------------------------------------------ batches


def augment(x: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip for a whole uint8 batch, on its own device."""
    n, _, h, w = x.shape
    dev = x.device
    flip = torch.rand(n, device=dev, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if pad <= 0:
        return x
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), device=dev, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=dev, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, :, None]
    cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, :]
    out = padded[torch.arange(n, device=dev)[:, None, None], :, rows, cols]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


class Batches:
    """This rank's batches, sliced from the images in memory: its shard of a new permutation every epoch.

    While the images still decode in the background (one CPU process, data not yet cached), the first epoch waits
    for each batch's rows, which the decoding delivers in this epoch's order; with ``--threads N`` training keeps
    N - 1 threads meanwhile, leaving a core to the decoding process.
    """

    def __init__(self, data: Data, cfg: TrainConfig, dist: Dist, device: torch.device) -> None:
        assert cfg.batch_size is not None
        self.n = len(data.train)
        self.rank, self.world = dist.rank, dist.world
        self.per_rank = self.n // dist.world  # images each rank reads per epoch
        self.batch = max(1, cfg.batch_size // dist.world)  # this rank's share of a step
        drop_last = cfg.recipe == "fast"
        self.per_epoch = self.per_rank // self.batch if drop_last else math.ceil(self.per_rank / self.batch)
        if self.per_epoch < 1:
            raise ConfigError(f"--batch-size {cfg.batch_size} is larger than the {self.n} training images.")
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.first = torch.randperm(self.n, generator=self.gen)  # drawn now: the decoding follows this order
        self.images = data.train.images.to(device)
        self.labels = data.train.labels.to(device)
        self.device = device
        self.order = torch.empty(0, dtype=torch.long)
        self.decoding = data.decoding
        self.threads_after: int | None = None  # the thread count to restore once the decoding is done
        if self.decoding is not None:
            self.decoding.start(self.first)
            if self.decoding.process and cfg.threads and cfg.threads > 1:
                self.threads_after = cfg.threads
                torch.set_num_threads(cfg.threads - 1)

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels of ``step``."""
        i = step % self.per_epoch
        if i == 0:
            perm = self.first if step == 0 else torch.randperm(self.n, generator=self.gen)
            self.order = perm[self.rank :: self.world][: self.per_rank].to(self.device)
        idx = self.order[i * self.batch : (i + 1) * self.batch]
        if self.decoding is not None and step < self.per_epoch:  # one process: ``order`` is the decoding's order
            self.decoding.wait("train", (i + 1) * self.batch)
            if self.threads_after and self.decoding.done_s is not None:
                self._all_threads()
        return self.images[idx], self.labels[idx]

    def wait_decoded(self, split: str) -> None:
        """Block until every image of ``split`` is decoded (the test images come last: then the core is free)."""
        if self.decoding is not None:
            self.decoding.wait(split)
            if split == "test" and self.threads_after:
                self._all_threads()

    def _all_threads(self) -> None:
        assert self.threads_after is not None
        torch.set_num_threads(self.threads_after)
        self.threads_after = None

    def release(self) -> None:
        """Training no longer needs the cores: a decoding process may write its cache now."""
        if self.decoding is not None:
            self.decoding.release()


# ------------------------------------------------------------------------------------------------ optimiser


def lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    """Linear warm-up then linear decay to zero (one-cycle), or constant."""
    if cfg.schedule == "constant":
        return 1.0
    warm = int((cfg.warmup or 0.0) * total)
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(1, total - warm))


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Weight decay on weights only: decaying BN scales and biases hurts small fast runs."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    other = [p for p in params if p.ndim < 2]
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": other, "weight_decay": 0.0},
    ]
    assert cfg.lr is not None
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum or 0.0, nesterov=bool(cfg.nesterov))


# ------------------------------------------------------------------------------------------------ setup and build


def setup(
    cfg: TrainConfig, dist: Dist, device: torch.device, log: RunLog, data: Data | None
) -> tuple[Data, Batches, float]:
    """Threads, the process group and GPU flags; then the data.

    On each node local rank 0 loads first (decodes, caches or downloads once per node, whether or not the nodes
    share a filesystem); after a barrier the node's other ranks read its cache.
    """
    assert cfg.batch_size is not None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif device.type == "cpu" and cfg.batch_size < 64:
        torch.set_num_threads(1)  # tiny batches leave nothing to split between threads: extra ones only contend
    dist.init(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t_load = time.time()
    if data is None:
        log.phase(f"loading the data ({cfg.data})")
        for turn in (True, False):
            if dist.node_master == turn:
                data = load_data(
                    cfg.data,
                    data_root=cfg.data_root,
                    holdout=cfg.holdout,
                    seed=cfg.seed,
                    cache=cfg.cache,
                    background_cache=dist.world == 1,  # a node's other ranks read local rank 0's cache file
                    # one CPU process: train on the first decoded images while the rest decode
                    stream=dist.world == 1 and device.type == "cpu",
                )
            dist.barrier()
    assert data is not None and data.test is not None
    load_s = time.time() - t_load
    batches = Batches(data, cfg, dist, device)
    log.emit(
        "data",
        source=data.source,
        n_train=len(data.train),
        n_test=len(data.test),
        classes=data.classes,
        load_s=round(load_s, 3),
        decoding="background" if data.decoding is not None else "done",
        note=data.note,
    )
    if data.note:
        log.line(f"note: {data.note}")
    return data, batches, load_s


@dataclass
class Net:
    """The network and what steps it."""

    raw: nn.Module  # the network itself: evaluated and saved
    model: nn.Module  # what the loop calls: ``raw``, possibly wrapped in DDP and compiled
    optimizer: torch.optim.Optimizer
    scaler: Any  # a GradScaler for fp16, else None
    dtype: torch.dtype | None  # mixed precision, or None
    parameters: int


def build(cfg: TrainConfig, dist: Dist, device: torch.device, data: Data, batches: Batches) -> Net:
    """The network (the fast one sized for the device unless told), wrapped for DDP and compile, its optimiser."""
    torch.manual_seed(cfg.seed)
    if cfg.model == "fast":
        on_gpu = device.type == "cuda"
        cfg.width = cfg.width if cfg.width is not None else (1.0 if on_gpu else 0.25)
        cfg.lean = cfg.lean if cfg.lean is not None else not on_gpu
    raw = build_model(cfg.model, num_classes=len(data.classes), **model_kwargs(cfg)).to(device)
    if isinstance(raw, FastNet):
        batches.wait_decoded("train")
        raw.init_whitening(data.train.images[:5000])
    raw = raw.to(memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    model = raw
    if dist.world > 1:
        model = nn.parallel.DistributedDataParallel(raw, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    optimizer = make_optimizer(cfg, raw)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    dtype = amp_dtype(cfg, device)
    scaler = grad_scaler() if dtype == torch.float16 else None
    torch.manual_seed(cfg.seed + 1000 * dist.rank)  # different augmentations per rank, same weights everywhere
    return Net(raw, model, optimizer, scaler, dtype, count_parameters(raw))


def count_steps(cfg: TrainConfig, batches: Batches) -> int:
    """The run's optimiser steps: ``--epochs`` of this rank's batches, capped by ``--max-steps``."""
    assert cfg.epochs is not None
    total = max(1, round(cfg.epochs * batches.per_epoch))
    return min(total, cfg.max_steps) if cfg.max_steps else total


@dataclass
class Run:
    """What the loop reads and updates."""

    cfg: TrainConfig
    dist: Dist
    device: torch.device
    out: Path
    log: RunLog
    data: Data
    batches: Batches
    net: Net
    load_s: float
    steps_total: int
    step: int = 0
    scores: dict[str, Any] | None = None  # of the latest evaluation
    history: list[dict[str, Any]] = field(default_factory=list)  # one item per evaluation
    meter: Meter = field(init=False)
    eval_points: set[int] = field(init=False)  # steps within an epoch that end with an evaluation
    eval_epochs: int = field(init=False)  # evaluate every this many epochs

    def __post_init__(self) -> None:
        self.meter = Meter(self.dist.world)
        per, every = self.batches.per_epoch, self.cfg.eval_every
        per_epoch = max(1, math.ceil(1 / every)) if every < 1 else 1  # evenly spaced, the last at the epoch's end
        self.eval_points = {round(k * per / per_epoch) % per for k in range(1, per_epoch + 1)}
        self.eval_epochs = max(1, round(every)) if every >= 1 else 1

    def eval_due(self) -> bool:
        """At the last step, and where ``--eval-every`` puts one unless ``--no-eval-each-epoch``."""
        per = self.batches.per_epoch
        due = self.step % per in self.eval_points and (self.step // per) % self.eval_epochs == 0
        return self.step == self.steps_total or (self.cfg.eval_each_epoch and due)

    def report(self, now: float, final: bool = False) -> None:
        """A progress event (and a line when one is due) for the current step."""
        lr = self.net.optimizer.param_groups[0]["lr"]
        self.log.report(now, self.meter, self.step, self.steps_total, self.batches.per_epoch, lr, final)

    def epoch(self) -> float:
        """Epochs done so far (fractional within an epoch)."""
        return round(self.step / self.batches.per_epoch, 4)


# ------------------------------------------------------------------------------------------------ the loop


def announce(run: Run) -> None:
    """The ``model`` event and the line that says what is about to train."""
    cfg, net, data = run.cfg, run.net, run.data
    assert data.test is not None
    run.log.emit(
        "model",
        name=cfg.model,
        parameters=net.parameters,
        steps_total=run.steps_total,
        steps_per_epoch=run.batches.per_epoch,
        batch_size=cfg.batch_size,
    )
    run.log.line(
        f"training {cfg.model} ({net.parameters:,} parameters, recipe {cfg.recipe}) on {run.device} for "
        f"{run.steps_total} steps of {cfg.batch_size} images; {len(data.train)} train / {len(data.test)} test images"
    )
    if run.dist.world > 1:  # every rank says that it is there, and what it trains on
        cache = f"; data {data.cache}" if data.cache else ""
        run.log.rank_line(
            f"{run.dist.tag} starts on {run.device} ({run.dist.backend}): shard of {run.batches.per_rank} images, "
            f"{run.batches.batch} per step, {run.steps_total} steps{cache}"
        )


def fit(run: Run, stop: StopFlag) -> None:
    """One optimiser step per batch; progress now and then; an evaluation where one is due."""
    cfg, net, batches, meter = run.cfg, run.net, run.batches, run.meter
    net.model.train()
    meter.resume()
    run.log.begin(meter.t_train)
    while run.step < run.steps_total:
        x, y = batches.get(run.step)
        if cfg.augment:
            x = augment(x, pad=cfg.crop_pad)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for group in net.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * lr_factor(cfg, run.step, run.steps_total)
        with autocast(run.device, net.dtype):
            loss = F.cross_entropy(net.model(x), y, label_smoothing=cfg.label_smoothing or 0.0)
        net.optimizer.zero_grad(set_to_none=True)
        if net.scaler is not None:  # fp16: scaled, so that small gradients do not round to zero
            net.scaler.scale(loss).backward()
            net.scaler.step(net.optimizer)
            net.scaler.update()
        else:
            loss.backward()
            net.optimizer.step()
        meter.pending.append(loss.detach())
        meter.images += int(y.shape[0])
        run.step += 1

        now = time.time()
        if run.log.due(now):
            run.report(now)
        if run.dist.any(bool(stop), run.device) and not stop:
            stop.reason = "peer"  # another rank was stopped: every rank stops at this step
        if stop:
            break
        if run.eval_due():
            run.report(now, final=run.log.progress.tty)
            meter.pause()
            evaluate_now(run)
            meter.resume()
    meter.pause()


def evaluate_now(run: Run) -> None:
    """Rank 0 scores the test images, logs the epoch and saves a checkpoint; the other ranks wait for it."""
    if run.dist.master:
        assert run.data.test is not None
        run.log.phase(f"scoring the {len(run.data.test)} test images")
        run.batches.wait_decoded("test")
        run.scores = scores_on_test(run)
        run.meter.flush()
        item = {
            "epoch": run.epoch(),
            "step": run.step,
            "loss": events_loss(run.meter.losses, run.batches.per_epoch),
            "accuracy": run.scores["accuracy"],
            "elapsed_s": round(time.time() - run.log.t0, 3),
        }
        run.history.append(item)
        run.log.emit("epoch", **item)
        run.log.line(f"epoch {run.epoch():g}: test accuracy {run.scores['accuracy']:.2%}")
        save(run, run.epoch())
    run.dist.barrier()


def scores_on_test(run: Run) -> dict[str, Any]:
    """Accuracy, per-class accuracy and confusion matrix of the network on the test images."""
    assert run.data.test is not None
    logits = predict_logits(
        run.net.raw,
        run.data.test.images,
        run.device,
        batch_size=run.cfg.eval_batch_size,
        tta=bool(run.cfg.tta),
        channels_last=bool(run.cfg.channels_last),
        dtype=run.net.dtype,
    )
    return score(logits.argmax(1), run.data.test.labels, run.data.classes)


def save(run: Run, epoch: float) -> None:
    """The checkpoint, with how many ranks trained it."""
    path = run.out / "checkpoint.pt"
    save_checkpoint(path, run.net.raw, run.cfg, run.data.classes, run.step, epoch, layout=run.dist.layout())


# ------------------------------------------------------------------------------------------------ finish


def finish(run: Run, stop: StopFlag) -> dict[str, Any]:
    """Save on a stop; rank 0 writes metrics.json and the plots; the process group ends."""
    run.batches.release()  # a decoding process's cache write waited for the cores
    run.meter.flush()
    status = "interrupted" if stop else "succeeded"
    if stop:
        run.log.line(f"stopping on {stop.reason}: saving the checkpoint")
        if run.dist.master:
            save(run, run.step / run.batches.per_epoch)
    if run.log.progress.tty:
        run.log.line("")
    images = run.dist.total(run.meter.images, run.device)  # every rank's, for images/s
    if run.dist.world > 1:
        run.log.rank_line(
            f"{run.dist.tag} ends {status}: {run.step}/{run.steps_total} steps, {run.meter.images} images "
            f"({images} on all ranks)"
        )
    metrics = run_metrics(run, status, stop.reason, images)
    if run.dist.master:
        run.log.phase("drawing the loss curve and the confusion matrix")
        note = plots(run.out, run.meter.losses, run.scores, run.data.classes)
        if note:
            metrics["notes"].append(note)
            run.log.line(f"note: {note}")
        write_json(run.out / "metrics.json", metrics)
        run.log.emit("done", status=status, accuracy=metrics["accuracy"], wall_s=metrics["wall_s"], error=None)
    run.dist.close()
    return metrics


def salvage(run: Run, error: str) -> None:
    """Rank 0 after a failure under torchrun (most often another rank or node lost): the checkpoint of the last
    completed step and a metrics.json that says "failed" and why, so that the steps done are not lost too."""
    if not run.dist.master or run.step == 0:
        return
    try:
        save(run, run.epoch())
        run.meter.flush()
        metrics = run_metrics(run, "failed", None, run.meter.images * run.dist.world)  # the others cannot count
        metrics["error"] = error
        write_json(run.out / "metrics.json", metrics)
        run.log.line(f"saved the checkpoint of step {run.step}/{run.steps_total} in {run.out}")
    except Exception as exc:  # a broken device cannot hand the weights back: say so, keep the first error
        run.log.line(f"could not save the checkpoint of step {run.step}: {type(exc).__name__}: {exc}")


def run_metrics(run: Run, status: str, stopped_by: str | None, images: int) -> dict[str, Any]:
    """The contents of metrics.json (documented in `cifarlab.runlog`); ``images``: trained on by all ranks."""
    scores, data, meter, device = run.scores or {}, run.data, run.meter, run.device
    assert data.test is not None
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
        "model": {"name": run.cfg.model, "parameters": run.net.parameters},
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
        "notes": [],
    }
