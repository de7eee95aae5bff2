"""The ETA on progress lines counts the pace after warm-up, not the slow first steps (CUDA start, autotuning)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="cifarlab needs torch")

from cifarlab.runlog import Meter, RunLog


def test_first_report_has_no_eta_and_later_ones_ignore_the_warm_up(tmp_path: Path) -> None:
    stream = io.StringIO()
    log = RunLog(tmp_path, stream, log_every=0.0, master=True, t0=0.0)
    meter = Meter(world=1)
    meter.losses = [1.0] * 1000
    # 2 steps took 60 s (warm-up), then 100 steps at 0.1 s each.
    meter.train_s, meter.t_train = 60.0, 0.0
    log.report(0.0, meter, step=2, steps_total=10_002, per_epoch=1000, lr=0.1)
    meter.train_s = 70.0
    log.report(0.0, meter, step=102, steps_total=10_002, per_epoch=1000, lr=0.1)
    first, second = stream.getvalue().splitlines()
    assert first.endswith("eta (measuring)")
    assert second.endswith("eta 16:30"), second  # 9900 steps x 0.1 s, not 9900 x 70/102 s (1:53:14)
    log.close()
