"""Several nodes: two torchrun launchers meet through c10d rendezvous, two gloo processes each, every "node" with
its own working directory and cache directory, as separate machines would have."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cifarlab.train import Dist

from .conftest import make_jpeg_folder, make_targz

LAB = Path(__file__).resolve().parents[2] / "lab"
STEPS = 4
LINE = re.compile(r"^\[rank (\d+)\]:rank (\d+)/(\d+) \(local (\d)/(\d), node (\d) on ([^)]+)\) (starts|ends) (.*)$")


def test_dist_reads_the_node_layout_torchrun_sets() -> None:
    env = {
        "WORLD_SIZE": "8",
        "RANK": "5",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "4",
        "GROUP_RANK": "1",
        "GROUP_WORLD_SIZE": "2",
    }
    dist = Dist.from_env(env)
    assert (dist.world, dist.rank, dist.local_rank, dist.local_world, dist.node, dist.nodes) == (8, 5, 1, 4, 1, 2)
    assert dist.tag == f"rank 5/8 (local 1/4, node 1 on {socket.gethostname()})"
    # launched without torchrun's node variables: the processes count as one node
    assert (Dist.from_env({"WORLD_SIZE": "2", "RANK": "0"}).nodes, Dist.from_env({}).nodes) == (1, 1)
    single = Dist.from_env({})
    assert single.layout() == {
        "world_size": 1,
        "nodes": 1,
        "procs_per_node": 1,
        "backend": None,
        "rank0_host": socket.gethostname(),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(node: Path, archive: Path, port: int, head: bool) -> subprocess.Popen[str]:
    """One node's torchrun: 2 processes, the rendezvous at 127.0.0.1:port (hosted by the head)."""
    node.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(LAB),
        "OMP_NUM_THREADS": "1",
        "CIFARLAB_CACHE_DIR": str(node / "cache"),  # this node's own disk
        "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": "[rank ${rank}]:",
    }
    argv = [
        *(sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "2"),
        *("--max-restarts", "0", "--tee", "3", "--log-dir", str(node / "ranks")),
        *("--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "nodes-test"),
        *("--rdzv-conf", f"is_host={int(head)}", "--local-addr", "127.0.0.1"),
        *("-m", "cifarlab", "train", "--data", str(archive), "--holdout", "0.25", "--model", "tutorial"),
        *("--batch-size", "8", "--max-steps", str(STEPS), "--device", "cpu", "--log-every", "0", "--out", "run"),
    ]
    return subprocess.Popen(argv, cwd=node, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_nodes_of_two_processes_load_once_per_node_and_every_rank_reports(tmp_path: Path) -> None:
    archive = make_targz(make_jpeg_folder(tmp_path / "imgs", per_class=40), tmp_path / "imgs.tar.gz")
    port = _free_port()
    procs = [_launch(tmp_path / "node-a", archive, port, head=True)]
    time.sleep(1)  # the head's launcher hosts the rendezvous store
    procs.append(_launch(tmp_path / "node-b", archive, port, head=False))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n----\n".join(outputs)

    lines = {}  # (global rank, "starts"|"ends") -> (launcher, local rank, node index, rest of the line)
    for launcher, output in enumerate(outputs):
        for match in map(LINE.match, output.splitlines()):
            if match:
                prefix, rank, world, local, local_world, node, host, what, rest = match.groups()
                assert prefix == rank and (world, local_world, host) == ("4", "2", socket.gethostname())
                lines[int(rank), what] = (launcher, int(local), int(node), rest)
    # every rank printed one line at its start and one at its end, through its own launcher
    assert sorted(lines) == [(r, w) for r in range(4) for w in ("ends", "starts")], outputs
    for rank in range(4):
        launcher, local, node, rest = lines[rank, "starts"]
        assert lines[rank, "ends"][:3] == (launcher, local, node)
        assert rest.startswith("on cpu (gloo): shard of 22 images, 2 per step, 4 steps; data ")
        # on each node local rank 0 decoded and cached the data; the node's other rank read that cache
        cache = tmp_path / ("node-a", "node-b")[launcher] / "cache"
        assert rest.endswith(("built " if local == 0 else "reused ") + str(next(cache.iterdir())))
        assert lines[rank, "ends"][3] == f"succeeded: {STEPS}/{STEPS} steps, 8 images (32 on all ranks)"
    assert sorted((launcher, local) for launcher, local, _, _ in (lines[r, "starts"] for r in range(4))) == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    ]
    assert {lines[r, "starts"][2] for r in range(4)} == {0, 1}  # each launcher is its own node

    # rank 0's node holds the results; they say how the run was spread
    writer = lines[0, "starts"][0]
    run = tmp_path / ("node-a", "node-b")[writer] / "run"
    assert not (tmp_path / ("node-a", "node-b")[1 - writer] / "run").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    layout = {"world_size": 4, "nodes": 2, "procs_per_node": 2, "backend": "gloo", "rank0_host": socket.gethostname()}
    assert {k: metrics[k] for k in layout} == layout
    assert metrics["status"] == "succeeded" and metrics["steps"] == STEPS and metrics["images"] == 4 * STEPS * 2
    assert metrics["images_per_s"] == pytest.approx(metrics["images"] / metrics["train_s"], rel=0.02)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert {k: ckpt[k] for k in layout} == layout
    start = json.loads((run / "events.jsonl").read_text().splitlines()[0])
    assert (start["world_size"], start["nodes"], start["procs_per_node"]) == (4, 2, 2)
    assert outputs[writer].count("status succeeded; results in run") == 1


def _worker_pids(launcher: int) -> dict[int, int]:
    """The global rank of each worker process a torchrun launcher started (from their environment)."""
    workers: dict[int, int] = {}
    for child in Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        rank = [e.split(b"=", 1)[1] for e in environ if e.startswith(b"RANK=")]
        if rank:
            workers[int(rank[0])] = int(child)
    return workers


def _past_first_checkpoint(events: Path) -> bool:
    """Whether the run reported progress past its first epoch's checkpoint."""
    seen = [json.loads(line) for line in events.read_text().splitlines()] if events.exists() else []
    saved = [e["step"] for e in seen if e["event"] == "epoch"]
    return bool(saved) and any(e["event"] == "progress" and e["step"] > saved[0] + 2 for e in seen)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker processes in /proc")
def test_a_rank_lost_mid_run_leaves_the_checkpoint_of_the_last_step(tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(LAB), "OMP_NUM_THREADS": "1"}
    env["TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"] = "[rank ${rank}]:"
    argv = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"),
        *("--max-restarts", "0", "--tee", "3", "--log-dir", str(tmp_path / "ranks"), "-m", "cifarlab", "train"),
        *("--data", "synthetic:400", "--model", "tutorial", "--batch-size", "8", "--epochs", "1000"),
        *("--device", "cpu", "--log-every", "1", "--out", str(out)),
    ]
    proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    events = out / "events.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not _past_first_checkpoint(events):
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0]
    os.kill(_worker_pids(proc.pid)[1], signal.SIGKILL)  # rank 1 vanishes, as with its machine
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0, output

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "Connection" in metrics["error"], metrics.get("error")
    seen = [json.loads(line) for line in events.read_text().splitlines()]
    first_epoch = next(e["step"] for e in seen if e["event"] == "epoch")
    last_progress = max(e["step"] for e in seen if e["event"] == "progress")
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    # the last step reached, not the first epoch's end (the loss may come at a later epoch's end, too)
    assert ckpt["step"] == metrics["steps"] >= last_progress > first_epoch
    assert ckpt["world_size"] == metrics["world_size"] == 2
    assert re.search(r"\[rank 0\]:rank 0/2 \(.*\) failed at step \d+/\d+: another rank stopped answering", output)
    assert f"[rank 0]:saved the checkpoint of step {metrics['steps']}/" in output
    assert json.loads(events.read_text().splitlines()[-1])["status"] == "failed"
