"""A run the way run-lab starts one on a machine with several GPUs: the run wrapper in a real container runs
torchrun's argv from ``labctl.distributed`` over the real lab, and the followed log reads as one merged stream.

The container has no GPU, so the plan is two gloo processes on its CPU: the same argv, wrapper, prefixes and
results as NCCL on two GPUs, without the GPUs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labctl import runs
from labctl.cluster import NodeRun, follow_nodes
from labctl.container import LabContainer
from labctl.distributed import LaunchPlan, launch_argv, launch_env
from labctl.runs import LabRuns
from labctl.workflows.runlab_options import TORCHRUN, RunLabOptions, cifarlab_args

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab_runs(docker_client: Any, lab_image: str) -> Iterator[LabRuns]:
    """One lab container for the module's tests (each start costs seconds)."""
    box = docker_client.containers.run(lab_image, ["sleep", "infinity"], detach=True, labels={"labctl.test": "runs"})
    box.exec_run(["mkdir", "-p", "/workspace"])
    try:
        yield LabRuns(LabContainer(box))
    finally:
        box.remove(force=True)


def test_the_wrapper_runs_torchrun_and_the_log_merges_every_rank(lab_runs: LabRuns, tmp_path: Path) -> None:
    code = lab_runs.ensure_lab_code()
    run_id = runs.new_run_id()
    opts = RunLabOptions(training={"batch_size": 16, "device": "cpu"}, extra=["max_steps=4", "log_every=0"])
    args = cifarlab_args(opts, out=str(runs.RUNS_DIR / run_id), data="synthetic:128")
    plan = LaunchPlan(run_id=run_id, procs_per_node=2, device="cpu")  # as on two GPUs, with gloo
    argv = launch_argv(plan, args[1:], log_dir=str(runs.RUNS_DIR / run_id / "ranks"), torchrun=TORCHRUN)
    env = {**launch_env(plan), "OMP_NUM_THREADS": "1"}
    lab_runs.start(run_id, argv, path=str(code), command=args, env=env)

    merged: list[str] = []
    followed = follow_nodes(
        [NodeRun(0, "the container", lab_runs)], run_id, lambda text: merged.extend(text.splitlines()), poll=0.5
    )
    assert followed.infos[0].state == "succeeded", "\n".join(merged)

    # both ranks said when they started and ended, each line under its own rank
    for rank in (0, 1):
        assert any(line.startswith(f"[rank {rank}] rank {rank}/2 (local {rank}/2, node 0 on ") for line in merged)
        assert f"[rank {rank}] " in "\n".join(line for line in merged if " ends succeeded: 4/4 steps" in line)
    assert not any(line.startswith("[rank 1] epoch") for line in merged)  # progress comes from rank 0 only
    assert any(line.startswith("[rank 0] status succeeded; results in") for line in merged)

    dest = tmp_path / "results"
    assert lab_runs.fetch(run_id, dest) > 0  # verified against the checksums made in the container
    metrics = json.loads((dest / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["nodes"], metrics["procs_per_node"], metrics["backend"]) == (2, 1, 2, "gloo")
    assert json.loads((dest / "run.json").read_text())["launch"] == argv
    assert {p.name for p in (dest / "ranks").rglob("*.log")} >= {"stdout.log", "stderr.log"}  # torchrun's per rank


def test_a_gpu_lab_whose_container_sees_no_gpu_counts_none_and_trains_in_one_process(lab_runs: LabRuns) -> None:
    from labctl.labhost import count_gpus
    from labctl.state import LabRecord
    from labctl.workflows.runlab_options import launch

    # no nvidia-smi in this container: run-lab asks torch, which sees no CUDA device
    record = LabRecord(name="t", target="ssh", gpu=True)
    opts = RunLabOptions()
    args = cifarlab_args(opts, out="/workspace/runs/r", data="synthetic:64")
    gpus = count_gpus(record, lab_runs.box)
    [start] = launch(opts, [args], run_id="r", gpus_per_node=[gpus], addresses=["127.0.0.1"], rdzv_port=1, log_dir="/l")
    assert gpus == 0
    assert start.plan is not None and (start.plan.procs_per_node, start.plan.device) == (1, "cpu")
    assert start.argv[:4] == ["python", "-m", "cifarlab", "train"]
