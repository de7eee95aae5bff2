"""What a run leaves behind and shows while it runs: events, progress lines, ``metrics.json`` and plots.

The run directory's files and their fields are described in lab/README.md ("What a run leaves").
"""

from __future__ import annotations

import json
import math
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch


class Meter:
    """Losses, images and training time of a run. Losses stay on the device until read: the loop never waits."""

    def __init__(self, world: int) -> None:
        self.world = world  # images/s counts every rank's images
        self.losses: list[float] = []
        self.pending: list[torch.Tensor] = []
        self.images = 0  # seen by this rank
        self.train_s = 0.0  # training time before the current stretch (evaluations excluded)
        self.t_train = time.time()  # start of the current stretch

    def flush(self) -> None:
        """Move the losses from the device to the list (one synchronisation for many steps)."""
        if self.pending:
            self.losses.extend(torch.stack(self.pending).float().cpu().tolist())
            self.pending.clear()

    def pause(self) -> None:
        """Stop the training clock (for an evaluation); `resume` starts it again."""
        self.train_s += time.time() - self.t_train

    def resume(self) -> None:
        self.t_train = time.time()


class RunLog:
    """The run's events (rank 0's ``events.jsonl``) and its lines: a live bar on a terminal, plain progress lines
    every ``log_every`` seconds otherwise (detached runs log to files). Ranks other than 0 print only `rank_line`."""

    def __init__(self, out: Path, stream: TextIO | None, log_every: float, master: bool, t0: float) -> None:
        self.events = open(out / "events.jsonl", "a", encoding="utf-8") if master else None  # noqa: SIM115
        self.stream = stream  # every rank's own lines (`rank_line`)
        self.shown = stream if master else None  # rank 0's progress and messages
        self.tty = bool(self.shown is not None and hasattr(self.shown, "isatty") and self.shown.isatty())
        self.interval = 0.2 if self.tty else log_every
        self.t0 = t0  # the run's start
        self.last_line = 0.0
        self.last_event_t, self.last_event_len = t0, 0
        self.warm: tuple[float, int] | None = None  # (training seconds, step) at the first report: warm-up done

    def emit(self, event: str, **fields: Any) -> None:
        """One event with its time, flushed, so that a follower sees it as it happens."""
        if self.events:
            self.events.write(json.dumps({"event": event, "time": round(time.time(), 3), **fields}) + "\n")
            self.events.flush()

    def eta(self, elapsed: float, step: int, steps_total: int) -> float | None:
        """Seconds left at the pace measured since the first report, so the first steps' warm-up (CUDA
        start, cuDNN autotuning, the first batches decoding) does not inflate it; None until there is a pace."""
        if self.warm is None:
            self.warm = (elapsed, step)
        warm_elapsed, warm_step = self.warm
        if step <= warm_step or elapsed <= warm_elapsed:
            return None
        return (steps_total - step) * (elapsed - warm_elapsed) / (step - warm_step)

    def line_due(self, now: float) -> bool:
        return self.shown is not None and now - self.last_line >= self.interval

    def due(self, now: float) -> bool:
        """A progress event every second, and a progress line when the display asks for one."""
        return now - self.last_event_t >= 1.0 or self.line_due(now)

    def report(
        self, now: float, meter: Meter, step: int, steps_total: int, per_epoch: int, lr: float, final: bool = False
    ) -> None:
        """A progress event (loss: the mean since the previous one), and a progress line when one is due."""
        meter.flush()
        recent = meter.losses[self.last_event_len :] or meter.losses[-1:]
        elapsed = meter.train_s + (now - meter.t_train)
        eta = self.eta(elapsed, step, steps_total)
        p = {
            "epoch": round(step / per_epoch, 4),
            "step": step,
            "steps_total": steps_total,
            "loss": round(sum(recent) / max(1, len(recent)), 5),
            "lr": lr,
            "images_per_s": round(meter.images * meter.world / elapsed if elapsed > 0 else 0.0, 1),
            "eta_s": None if eta is None else round(eta, 1),
            "elapsed_s": round(time.time() - self.t0, 3),
        }
        self.emit("progress", **p)
        if self.shown is not None and (final or self.line_due(now)):
            self.last_line = now
            text = (
                f"epoch {p['epoch']:.2f} step {step}/{steps_total} loss {p['loss']:.4f} "
                f"{p['images_per_s']:.0f} img/s eta {_duration(eta)}"
            )
            if self.tty:
                bar = "#" * int(step / max(1, steps_total) * 24)
                text = f"\r[{bar:<24}] {step / max(1, steps_total):4.0%} {text}\x1b[K" + ("\n" if final else "")
            self.shown.write(text if self.tty else text + "\n")
            self.shown.flush()
        self.last_event_t, self.last_event_len = now, len(meter.losses)

    def line(self, text: str) -> None:
        """A message of rank 0 on its own line (it clears a live bar first)."""
        if self.shown is not None:
            self.rank_line(text)

    def phase(self, text: str) -> None:
        """The line that announces a silent step, in the form whoever watches knows (see the module's doc)."""
        self.line(f"{text} ...")

    def rank_line(self, text: str) -> None:
        """A line printed by every rank, not only rank 0 (torchrun puts ``[rank R]:`` before each)."""
        if self.stream is not None:
            self.stream.write(("\r\x1b[K" if self.tty else "") + text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.events:
            self.events.close()


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "(measuring)"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def plots(out: Path, losses: list[float], scores: dict[str, Any] | None) -> None:
    """loss_curve.png and confusion_matrix.png, drawn without matplotlib, whose import and drawing took 1.7 s of a
    17 s run (benchmarks/RESULTS.md); their figures are in metrics.json."""
    if losses:
        w, h, ink = 640, 320, torch.tensor(losses)
        canvas = torch.full((h, w, 3), 255, dtype=torch.uint8)
        canvas[[0, -1]], canvas[:, [0, -1]] = 120, 120
        k = max(1, len(losses) // 50)
        sums, ends = torch.cat([torch.zeros(1), ink.cumsum(0)]), torch.arange(1, len(ink) + 1)
        starts = (ends - k - 1).clamp(min=0)
        smooth = (sums[ends] - sums[starts]) / (ends - starts)  # the mean of the last k + 1 steps
        lo, hi = min(0.0, float(ink.min())), float(ink.max()) + 1e-9
        for series, colour, thick in ((ink, (158, 202, 225), 1), (smooth, (8, 81, 156), 2)):
            u = torch.linspace(0, len(series) - 1, 8 * max(len(series), w))
            y = torch.from_numpy(np.interp(u.numpy(), np.arange(len(series)), series.numpy()))
            cols = (u / max(1, len(series) - 1) * (w - 9) + 4).long()
            rows = ((hi - y) / (hi - lo) * (h - 9) + 4).long()
            for dy in range(thick):
                canvas[rows + dy, cols] = torch.tensor(colour, dtype=torch.uint8)
        write_png(out / "loss_curve.png", canvas)
    if scores is not None:  # row-normalised, white to dark blue, one 32-pixel cell per pair of classes
        cm = torch.tensor(scores["confusion_matrix"], dtype=torch.float)
        share = (cm / cm.sum(1, keepdim=True).clamp(min=1))[..., None]
        cells = (255 - share * (255 - torch.tensor([8.0, 48.0, 107.0]))).round().to(torch.uint8)
        write_png(out / "confusion_matrix.png", cells.repeat_interleave(32, 0).repeat_interleave(32, 1))


def write_png(path: Path, rgb: torch.Tensor) -> None:
    """An (H, W, 3) uint8 image as an 8-bit RGB PNG: each row behind a 0 (no filter), deflated."""
    h, w, _ = rgb.shape
    rows = torch.cat([torch.zeros(h, 1, dtype=torch.uint8), rgb.reshape(h, w * 3)], 1).numpy().tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    head = chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + head + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Atomically: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def per_class_table(metrics: dict[str, Any]) -> str:
    """The accuracy table people read at the end of a run."""
    per_class = metrics.get("per_class_accuracy") or {}
    if not per_class:
        return "no evaluation ran"
    width = max(len(c) for c in per_class)
    lines = [f"{'class':<{width}}  accuracy"]
    for name, acc in per_class.items():
        lines.append(f"{name:<{width}}  {'-' if acc is None else f'{acc:7.1%}'}")
    lines.append(f"{'overall':<{width}}  {metrics['accuracy']:7.1%}")
    return "\n".join(lines)
