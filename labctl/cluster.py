"""One run on several nodes: the same run id in every node's lab container, followed, found and stopped together.

Each node's part is an ordinary run of ``labctl.runs`` in that node's container (its own directory, log, pid,
checksums and exit code; ``templates/lab-run.sh`` starts the node's torchrun), so a dropped connection loses
nothing on any node. What this module adds is the view across nodes:

- ``node_runs``: the runs of nodes 0 .. N-1, each reached as ``labhost.lab_container`` reaches node 0.
- ``follow_nodes``: every node's log as one merged stream (``[rank R]`` for a worker's line, ``[node N]`` for a
  launcher's own), until every node ended, or one is lost (its launcher gone, its container or machine out of
  reach); the others then get ``LOST_GRACE_S`` to stop on their own (rank 0 saves its checkpoint when a peer
  stops answering) before they are asked to stop.
- ``rank_zero_node``: the node holding global rank 0, the one that writes the results (c10d assigns the ranks,
  so it need not be node 0).
- ``rendezvous_port``: the port the nodes meet at on node 0, the usual one unless something there holds it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from labctl.distributed import DEFAULT_RDZV_PORT, RankLines
from labctl.errors import LabctlError
from labctl.labhost import lab_container, node_where
from labctl.runs import RUNS_DIR, LabRuns, RunInfo
from labctl.state import LabRecord
from labctl.ui import Reporter

LOST_GRACE_S = 120.0  # how long the other nodes may take to end on their own once one node is lost
RANK_ZERO_FILE = "events.jsonl"  # written by rank 0 only, from the start of the run
# Binds the port asked for on the host's network (the node's container uses it), else any free one; prints it.
_PORT_PY = (
    "import socket,sys\n"
    "s=socket.socket()\n"
    "try:\n s.bind(('0.0.0.0',int(sys.argv[1])))\n"
    "except OSError:\n s.bind(('0.0.0.0',0))\n"
    "print(s.getsockname()[1])"
)


@dataclass
class NodeRun:
    """One node's part of a run: which node, how messages name it, and its container's runs."""

    node: int
    where: str
    runs: LabRuns


@contextmanager
def node_runs(record: LabRecord, ui: Reporter, nodes: int) -> Iterator[list[NodeRun]]:
    """The running lab containers of nodes 0 to ``nodes`` - 1; a node that cannot be reached is named."""
    with ExitStack() as stack:
        found = []
        for node in range(nodes):
            try:
                box = stack.enter_context(lab_container(record, ui, node=node))
            except LabctlError as exc:
                where = node_where(record, node)
                raise LabctlError(f"On {where}: {exc.message}", hint=exc.hint, exit_code=exc.exit_code) from None
            found.append(NodeRun(node, node_where(record, node), LabRuns(box)))
        yield found


def rendezvous_port(head: NodeRun, preferred: int = DEFAULT_RDZV_PORT) -> int:
    """Where torchrun's rendezvous listens on node 0: ``preferred``, or a free port if something holds it."""
    result = head.runs.box.exec(["python", "-c", _PORT_PY, str(preferred)], check=False)
    text = result.text.strip()
    return int(text) if result.exit_code == 0 and text.isdigit() else preferred


def rank_zero_node(nodes: list[NodeRun], run_id: str) -> NodeRun | None:
    """The node whose run directory rank 0 wrote to (unreachable nodes are passed over)."""
    for node in nodes:
        try:
            if node.runs.box.exists(str(RUNS_DIR / run_id / RANK_ZERO_FILE)):
                return node
        except LabctlError:
            continue
    return None


def stop_nodes(nodes: list[NodeRun], run_id: str) -> list[int]:
    """Ask the run to stop on every node that still runs it (SIGTERM, as `cancel`); the nodes that were asked."""
    asked = []
    for node in nodes:
        try:
            if node.runs.stop(run_id):
                asked.append(node.node)
        except _unreachable():
            continue  # a node that cannot be reached cannot be asked; its part ends with its peers
    return asked


def _unreachable() -> tuple[type[BaseException], ...]:
    import paramiko

    return (LabctlError, OSError, EOFError, paramiko.SSHException)


@dataclass
class _Tail:
    """Following one node's log by offset, as ``LabRuns.follow`` does for a run on one node."""

    node: NodeRun
    lines: RankLines
    offset: int = 0
    info: RunInfo | None = None  # once the node's part has ended
    lost: str | None = None  # why the node is lost, once it is
    unreachable: bool = False
    rank_zero: bool = False  # the node's output showed rank 0

    @property
    def active(self) -> bool:
        return self.info is None and self.lost is None

    def poll(self, run_id: str, show: Callable[[str], None]) -> None:
        log = RUNS_DIR / run_id / "train.log"
        try:
            info = self.node.runs.info(run_id)
            chunk = self.node.runs.read_from(log, self.offset)
            if info.state != "running":  # whatever was written between the two reads
                chunk += self.node.runs.read_from(log, self.offset + len(chunk))
        except _unreachable() as exc:
            reason = exc.message if isinstance(exc, LabctlError) else f"{type(exc).__name__}: {exc}"
            self.lost, self.unreachable = f"it could not be reached ({reason.rstrip('.')})", True
            return
        self.offset += len(chunk)
        self._show(self.lines.feed(chunk.decode(errors="replace")), show)
        if info.state == "lost":
            self.lost = "its launcher is gone (its container or machine restarted under it)"
        elif info.state != "running":
            self.info = info
            self._show(self.lines.flush(), show)

    def _show(self, lines: list[str], show: Callable[[str], None]) -> None:
        for line in lines:
            self.rank_zero = self.rank_zero or line.startswith("[rank 0] ")
            show(line)


@dataclass
class Followed:
    """What following a run on several nodes found: how each node's part ended, which were lost, and where."""

    infos: dict[int, RunInfo] = field(default_factory=dict)  # node -> its part's end (or state, unfollowed)
    lost: dict[int, str] = field(default_factory=dict)  # node -> why it is lost
    unreachable: set[int] = field(default_factory=set)  # the lost nodes that could not be asked at all
    rank_zero: int | None = None  # the node whose output showed rank 0
    stopped: bool = False  # the others were asked to stop after a node was lost


def follow_nodes(
    nodes: list[NodeRun],
    run_id: str,
    show: Callable[[str], None],
    *,
    follow: bool = True,
    poll: float = 1.0,
    grace: float | None = None,
) -> Followed:
    """Stream every node's log until each node's part ended or is lost (once, without ``follow``); ``grace``:
    how long the others may run on once a node is lost (default ``LOST_GRACE_S``) before they are asked to stop."""
    grace = LOST_GRACE_S if grace is None else grace
    tails = [_Tail(node, RankLines(node_rank=node.node)) for node in nodes]
    lost_at: float | None = None
    stopped = False
    while True:
        for tail in tails:
            if tail.active:
                tail.poll(run_id, show)
        active = [t for t in tails if t.active]
        if not follow or not active:
            break
        if lost_at is None and any(t.lost for t in tails):
            lost_at = time.monotonic()
        if lost_at is not None and time.monotonic() - lost_at > grace:
            if stopped:
                break  # asked to stop a grace ago and still running: leave them, and say so
            stop_nodes([t.node for t in active], run_id)
            stopped, lost_at = True, time.monotonic()
        time.sleep(poll)
    return Followed(
        infos={t.node.node: t.info for t in tails if t.info is not None},
        lost={t.node.node: t.lost for t in tails if t.lost is not None},
        unreachable={t.node.node for t in tails if t.unreachable},
        rank_zero=next((t.node.node for t in tails if t.rank_zero), None),
        stopped=stopped,
    )


__all__ = ["LOST_GRACE_S", "Followed", "NodeRun", "follow_nodes", "node_runs", "rank_zero_node", "rendezvous_port"]
