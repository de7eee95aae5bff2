"""Two nodes train one model: two lab containers from the real lab image, each its own network namespace, on one
private bridge network, launched with the argv from ``labctl.distributed`` (torchrun, c10d rendezvous at the
first node's address, gloo), training the real lab on tiny synthetic data.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from labctl.distributed import (
    GPU_PROBE,
    TORCH_PROBE,
    launch_argv,
    launch_env,
    merge_rank_output,
    parse_gpu_count,
    plan_launch,
    split_ranks,
)
from tests.support.lab_nodes import lab_nodes, run_together

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN_ID = "two-nodes-1"
OUT = f"/workspace/runs/{RUN_ID}"
RANK_LOGS = f"/workspace/runs/{RUN_ID}-ranks"
STEPS = 6
TRAIN = [
    "--data",
    "synthetic:256",
    "--model",
    "tutorial",
    "--batch-size",
    "32",
    "--max-steps",
    str(STEPS),
    "--device",
    "cpu",
    "--no-cache",
    "--log-every",
    "0",
    "--out",
    OUT,
]
# The lab prints from rank 0 only; these make every rank's DDP say, in its own log, that it joined and synced.
DEBUG = {"TORCH_DISTRIBUTED_DEBUG": "INFO", "TORCH_CPP_LOG_LEVEL": "INFO", "OMP_NUM_THREADS": "1"}


def _gpus(node: Any) -> int:
    code, out = node.run(GPU_PROBE)
    if code in (126, 127):  # no nvidia-smi in the container: ask torch
        code, out = node.run(TORCH_PROBE)
    return parse_gpu_count(out, code)


def test_two_nodes_train_one_model_over_a_private_network(docker_client: Any, lab_image: str) -> None:
    with lab_nodes(docker_client, lab_image, 2) as nodes:
        for node in nodes:
            assert node.container.attrs["NetworkSettings"]["Ports"] in ({}, None)  # nothing published on the host
        plans = plan_launch(
            run_id=RUN_ID, gpus_per_node=[_gpus(n) for n in nodes], addresses=[n.address for n in nodes]
        )
        assert [(p.procs_per_node, p.device, p.world_size) for p in plans] == [(1, "cpu", 2), (1, "cpu", 2)]
        argvs = [launch_argv(p, TRAIN, log_dir=RANK_LOGS) for p in plans]
        assert all(a[0] == "torchrun" for a in argvs)

        results = run_together(nodes, argvs, {**launch_env(plans[0]), **DEBUG})
        outputs = [out.splitlines() for _, out in results]
        assert [code for code, _ in results] == [0, 0], "\n".join(
            line for i, lines in enumerate(outputs) for line in merge_rank_output(lines, node_rank=i)
        )

        # one worker per node, each with its own global rank
        seen = [{rank for line in lines for rank, _ in split_ranks(line) if rank is not None} for lines in outputs]
        assert sorted(seen, key=min) == [{0}, {1}]
        head = plans[seen.index({0})]
        writer, other = nodes[head.node_rank], nodes[1 - head.node_rank]

        # rank 0 wrote the results; the other node's rank wrote nothing there
        metrics = json.loads(writer.read(f"{OUT}/metrics.json"))
        assert (metrics["status"], metrics["world_size"], metrics["steps"]) == ("succeeded", 2, STEPS)
        start = json.loads(writer.read(f"{OUT}/events.jsonl").splitlines()[0])
        assert start["event"] == "start" and start["world_size"] == 2
        assert {f.rsplit("/", 1)[-1] for f in writer.files(OUT)} >= {"metrics.json", "events.jsonl", "checkpoint.pt"}
        assert other.files(OUT) == []
        merged = list(merge_rank_output(outputs[head.node_rank], node_rank=head.node_rank))
        assert f"[rank 0] status succeeded; results in {OUT}" in merged

        # each rank's own log (torchrun --tee) shows it joined the gloo group of 2 and synced gradients
        for rank, node in ((0, writer), (1, other)):
            logs = [f for f in node.files(RANK_LOGS) if re.search(r"/attempt_0/0/stderr\.log$", f)]
            assert len(logs) == 1, node.files(RANK_LOGS)
            log = node.read(logs[0])
            assert f"[Rank {rank}]: DDP Initialized with" in log
            assert "world_size: 2" in log and "backend_name: gloo" in log
            assert f"master_addr: {writer.address}" in log
            assert "buckets rebuilt" in log  # after the first backward pass's all-reduce
