"""A real training run of the lab, in a real container, interrupted as `stop` and the idle agent do it (the stop tool:
checkpoint, marked to resume) and resumed in place to the same end."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from labctl import runs
from labctl.cluster import NodeRun, follow_nodes
from labctl.container import LabContainer, container_name
from labctl.distributed import plain_argv
from labctl.errors import LabctlError, UsageError
from labctl.runs import LabRuns
from labctl.state import LabRecord, RunRecord, StateStore
from labctl.ui import PlainReporter
from labctl.workflows.runlab import resume_runs, stop_runs

TRAIN = ["--data", "synthetic:2000", "--batch-size", "4", "--log-every", "0.2", "--threads", "1"]


@pytest.fixture
def lab_runs(docker_client: Any, test_base_image: str, lab_name: str) -> Iterator[LabRuns]:
    """The container of a lab on this computer named ``lab_name`` (see ``record``), without the lab's servers."""
    box = docker_client.containers.run(
        test_base_image, ["sleep", "900"], detach=True, name=container_name(lab_name), labels={"labctl.test": "resume"}
    )
    box.exec_run(["mkdir", "-p", "/workspace"])
    try:
        yield LabRuns(LabContainer(box))
    finally:
        box.remove(force=True)


@pytest.fixture
def record(lab_runs: LabRuns, lab_name: str) -> LabRecord:
    return LabRecord(name=lab_name, target="local", status="ready", container_name=container_name(lab_name))


def _train(lab_runs: LabRuns, resumable: bool = True, epochs: int = 3) -> str:
    run_id = runs.new_run_id()
    args = ["train", *TRAIN, "--epochs", str(epochs), "--out", str(runs.RUNS_DIR / run_id)]
    lab_runs.start(run_id, plain_argv(args), path=str(lab_runs.ensure_lab_code()), command=args, resumable=resumable)
    return run_id


def _wait_for(lab_runs: LabRuns, run_id: str, text: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while text.encode() not in lab_runs.read_from(runs.RUNS_DIR / run_id / "events.jsonl", 0):
        assert time.monotonic() < deadline and lab_runs.info(run_id).state == "running", lab_runs.read_from(
            runs.RUNS_DIR / run_id / "train.log", 0
        ).decode()[-2000:]
        time.sleep(0.2)


def _metrics(lab_runs: LabRuns, run_id: str) -> dict[str, Any]:
    return dict(json.loads(lab_runs.read_from(runs.RUNS_DIR / run_id / "metrics.json", 0)))


def test_a_stopped_run_resumes_in_place_to_the_same_end(lab_runs: LabRuns) -> None:
    run_id = _train(lab_runs)
    _wait_for(lab_runs, run_id, '"event": "epoch"')  # past its first epoch
    said = lab_runs.interrupt("stop", 120)
    assert said == {"interrupted": [run_id], "timed_out": []}
    stopped = lab_runs.info(run_id)
    assert stopped.state == "interrupted" and stopped.to_resume and stopped.resume_reason == "stop"
    assert stopped.epoch is not None and 1 <= stopped.epoch < 3
    assert stopped.shown() == f"interrupted at epoch {stopped.epoch:g}/3, resumes on start"

    lab_runs.resume(run_id)
    followed = follow_nodes([NodeRun(0, "the container", lab_runs)], run_id, lambda _: None, poll=0.2)
    info = followed.infos[0]
    assert info.state == "succeeded", lab_runs.read_from(runs.RUNS_DIR / run_id / "train.log", 0).decode()[-2000:]
    assert not info.to_resume and info.shown() == "succeeded"
    metrics = _metrics(lab_runs, run_id)
    assert metrics["epochs_completed"] == 3 and metrics["steps"] == metrics["steps_total"]
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    log = lab_runs.read_from(runs.RUNS_DIR / run_id / "train.log", 0).decode()
    assert log.index("stopping on SIGTERM") < log.index("resuming at step")  # one log, appended
    files = lab_runs.files(run_id)
    assert "exit_code.1" in files and "resume.json" not in files
    assert lab_runs.read_from(runs.RUNS_DIR / run_id / "exit_code.1", 0).strip() == b"130"


def test_no_resume_and_scripts_stay_stopped(lab_runs: LabRuns) -> None:
    kept = _train(lab_runs, epochs=100)  # still training at the interrupt
    lab_runs.keep_stopped(kept)  # run-lab --no-resume, while it trains
    script = _train(lab_runs, resumable=False, epochs=100)  # as `labctl run` starts the user's own
    _wait_for(lab_runs, script, '"event": "model"')
    said = lab_runs.interrupt("idle", 120)
    assert sorted(said["interrupted"]) == sorted([kept, script]) and said["timed_out"] == [], said
    infos = {info.run_id: info for info in lab_runs.list()}
    assert not infos[kept].to_resume and infos[kept].shown().endswith(", not resumed (--no-resume)")
    assert not infos[script].to_resume and infos[script].shown().endswith("not resumable (it would start over)")
    with pytest.raises(UsageError, match="cannot be resumed"):
        lab_runs.resume(script)
    lab_runs.resume(kept)  # by hand all the same
    assert lab_runs.info(kept).state == "running" and "resume" not in lab_runs.meta(kept)
    lab_runs.stop(kept)


def test_stop_promises_no_resume_to_a_run_without_a_checkpoint(lab_runs: LabRuns, record: LabRecord) -> None:
    """A run that misses stop's wait ends with the machine; it goes on only from a checkpoint it already saved."""
    run_id = runs.new_run_id()
    stubborn = ["sh", "-c", "trap '' TERM; sleep 4"]  # the lab's training, still in its first epoch
    lab_runs.start(run_id, stubborn, path=str(lab_runs.ensure_lab_code()), resumable=True)
    said = io.StringIO()
    record.runs = [RunRecord(run_id, started_at="2026-01-01T00:00:00Z")]
    shown = stop_runs(record, "stop", PlainReporter(said), wait=1)
    assert shown == {run_id: "stopped"}, said.getvalue()
    assert (record.runs[0].state, record.runs[0].shown) == ("stopped", "stopped")  # the state, and as it was shown
    assert f"Run {run_id} did not end within 1s of its stop: it ends with the machine" in said.getvalue()


def _stopped_script(lab_runs: LabRuns) -> str:
    """A run of the lab's kind that the stop tool interrupts at once, marked to resume."""
    run_id = runs.new_run_id()
    lab_runs.start(run_id, ["sh", "-c", "sleep 30"], path=str(lab_runs.ensure_lab_code()), resumable=True)
    while not lab_runs.box.exists(str(runs.RUNS_DIR / run_id / "pid")):
        time.sleep(0.1)
    assert lab_runs.interrupt("stop", 10) == {"interrupted": [run_id], "timed_out": []}
    assert lab_runs.info(run_id).to_resume
    return run_id


def test_a_run_is_resumed_once(lab_runs: LabRuns) -> None:
    """Two commands that both found it interrupted (start, and run-lab --resume): the second is refused."""
    run_id = _stopped_script(lab_runs)
    lab_runs.resume(run_id)
    with pytest.raises(UsageError, match="running already"):
        lab_runs.resume(run_id)
    assert lab_runs.files(run_id).count("exit_code.1") == 1 and "exit_code.2" not in lab_runs.files(run_id)
    lab_runs.stop(run_id)


def test_a_run_that_cannot_resume_costs_start_no_wait(lab_runs: LabRuns, record: LabRecord) -> None:
    """start waits for a booting machine, not for a run that refuses: that one is named at once."""
    run_id = _stopped_script(lab_runs)
    lab_runs.box.put(str(runs.RUNS_DIR / run_id), {"run.json": json.dumps({"resumable": True}).encode()})
    said, t0 = io.StringIO(), time.monotonic()
    assert resume_runs(StateStore(), record, PlainReporter(said), wait=30) == []
    assert time.monotonic() - t0 < 10, said.getvalue()
    assert f"Run {run_id} was not resumed: Run {run_id} cannot be resumed" in said.getvalue()


@pytest.mark.parametrize(("prints", "exit_code"), [("[]", 0), ('{"interrupted": ["r1"]}', 137)])
def test_a_stop_reads_what_the_stop_tool_said_whatever_its_exit_code(
    lab_runs: LabRuns, prints: str, exit_code: int
) -> None:
    """An answer of the wrong shape is the tool's failure, said so; a right one counts even where the exit code is
    lost or odd (docker exec can return none)."""
    tool = lab_runs.tools / "run_state.py"
    script = f"import sys; print({prints!r}); sys.exit({exit_code})"
    lab_runs.box.exec(["sh", "-c", 'printf "%s\\n" "$1" > "$2"', "sh", script, str(tool)])
    if prints == "[]":
        with pytest.raises(LabctlError, match="Could not stop the runs in the lab container"):
            lab_runs.interrupt("stop", 1)
    else:
        assert lab_runs.interrupt("stop", 1) == {"interrupted": ["r1"], "timed_out": []}
