"""A lab run's life in a real container: detached start, lossless reattach, fetch with verified checksums.

The lab here is a tiny stand-in package named ``cifarlab`` that prints lines and writes a result file, so these
tests check the run mechanics in seconds; the end-to-end test runs the real lab.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from labctl import runs
from labctl.cluster import NodeRun, follow_nodes
from labctl.container import LabContainer
from labctl.distributed import plain_argv
from labctl.errors import LabctlError
from labctl.runs import LabRuns, RunInfo

FAKE_MAIN = textwrap.dedent(
    """
    import json, os, sys, time
    args = sys.argv[1:]
    out = args[args.index("--out") + 1]
    steps = int(args[args.index("--steps") + 1])
    delay = float(args[args.index("--delay") + 1])
    for i in range(steps):
        print(f"step {i}", flush=True)
        time.sleep(delay)
    json.dump({"accuracy": 0.5, "status": "succeeded", "per_class_accuracy": {"cat": 0.4, "dog": 0.6}},
              open(os.path.join(out, "metrics.json"), "w"))
    os.makedirs(os.path.join(out, "plots"), exist_ok=True)
    open(os.path.join(out, "plots", "curve.png"), "wb").write(b"png" * 100)
    sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
    """
)


@pytest.fixture
def lab_dir(tmp_path: Path) -> Path:
    pkg = tmp_path / "lab" / "cifarlab"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(FAKE_MAIN)
    return tmp_path / "lab"


@pytest.fixture
def lab_runs(docker_client: Any, test_base_image: str) -> Iterator[LabRuns]:
    box = docker_client.containers.run(test_base_image, ["sleep", "600"], detach=True, labels={"labctl.test": "runs"})
    box.exec_run(["mkdir", "-p", "/workspace"])
    try:
        yield LabRuns(LabContainer(box))
    finally:
        box.remove(force=True)


def _follow(lab_runs: LabRuns, run_id: str, show: Callable[[str], None], follow: bool = True) -> RunInfo | None:
    """How the run ended (None: still running), its log shown line by line, as `labctl logs` follows a run."""
    followed = follow_nodes([NodeRun(0, "the container", lab_runs)], run_id, show, follow=follow, poll=0.1)
    return followed.infos.get(0)


def _start(lab_runs: LabRuns, lab_dir: Path, steps: int, delay: float, **env: str) -> str:
    code = lab_runs.ensure_lab_code(lab_dir)
    run_id = runs.new_run_id()
    args = ["--out", str(runs.RUNS_DIR / run_id), "--steps", str(steps), "--delay", str(delay)]
    lab_runs.start(run_id, plain_argv(args), path=str(code), command=args, env=env)
    return run_id


def test_run_is_followed_to_the_end_and_fetched_verified(lab_runs: LabRuns, lab_dir: Path, tmp_path: Path) -> None:
    run_id = _start(lab_runs, lab_dir, steps=5, delay=0.2)
    seen: list[str] = []
    info = _follow(lab_runs, run_id, seen.append)
    assert info is not None and info.state == "succeeded"
    assert info.accuracy == 0.5
    assert "\n".join(seen).splitlines() == [f"step {i}" for i in range(5)]
    dest = tmp_path / "results"
    assert lab_runs.fetch(run_id, dest) == 4  # metrics, plot, run.json, train.log
    assert (dest / "plots" / "curve.png").read_bytes() == b"png" * 100


def test_reattach_after_leaving_loses_nothing(lab_runs: LabRuns, lab_dir: Path) -> None:
    run_id = _start(lab_runs, lab_dir, steps=12, delay=0.25)
    first: list[str] = []
    # Watch once (no follow), as a dropped connection would: the run keeps going without us.
    _follow(lab_runs, run_id, first.append, follow=False)
    assert lab_runs.info(run_id).state == "running"
    again: list[str] = []
    info = _follow(lab_runs, run_id, again.append)
    assert info is not None and info.state == "succeeded"
    assert "\n".join(again).splitlines() == [f"step {i}" for i in range(12)]


def test_failed_run_reports_failure(lab_runs: LabRuns, lab_dir: Path) -> None:
    run_id = _start(lab_runs, lab_dir, steps=1, delay=0, FAKE_EXIT="3")
    info = _follow(lab_runs, run_id, lambda _: None)
    assert info is not None and (info.state, info.exit_code) == ("failed", 3)


def test_tampered_result_is_detected(lab_runs: LabRuns, lab_dir: Path, tmp_path: Path) -> None:
    run_id = _start(lab_runs, lab_dir, steps=1, delay=0)
    _follow(lab_runs, run_id, lambda _: None)
    lab_runs.box.exec(["sh", "-c", 'echo changed >> "$1"', "-", f"{runs.RUNS_DIR / run_id}/metrics.json"])
    with pytest.raises(LabctlError, match="do not match the checksums"):
        lab_runs.fetch(run_id, tmp_path / "results")


def test_lab_code_uploaded_once_per_version(lab_runs: LabRuns, lab_dir: Path) -> None:
    first = lab_runs.ensure_lab_code(lab_dir)
    marker = f"{first}/.complete"
    before = lab_runs.box.exec(["stat", "-c", "%Y.%n", marker]).output
    time.sleep(1.1)
    assert lab_runs.ensure_lab_code(lab_dir) == first
    assert lab_runs.box.exec(["stat", "-c", "%Y.%n", marker]).output == before
    (lab_dir / "cifarlab" / "extra.py").write_text("X = 1\n")
    second = lab_runs.ensure_lab_code(lab_dir)
    assert second != first
    assert lab_runs.box.exec(["cat", f"{second}/cifarlab/extra.py"]).output == b"X = 1\n"


def test_listing_runs(lab_runs: LabRuns, lab_dir: Path) -> None:
    assert lab_runs.list() == []
    done = _start(lab_runs, lab_dir, steps=1, delay=0)
    _follow(lab_runs, done, lambda _: None)
    live = _start(lab_runs, lab_dir, steps=40, delay=0.25)
    states = {i.run_id: i.state for i in lab_runs.list()}
    assert states == {done: "succeeded", live: "running"}


def test_a_run_killed_under_it_is_lost_and_its_partial_results_still_come_back(
    lab_runs: LabRuns, lab_dir: Path, tmp_path: Path
) -> None:
    run_id = _start(lab_runs, lab_dir, steps=100, delay=0.1)
    while "step 3" not in lab_runs.read_from(runs.RUNS_DIR / run_id / "train.log", 0).decode():
        time.sleep(0.1)
    # What a container or VM restart does to the run: its processes vanish without a word.
    lab_runs.box.exec(["sh", "-c", "kill -9 -1"], check=False)  # every process but the container's first
    info = lab_runs.info(run_id)
    assert info.state == "lost"
    with pytest.raises(LabctlError, match="checksum list is missing"):
        lab_runs.fetch(run_id, tmp_path / "verified")
    assert lab_runs.fetch(run_id, tmp_path / "partial", verify=False) == 0
    assert "step 3" in (tmp_path / "partial" / "train.log").read_text()
