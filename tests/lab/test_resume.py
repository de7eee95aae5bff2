"""A run stopped by SIGTERM and resumed from its checkpoint ends as the same run never stopped would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cifarlab.config import ConfigError, TrainConfig
from cifarlab.train import train

LAB = Path(__file__).resolve().parents[2] / "lab"
FLAGS = {"data": "synthetic:400", "batch_size": 8, "epochs": 4, "optimizer": "sgd", "lr": 0.05, "threads": 1}
# the fast network's recipe draws random crops and flips: the random state must go on too
FAST = {**FLAGS, "model": "fast", "width": 0.125, "lr": 0.2}


def _cifarlab(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(LAB)}
    argv = [sys.executable, "-m", "cifarlab", "train", *args, "--log-every", "0.2"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is a POSIX signal")
@pytest.mark.parametrize("flags", [FLAGS, FAST], ids=["tutorial", "fast"])
def test_a_resumed_run_ends_as_the_uninterrupted_one(tmp_path: Path, flags: dict[str, object]) -> None:
    whole = train(TrainConfig(**flags, out=str(tmp_path / "whole")))  # type: ignore[arg-type]
    out = tmp_path / "stopped"
    proc = _cifarlab(*(f"--{k.replace('_', '-')}={v}" for k, v in flags.items()), "--out", str(out))
    events = out / "events.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and not (events.exists() and '"event": "epoch"' in events.read_text()):
        time.sleep(0.05)  # past the first evaluation, then stopped mid-epoch most likely
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    stopped = json.loads((out / "metrics.json").read_text())
    assert stopped["status"] == "interrupted" and 50 < stopped["steps"] < whole["steps_total"]  # 50 an epoch

    # by hand, with no other option: the run's own settings and directory
    again = _cifarlab("--resume", str(out / "checkpoint.pt"))
    output, _ = again.communicate(timeout=120)
    assert again.returncode == 0, output
    assert f"resuming at step {stopped['steps']}/{whole['steps_total']}" in output
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["status"] == "succeeded" and resumed["steps"] == whole["steps"] == whole["steps_total"]
    assert [h["epoch"] for h in resumed["history"]] == [h["epoch"] for h in whole["history"]] == [1, 2, 3, 4]
    assert resumed["loss_per_step"] == whole["loss_per_step"]  # the same steps, exactly
    assert resumed["accuracy"] == whole["accuracy"]
    assert resumed["images"] == whole["images"]
    kinds = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert kinds.count("start") == 2 and kinds.count("resume") == 1


def test_a_resume_that_would_train_otherwise_is_refused(tmp_path: Path) -> None:
    train(TrainConfig(**{**FLAGS, "epochs": 1}, out=str(tmp_path / "r")))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"--lr 0\.5 differs from the 0\.05"):
        train(TrainConfig(**{**FLAGS, "epochs": 1, "lr": 0.5}, out=str(tmp_path / "r")), resume=tmp_path / "r")
    proc = _cifarlab("--resume", str(tmp_path / "nothing"))
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "no checkpoint at" in output and "Traceback" not in output


def _node(node: Path, port: int, head: bool, *extra: str) -> subprocess.Popen[str]:
    """One machine's torchrun of one process; its own directory, as separate machines have."""
    node.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(LAB), "OMP_NUM_THREADS": "1"}
    argv = [
        *(sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"),
        *("--max-restarts", "0", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"),
        # The rendezvous ranks nodes by (address, pid): the head's lower address makes it rank 0 whatever the pids.
        *("--rdzv-conf", f"is_host={int(head)}", "--local-addr", "127.0.0.1" if head else "127.0.0.2"),
        *("-m", "cifarlab", "train"),
        *("--data", "synthetic:400", "--batch-size", "8", "--epochs", "3", "--device", "cpu", "--log-every", "0.2"),
        *("--out", "run", *extra),
    ]
    return subprocess.Popen(argv, cwd=node, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _two_nodes(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    head = _node(tmp_path / "a", port, True, *extra)
    time.sleep(1)  # the head's launcher hosts the rendezvous store
    return head, _node(tmp_path / "b", port, False, *extra)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is a POSIX signal")
def test_two_nodes_resume_from_the_checkpoint_only_rank_0s_machine_holds(tmp_path: Path) -> None:
    procs = _two_nodes(tmp_path)
    events = tmp_path / "a" / "run" / "events.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and not (events.exists() and '"event": "epoch"' in events.read_text()):
        time.sleep(0.1)
    procs[0].send_signal(signal.SIGTERM)  # torchrun passes it on; the other machine's rank stops at the same step
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    stopped = json.loads((tmp_path / "a" / "run" / "metrics.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["steps"] < stopped["steps_total"], outputs
    assert not (tmp_path / "b" / "run" / "checkpoint.pt").exists()

    (tmp_path / "b" / "run").mkdir()  # as labctl's run directory on every machine, without the checkpoint
    procs = _two_nodes(tmp_path, "--resume", "run")  # the other machine has no copy: rank 0 sends it
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n----\n".join(outputs)
    metrics = json.loads((tmp_path / "a" / "run" / "metrics.json").read_text())
    assert metrics["status"] == "succeeded" and metrics["steps"] == metrics["steps_total"] == stopped["steps_total"]
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3] and metrics["world_size"] == 2
    assert f"resuming at step {stopped['steps']}/{stopped['steps_total']}" in outputs[0]
