"""What a run leaves behind and shows while it runs: events, progress lines, ``metrics.json`` and plots.

The run directory's files and their fields are described in lab/README.md ("What a run leaves").
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, TextIO
from xml.sax.saxutils import escape

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
    """loss_curve.svg and confusion_matrix.svg, with their axes and labels: text that a browser, Jupyter or an
    editor shows, written in milliseconds, where matplotlib's import and drawing took 1.7 s of a 17 s run."""
    if losses:
        (out / "loss_curve.svg").write_text(loss_svg(losses), encoding="utf-8")
    if scores is not None:
        (out / "confusion_matrix.svg").write_text(confusion_svg(scores), encoding="utf-8")


def _svg(w: int, h: int, parts: list[str]) -> str:
    head = f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">'
    return "\n".join([head, f'<rect width="{w}" height="{h}" fill="white"/>', *parts, "</svg>\n"])


def loss_svg(losses: list[float], w: int = 640, h: int = 320, m: int = 50) -> str:
    """The loss per step (light) and its mean over the last 2% of the steps (dark), at most ~2,000 points a line."""
    ink = np.asarray(losses, dtype=float)
    k, every = max(1, len(ink) // 50), max(1, len(ink) // 2000)
    sums, ends = np.concatenate([[0.0], ink.cumsum()]), np.arange(1, len(ink) + 1)
    smooth = (sums[ends] - sums[np.maximum(ends - k - 1, 0)]) / np.minimum(ends, k + 1)
    finite = ink[np.isfinite(ink)]  # a diverged run's inf and nan are left out of the lines, not of the count
    lo, hi = min(0.0, float(finite.min(initial=0.0))), max(float(finite.max(initial=0.0)), 1e-9)

    def x(i: float) -> float:
        return m + i / max(1, len(ink) - 1) * (w - m - 12)

    def y(v: float) -> float:
        return 12 + (hi - v) / (hi - lo) * (h - m - 12)

    idx = [*range(0, len(ink) - 1, every), len(ink) - 1]
    parts = [f'<rect x="{m}" y="12" width="{w - m - 12}" height="{h - m - 12}" fill="none" stroke="#777"/>']
    for series, colour, width in ((ink, "#9ecae1", 1), (smooth, "#08519c", 2)):
        points = " ".join(f"{x(i):.1f},{y(series[i]):.1f}" for i in idx if np.isfinite(series[i]))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="{width}"/>')
    for v in (lo, (lo + hi) / 2, hi):
        parts.append(f'<text x="{m - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    for i, anchor in ((0, "start"), (len(ink) - 1, "end")):
        parts.append(f'<text x="{x(i):.1f}" y="{h - m + 16}" text-anchor="{anchor}">{i + 1}</text>')
    parts.append(f'<text x="{(w + m) / 2}" y="{h - 10}" text-anchor="middle">training step</text>')
    parts.append(f'<text x="14" y="{(h - m) / 2}" transform="rotate(-90 14 {(h - m) / 2})">loss</text>')
    return _svg(w, h, parts)


def confusion_svg(scores: dict[str, Any], cell: int = 36, margin: int = 100) -> str:
    """Rows: the true class, columns: the predicted one; each cell its count, shaded by its share of the row."""
    counts = np.asarray(scores["confusion_matrix"], dtype=float)
    names = [str(name) for name in scores.get("per_class_accuracy") or range(len(counts))]
    names = [escape("".join(c if c.isprintable() else "?" for c in name)) for name in names]  # never markup
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    parts, size = [], margin + cell * len(counts) + 10
    for (i, j), n in np.ndenumerate(counts):
        fill = ",".join(str(round(255 - share[i, j] * (255 - c))) for c in (8, 48, 107))
        cx, cy, ink = margin + j * cell, margin + i * cell, "white" if share[i, j] > 0.5 else "black"
        parts.append(f'<rect x="{cx}" y="{cy}" width="{cell}" height="{cell}" fill="rgb({fill})"/>')
        parts.append(
            f'<text x="{cx + cell / 2}" y="{cy + cell / 2 + 4}" fill="{ink}" text-anchor="middle">{n:.0f}</text>'
        )
    for i, name in enumerate(names):
        mid = margin + i * cell + cell / 2
        parts.append(f'<text x="{margin - 4}" y="{mid + 4}" text-anchor="end">{name}</text>')
        parts.append(f'<text x="{mid}" y="{margin - 4}" transform="rotate(-60 {mid} {margin - 4})">{name}</text>')
    parts.append(f'<text x="4" y="14">rows: true class; columns: predicted ({int(counts.sum())} images)</text>')
    return _svg(size, size, parts)


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
