"""A lab run's launch on its nodes: one plain process, or ``torchrun`` with one per GPU, meeting by c10d rendezvous
at node 0's private address. c10d assigns the global ranks, so rank 0 (which writes the results) may be on any node."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from labctl.errors import UsageError

DEFAULT_RDZV_PORT = 29400
LAB_MODULE = "cifarlab"
# torchrun prefixes every line a worker prints with this. It is set through the environment: torchrun 2.14
# also has --log-line-prefix-template, but 2.13 and older releases only read the variable.
PREFIX_TEMPLATE = "[rank ${rank}]:"
PREFIX_TEMPLATE_ENV = "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"
_PREFIX = re.compile(r"\[rank (\d+)\]:")
GPU_PROBE = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]  # one GPU name a line
TORCH_PROBE = ["python", "-c", "import torch; print(torch.cuda.device_count())"]  # where nvidia-smi is absent
_SMI_FAILURES = ("failed", "couldn't communicate", "not found", "no such file", "error", "unable")


@dataclass(frozen=True)
class LaunchPlan:
    run_id: str
    procs_per_node: int = 1
    nodes: int = 1
    node_rank: int = 0
    device: str = "cpu"  # "cuda": one worker per GPU with NCCL; "cpu": gloo
    rdzv_host: str | None = None  # the head node's private address; None on one node
    rdzv_port: int = DEFAULT_RDZV_PORT
    local_addr: str | None = None  # this node's private address, so that peers reach rank 0 by it

    @property
    def world_size(self) -> int:
        return self.procs_per_node * self.nodes

    @property
    def rdzv_endpoint(self) -> str:
        host = self.rdzv_host or "127.0.0.1"
        return f"[{host}]:{self.rdzv_port}" if ":" in host else f"{host}:{self.rdzv_port}"


def parse_gpu_count(output: str, exit_code: int = 0) -> int:
    """The GPUs in a probe's output; anything unreadable raises, so a broken driver is not taken for no GPU."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if exit_code in (126, 127) or (exit_code != 0 and not lines):
        return 0  # no nvidia-smi: a shell says 127, docker exec 126 ("executable file not found")
    if len(lines) == 1 and lines[0].isdigit():
        return int(lines[0])
    if any(line.lower().startswith("no devices were found") for line in lines):
        return 0
    bad = [line for line in lines if any(word in line.lower() for word in _SMI_FAILURES)]
    if exit_code != 0 or bad:
        detail = (bad or lines)[0][:200]
        raise UsageError(
            f"The machine's GPUs could not be counted: the probe exited {exit_code} and said '{detail}'.",
            hint="The NVIDIA driver or container runtime is not answering; 'labctl up' repairs the bootstrap, "
            "or pass --device cpu to train without GPUs.",
        )
    return len(lines)


def plan_launch(
    *,
    run_id: str,
    gpus_per_node: Sequence[int],
    addresses: Sequence[str],
    gpus_requested: int | None = None,
    rdzv_port: int = DEFAULT_RDZV_PORT,
    cpu_only: bool = False,
) -> list[LaunchPlan]:
    """Every node's plan, node 0 first. Each node starts as many workers as the smallest has GPUs (no node waits
    on a missing rank); a CPU machine, or ``cpu_only``, one gloo process."""
    nodes = len(addresses)
    fewest = min(gpus_per_node)
    if cpu_only:
        if gpus_requested is not None:
            raise UsageError(
                f"--gpus {gpus_requested} and --device cpu contradict each other.", hint="Pass one or the other."
            )
        procs, device = 1, "cpu"
    elif gpus_requested is None and fewest == 0 and max(gpus_per_node) > 0:
        without = [str(i) for i, n in enumerate(gpus_per_node) if n == 0]
        raise UsageError(
            f"Node{'s' if len(without) > 1 else ''} {', '.join(without)} ha{'ve' if len(without) > 1 else 's'} "
            "no GPU while others have: the nodes of one run must be alike.",
            hint="Pass --device cpu to train on every node's CPU, or make every node a GPU size.",
        )
    elif gpus_requested is None:
        procs, device = (fewest, "cuda") if fewest > 0 else (1, "cpu")
    elif gpus_requested > fewest:  # fewer than one was refused with the other options (RunLabOptions.check)
        where = "this machine" if nodes == 1 else f"node {list(gpus_per_node).index(fewest)}"
        have = f"only {fewest} GPU{'s' if fewest != 1 else ''}" if fewest else "no GPU"
        raise UsageError(
            f"--gpus {gpus_requested} asks for more GPUs than {where} has: it has {have}.",
            hint=f"Ask for at most {fewest}, or choose a larger size with 'labctl up --size'."
            if fewest
            else "Create a GPU lab with 'labctl up --gpu', or leave --gpus out to train on the CPU.",
        )
    else:
        procs, device = gpus_requested, "cuda"
    head = addresses[0] if nodes > 1 else None  # the rendezvous, and each node's own address, on several nodes only
    return [
        LaunchPlan(run_id, procs, nodes, rank, device, head, rdzv_port, local_addr=address if head else None)
        for rank, address in enumerate(addresses)
    ]


def plain_argv(args: Sequence[str], python: str = "python") -> list[str]:
    return [python, "-m", LAB_MODULE, *args]


def launch_argv(
    plan: LaunchPlan,
    train_args: Sequence[str],
    *,
    log_dir: str,
    python: str = "python",
    torchrun: Sequence[str] = ("torchrun",),
) -> list[str]:
    """``train_args`` follow ``train`` unchanged, never through a shell; torchrun keeps per-rank logs in ``log_dir``."""
    if plan.world_size == 1:
        return plain_argv(["train", *train_args], python)
    argv = [*torchrun, "--nnodes", str(plan.nodes), "--nproc-per-node", str(plan.procs_per_node)]
    argv += ["--max-restarts", "0", "--tee", "3", "--log-dir", log_dir]
    if plan.nodes == 1:
        argv += ["--standalone"]  # a free port of this machine for the rendezvous: two runs side by side do not clash
    else:
        # No --node-rank: c10d assigns the global ranks. The head hosts the rendezvous store, the others connect.
        argv += ["--rdzv-backend", "c10d", "--rdzv-endpoint", plan.rdzv_endpoint, "--rdzv-id", plan.run_id]
        argv += ["--rdzv-conf", f"is_host={int(plan.node_rank == 0)}"]
        argv += ["--local-addr", plan.local_addr] if plan.local_addr else []
    return [*argv, "-m", LAB_MODULE, "train", *train_args]


def describe(plan: LaunchPlan) -> str:
    if plan.world_size == 1:
        return f"one process on the {'GPU' if plan.device == 'cuda' else 'CPU'} (no torchrun)"
    per = f"{plan.procs_per_node} GPU{'s' if plan.procs_per_node != 1 else ''}" if plan.device == "cuda" else "CPU"
    where = "this machine" if plan.nodes == 1 else f"each of {plan.nodes} nodes"
    text = f"torchrun: {plan.world_size} processes ({per} on {where}, {'nccl' if plan.device == 'cuda' else 'gloo'})"
    return text + (f", meeting at {plan.rdzv_endpoint}" if plan.nodes > 1 else "")


def launch_env(plan: LaunchPlan) -> dict[str, str]:
    return {"PYTHONUNBUFFERED": "1", **({PREFIX_TEMPLATE_ENV: PREFIX_TEMPLATE} if plan.world_size > 1 else {})}


def split_ranks(line: str) -> list[tuple[int | None, str]]:
    """One console line as (global rank or None for the launcher, text) pieces; a worker's output without a
    newline gets the next one's prefix glued on (``[rank 0]:50%[rank 1]:loss 2.3``)."""
    first, *rest = _PREFIX.split(line.rstrip("\r\n"))
    pieces: list[tuple[int | None, str]] = [(None, first)] if first or not rest else []
    return pieces + [(int(rank), text) for rank, text in zip(rest[::2], rest[1::2], strict=True)]


def merge_rank_output(lines: Iterable[str], node_rank: int | None = None) -> Iterator[str]:
    """``[rank R] text`` for a worker, ``[node N] text`` (or the line unchanged) for the launcher's own messages."""
    for line in lines:
        for rank, text in split_ranks(line):
            if rank is not None:
                yield f"[rank {rank}] {text}"
            elif node_rank is not None:
                yield f"[node {node_rank}] {text}"
            else:
                yield text


@dataclass
class RankLines:
    """Chunks that may end mid-line to whole merged lines, for following a run's log."""

    node_rank: int | None = None
    partial: str = ""

    def feed(self, chunk: str) -> list[str]:
        *done, self.partial = (self.partial + chunk).split("\n")
        return list(merge_rank_output(done, self.node_rank))

    def flush(self) -> list[str]:
        rest, self.partial = self.partial, ""
        return list(merge_rank_output([rest], self.node_rank)) if rest else []
