"""Launch plans: GPUs and nodes to the argv that runs, the errors a user meets, and torchrun's real output."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from labctl.distributed import (
    PREFIX_TEMPLATE,
    PREFIX_TEMPLATE_ENV,
    TORCH_PROBE,
    LaunchPlan,
    RankLines,
    describe,
    launch_argv,
    launch_env,
    merge_rank_output,
    parse_gpu_count,
    plan_launch,
    split_ranks,
)
from labctl.errors import UsageError

TRAIN = ["--data", "synthetic:200", "--out", "/workspace/runs/r1"]


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# ------------------------------------------------------------------------------------------------ GPU count


@pytest.mark.parametrize(
    ("output", "code", "count"),
    [
        ("NVIDIA H100 80GB HBM3\nNVIDIA H100 80GB HBM3\nNVIDIA H100 80GB HBM3\nNVIDIA H100 80GB HBM3\n", 0, 4),
        ("Tesla T4\n", 0, 1),
        ("  Tesla T4  \n\n", 0, 1),
        ("4\n", 0, 4),  # the torch probe
        ("0\n", 0, 0),
        ("No devices were found\n", 6, 0),
        ("sh: 1: nvidia-smi: not found\n", 127, 0),
        (
            'OCI runtime exec failed: exec failed: unable to start container process: exec: "nvidia-smi": '
            "executable file not found in $PATH: unknown\r\n",
            126,
            0,
        ),  # docker exec where nvidia-smi is absent
        ("", 127, 0),
        ("", 1, 0),
    ],
)
def test_gpu_count_from_probe_output(output: str, code: int, count: int) -> None:
    assert parse_gpu_count(output, code) == count


@pytest.mark.parametrize(
    "output",
    [
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest "
        "NVIDIA driver is installed and running.\n",
        "Failed to initialize NVML: Driver/library version mismatch\n",
    ],
)
def test_a_driver_that_does_not_answer_is_not_a_cpu_machine(output: str) -> None:
    with pytest.raises(UsageError, match="could not be counted") as info:
        parse_gpu_count(output, 9)
    assert "--device cpu" in info.value.render()


def test_the_torch_probe_is_python() -> None:
    compile(TORCH_PROBE[2], "<probe>", "exec")


# ------------------------------------------------------------------------------------------------ plans


def _plan(gpus_available: int, nodes: int = 1, head: str = "10.0.0.4", **kwargs: Any) -> LaunchPlan:
    """Node 0's plan for a run on ``nodes`` alike machines, the first at ``head``."""
    addresses = [head, *(f"10.0.0.{5 + i}" for i in range(nodes - 1))][:nodes]
    kwargs.setdefault("run_id", "r")
    return plan_launch(gpus_per_node=[gpus_available] * nodes, addresses=addresses, **kwargs)[0]


@pytest.mark.parametrize(
    ("available", "requested", "nodes", "procs", "device", "torchrun"),
    [
        (0, None, 1, 1, "cpu", False),  # a CPU machine stays one plain process
        (1, None, 1, 1, "cuda", False),
        (1, 1, 1, 1, "cuda", False),
        (4, None, 1, 4, "cuda", True),  # every GPU the machine has, by default
        (4, 2, 1, 2, "cuda", True),
        (4, 1, 1, 1, "cuda", False),
        (2, None, 2, 2, "cuda", True),
        (0, None, 3, 1, "cpu", True),  # several CPU nodes: one gloo process each
        (1, None, 2, 1, "cuda", True),
    ],
)
def test_gpu_count_to_torchrun_arguments(
    available: int, requested: int | None, nodes: int, procs: int, device: str, torchrun: bool
) -> None:
    plan = _plan(available, nodes, run_id="r1", gpus_requested=requested)
    assert (plan.procs_per_node, plan.device, plan.world_size) == (procs, device, procs * nodes)
    argv = launch_argv(plan, TRAIN, log_dir="/workspace/runs/r1/ranks")
    assert argv[-len(TRAIN) - 3 :] == ["-m", "cifarlab", "train", *TRAIN]
    if not torchrun:
        assert argv == ["python", "-m", "cifarlab", "train", *TRAIN]
        assert launch_env(plan) == {"PYTHONUNBUFFERED": "1"}
        return
    assert argv[0] == "torchrun"
    assert (_value(argv, "--nnodes"), _value(argv, "--nproc-per-node")) == (str(nodes), str(procs))
    assert _value(argv, "--tee") == "3" and _value(argv, "--log-dir") == "/workspace/runs/r1/ranks"
    assert launch_env(plan)[PREFIX_TEMPLATE_ENV] == PREFIX_TEMPLATE
    if nodes == 1:
        assert "--standalone" in argv and "--rdzv-endpoint" not in argv
    else:
        assert _value(argv, "--rdzv-backend") == "c10d"
        assert _value(argv, "--rdzv-endpoint") == "10.0.0.4:29400"
        assert _value(argv, "--rdzv-id") == "r1"


def test_cluster_plans_meet_at_the_head_and_only_the_head_hosts_the_store() -> None:
    plans = plan_launch(
        run_id="r7", gpus_per_node=[4, 4, 4], addresses=["10.0.0.4", "10.0.0.5", "10.0.0.6"], rdzv_port=29555
    )
    argvs = [launch_argv(p, TRAIN, log_dir="/l") for p in plans]
    assert [p.node_rank for p in plans] == [0, 1, 2]
    assert all("--node-rank" not in a for a in argvs)  # c10d ignores it and torchrun warns so
    assert {_value(a, "--rdzv-endpoint") for a in argvs} == {"10.0.0.4:29555"}
    assert [_value(a, "--rdzv-conf") for a in argvs] == ["is_host=1", "is_host=0", "is_host=0"]
    assert [_value(a, "--local-addr") for a in argvs] == ["10.0.0.4", "10.0.0.5", "10.0.0.6"]
    assert all(p.world_size == 12 for p in plans)


def test_unequal_nodes_use_the_smallest_node_s_gpu_count() -> None:
    plans = plan_launch(run_id="r", gpus_per_node=[4, 2], addresses=["10.0.0.4", "10.0.0.5"])
    assert [p.procs_per_node for p in plans] == [2, 2]


def test_ipv6_head_is_bracketed() -> None:
    plan = _plan(1, nodes=2, head="fd00::4")
    assert plan.rdzv_endpoint == "[fd00::4]:29400"


def test_torchrun_can_be_the_module_of_a_given_python() -> None:
    plan = _plan(2)
    argv = launch_argv(plan, TRAIN, log_dir="/l", torchrun=("/opt/py/bin/python", "-m", "torch.distributed.run"))
    assert argv[:4] == ["/opt/py/bin/python", "-m", "torch.distributed.run", "--nnodes"]


def test_gpu_check_script_is_shell_clean() -> None:
    """benchmarks/gpu_check.sh drives these plans on GPU machines; it cannot run here, so at least it parses."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_user_text_stays_one_argument() -> None:
    hostile = ["--out", "/w/x; touch /tmp/pwned", "--data", "$(reboot)"]
    argv = launch_argv(_plan(2), hostile, log_dir="/l")
    assert argv[-4:] == hostile


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("kwargs", "message", "hint"),
    [
        (dict(gpus_available=2, gpus_requested=3), "--gpus 3 asks for more GPUs than this machine has", "at most 2"),
        (dict(gpus_available=0, gpus_requested=1), "it has no GPU", "labctl up --gpu"),
        (dict(gpus_available=2, gpus_requested=1, cpu_only=True), "contradict", "one or the other"),
    ],
)
def test_impossible_requests_are_explained(kwargs: dict[str, object], message: str, hint: str) -> None:
    kwargs.setdefault("run_id", "r1")
    with pytest.raises(UsageError) as info:
        _plan(**kwargs)  # type: ignore[arg-type]
    text = info.value.render()
    assert message in text and hint in text
    assert "\n" not in text and info.value.exit_code == 2


def test_cluster_errors_name_the_node() -> None:
    with pytest.raises(UsageError, match="more GPUs than node 1 has: it has only 2 GPUs"):
        plan_launch(run_id="r", gpus_per_node=[4, 2], addresses=["a", "b"], gpus_requested=4)
    with pytest.raises(UsageError, match="Node 1 has no GPU while others have"):
        plan_launch(run_id="r", gpus_per_node=[4, 0], addresses=["a", "b"])
    cpu = plan_launch(run_id="r", gpus_per_node=[4, 0], addresses=["a", "b"], cpu_only=True)
    assert [(p.procs_per_node, p.device) for p in cpu] == [(1, "cpu"), (1, "cpu")]


# ------------------------------------------------------------------------------------------------ output

# Captured from torchrun 2.14 (--tee 3, the prefix template, stdout and stderr into one file): a worker's last
# print without a newline runs into the next worker's line, and the launcher's own lines carry no prefix.
CAPTURED = textwrap.dedent(
    """\
    W1129 17:51:50.884000 22235 torch/distributed/run.py:982] *****************************************
    [rank 0]:hello from rank 0 local 0 world 2
    [rank 0]:no newline at end[rank 1]:hello from rank 1 local 1 world 2
    [rank 1]:err line from 1
    E1129 17:52:03.586000 22455 torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: 1)
    """
)


def test_merge_gives_each_line_a_readable_rank() -> None:
    merged = list(merge_rank_output(CAPTURED.splitlines(keepends=True), node_rank=1))
    assert merged == [
        "[node 1] W1129 17:51:50.884000 22235 torch/distributed/run.py:982] *****************************************",
        "[rank 0] hello from rank 0 local 0 world 2",
        "[rank 0] no newline at end",
        "[rank 1] hello from rank 1 local 1 world 2",
        "[rank 1] err line from 1",
        "[node 1] E1129 17:52:03.586000 22455 torch/distributed/elastic/multiprocessing/api.py:1002] failed "
        "(exitcode: 1)",
    ]
    assert _ranks(CAPTURED.splitlines()) == {0, 1}
    assert split_ranks("plain") == [(None, "plain")]
    assert list(merge_rank_output(["launcher says"])) == ["launcher says"]


def _ranks(lines: list[str]) -> set[int]:
    """The global ranks that printed at least one line."""
    return {rank for line in lines for rank, _ in split_ranks(line) if rank is not None}


# ------------------------------------------------------------------------------------------------ real torchrun

FAKE_LAB = textwrap.dedent(
    """\
    import os, sys
    import torch.distributed as dist
    dist.init_process_group("gloo")
    t = __import__("torch").ones(1)
    dist.all_reduce(t)
    print(f"rank {dist.get_rank()} of {dist.get_world_size()} sum {int(t.item())} args {sys.argv[1:]}", flush=True)
    print("partial", end="", flush=True)
    dist.destroy_process_group()
    """
)


@pytest.fixture
def fake_lab(tmp_path: Path) -> dict[str, str]:
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun is not installed (pip install torch)")
    pkg = tmp_path / "lab" / "cifarlab"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(FAKE_LAB)
    return {**os.environ, "PYTHONPATH": str(tmp_path / "lab"), "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_real_torchrun_accepts_the_single_node_argv(fake_lab: dict[str, str], tmp_path: Path) -> None:
    plan = LaunchPlan(run_id="one", procs_per_node=2)  # two CPU workers, as two GPUs would have
    argv = launch_argv(plan, ["--x", "a b"], log_dir=str(tmp_path / "ranks"), python=sys.executable)
    proc = _run(argv, {**fake_lab, **launch_env(plan)})
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    merged = list(merge_rank_output(out.splitlines(), node_rank=0))
    assert "[rank 0] rank 0 of 2 sum 2 args ['train', '--x', 'a b']" in merged
    assert "[rank 1] rank 1 of 2 sum 2 args ['train', '--x', 'a b']" in merged
    logs = sorted(p.relative_to(tmp_path / "ranks") for p in (tmp_path / "ranks").rglob("stdout.log"))
    assert [p.parts[-3:] for p in logs] == [("attempt_0", "0", "stdout.log"), ("attempt_0", "1", "stdout.log")]


@pytest.mark.slow
def test_real_torchrun_meets_across_two_launchers(fake_lab: dict[str, str], tmp_path: Path) -> None:
    """Two launchers on this machine as two nodes: c10d at the head's address, rank 0's store by is_host."""
    plans = plan_launch(
        run_id="two", gpus_per_node=[0, 0], addresses=["127.0.0.1", "127.0.0.1"], rdzv_port=_free_port()
    )
    procs = [
        _run(
            launch_argv(p, [], log_dir=str(tmp_path / f"n{p.node_rank}"), python=sys.executable),
            {**fake_lab, **launch_env(p)},
        )
        for p in plans
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    seen = [_ranks(o.splitlines()) for o in outs]
    assert sorted(seen, key=min) == [{0}, {1}]
    assert all("of 2 sum 2" in o for o in outs)


def test_describe_says_what_runs_where() -> None:
    assert describe(_plan(0)) == "one process on the CPU (no torchrun)"
    assert describe(_plan(1)) == "one process on the GPU (no torchrun)"
    four = _plan(4)
    assert describe(four) == "torchrun: 4 processes (4 GPUs on this machine, nccl)"
    two = plan_launch(run_id="r", gpus_per_node=[2, 2], addresses=["10.0.0.4", "10.0.0.5"])
    assert describe(two[1]) == "torchrun: 4 processes (2 GPUs on each of 2 nodes, nccl), meeting at 10.0.0.4:29400"
    cpu = plan_launch(run_id="r", gpus_per_node=[0, 0], addresses=["10.0.0.4", "10.0.0.5"])
    assert describe(cpu[0]) == "torchrun: 2 processes (CPU on each of 2 nodes, gloo), meeting at 10.0.0.4:29400"


def test_rank_lines_merge_a_log_that_arrives_in_pieces() -> None:
    lines = RankLines()
    assert lines.feed("[rank 1]:starts on cpu\n[rank 0]:epo") == ["[rank 1] starts on cpu"]
    assert lines.feed("ch 1\nplain launcher line\n[rank 0]:no newline") == ["[rank 0] epoch 1", "plain launcher line"]
    assert lines.flush() == ["[rank 0] no newline"] and lines.flush() == []
    single = RankLines()  # one process, no torchrun: the text passes unchanged
    assert single.feed("epoch 1 step 3\r\n") == ["epoch 1 step 3"]
