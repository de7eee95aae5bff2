"""`up → run-lab → stop → status → start → stop → up → logs → fetch → down` on Azure as labctl sees it: a real
training run of the lab, in the real container behind the fake ARM's VM, is checkpointed by `stop`, shown as
interrupted while the machine is off, resumed by `start` in place (and after a second stop by `up`), and ends with
every epoch it was started for."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labctl.cli import app
from labctl.state import StateStore
from tests.e2e.test_full_flow import lab, vm  # noqa: F401
from tests.fakearm import FakeArm
from tests.fakearm.fixtures import arm_env, fake_arm  # noqa: F401
from tests.support.sshd import SSHServer

pytestmark = pytest.mark.e2e

TRAIN = ["--data", "synthetic:6000", "--epochs", "4", "--batch-size", "4", "--set", "log_every=1"]  # a minute or so


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _runs() -> dict[str, dict[str, Any]]:
    listed = _cli("runs", "--json")
    assert listed.exit_code == 0, listed.output
    return {row["run_id"]: row for row in json.loads(listed.stdout)["runs"]}


def _past_epoch(run_id: str, epoch: int) -> None:
    deadline = time.monotonic() + 300
    while f"epoch {epoch}: test accuracy" not in (log := _cli("logs", run_id).stdout):
        assert time.monotonic() < deadline and _runs()[run_id]["state"] == "running", log[-2000:]
        time.sleep(1)


def test_a_run_stopped_with_the_lab_resumes_on_start_to_its_last_epoch(
    vm: list[SSHServer],  # noqa: F811
    arm_env: FakeArm,  # noqa: F811
    tmp_path: Path,
    lab: str,  # noqa: F811
) -> None:
    up = _cli("up", "--name", lab, "--allow-ip", "203.0.113.7/32", "--yes")
    assert up.exit_code == 0, up.output
    started = _cli("run-lab", "--detach", "--json", *TRAIN)
    assert started.exit_code == 0, started.output
    run_id = json.loads(started.stdout)["run_id"]
    _past_epoch(run_id, 1)
    stopped = _cli("stop", "--yes")
    assert stopped.exit_code == 0, stopped.output
    assert f"Run {run_id} saved its checkpoint: interrupted at epoch " in stopped.output
    (recorded,) = StateStore().load(lab).runs
    assert recorded.state == "interrupted" and recorded.shown and recorded.shown.endswith(", resumes on start")
    assert arm_env.count("POST", "deallocate$") == 1
    status = _cli("status")  # the machine is off: what stop recorded
    assert f"{run_id} (interrupted at epoch " in status.output and ", resumes on start" in status.output

    known = StateStore().load(lab)
    known.runs = []  # as a record found again from Azure's tags, or on another computer, knows no run
    StateStore().save(known)
    back = _cli("start")
    assert back.exit_code == 0, back.output
    assert f"Run {run_id} goes on from its checkpoint at epoch " in back.output

    _past_epoch(run_id, 2)  # stopped again, and brought back by up this time
    second = _cli("stop", "--yes")
    assert second.exit_code == 0 and f"Run {run_id} saved its checkpoint" in second.output, second.output
    kept = StateStore().load(lab)
    kept.runs = []  # as a record found again from Azure's tags, or on another computer, knows no run
    StateStore().save(kept)
    again = _cli("up", "--name", lab, "--allow-ip", "203.0.113.7/32", "--yes")
    assert again.exit_code == 0, again.output
    assert f"Run {run_id} goes on from its checkpoint" in again.output, (again.output, _runs())
    followed = _cli("logs", "--follow", run_id)
    assert followed.exit_code == 0, followed.output
    assert followed.stdout.count("stopping on SIGTERM") == followed.stdout.count("resuming at step") == 2
    row = _runs()[run_id]
    assert row["state"] == "succeeded" and row["epoch"] == row["epochs"] == 4 and not row["resumes"]

    fetched = _cli("fetch", run_id)
    assert fetched.exit_code == 0, fetched.output
    metrics = json.loads((tmp_path / "results" / lab / run_id / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4]
    assert metrics["steps"] == metrics["steps_total"] == 6000
    for attempt in ("exit_code.1", "exit_code.2"):  # the interrupted attempts' ends, kept aside
        assert (tmp_path / "results" / lab / run_id / attempt).read_text().strip() == "130"
    assert _cli("down", "--yes").exit_code == 0
