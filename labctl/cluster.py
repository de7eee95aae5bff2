"""A run on the lab's nodes (one or several): the same run id in every node's lab container, followed, found and
stopped together. Each node's part is an ordinary run of ``labctl.runs``, so a dropped connection loses nothing;
once one node is lost the others get ``LOST_GRACE_S`` to stop on their own (rank 0 saves its checkpoint) before
they are asked to.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

from labctl.distributed import DEFAULT_RDZV_PORT, RankLines
from labctl.errors import LabctlError
from labctl.labhost import lab_container, naming_node, node_where
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


class LabNodes(ExitStack):
    """The running lab containers of a lab's first nodes, each reached once as a command comes to need them; every
    connection closes when the ``with`` ends."""

    def __init__(self, record: LabRecord, ui: Reporter) -> None:
        super().__init__()
        self.record, self.ui = record, ui
        self.reached: list[NodeRun] = []

    def first(self, count: int) -> list[NodeRun]:
        for node in range(len(self.reached), count):
            with naming_node(self.record, node):
                box = self.enter_context(lab_container(self.record, self.ui, node=node))
            self.reached.append(NodeRun(node, node_where(self.record, node), LabRuns(box)))
        return self.reached[:count]


def rendezvous_port(head: NodeRun, preferred: int = DEFAULT_RDZV_PORT) -> int:
    """Where torchrun's rendezvous listens on node 0: ``preferred``, or a free port if something holds it."""
    result = head.runs.box.exec(["python", "-c", _PORT_PY, str(preferred)], check=False)
    text = result.text.strip()
    return int(text) if result.exit_code == 0 and text.isdigit() else preferred


def rank_zero_node(nodes: list[NodeRun], run_id: str) -> NodeRun | None:
    """The node whose run directory rank 0 wrote to (unreachable nodes are passed over); on one node, that one."""
    if len(nodes) == 1:
        return nodes[0]
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
    """One node's log, followed by offset (``LabRuns.read_log``), as whole merged lines."""

    node: NodeRun
    lines: RankLines
    offset: int = 0
    info: RunInfo | None = None  # once the node's part has ended (state "lost" included)
    lost: str | None = None  # why the node is lost, once it is
    unreachable: bool = False
    rank_zero: bool = False  # the node's output showed rank 0

    @property
    def active(self) -> bool:
        return self.info is None and self.lost is None

    def poll(self, run_id: str, show: Callable[[str], None]) -> None:
        try:
            info, chunk = self.node.runs.read_log(run_id, self.offset)
        except _unreachable() as exc:
            reason = exc.message if isinstance(exc, LabctlError) else f"{type(exc).__name__}: {exc}"
            self.lost, self.unreachable = f"it could not be reached ({reason.rstrip('.')})", True
            return
        self.offset += len(chunk)
        self._show(self.lines.feed(chunk.decode(errors="replace")), show)
        if info.state == "lost":
            self.lost = "its launcher is gone (its container or machine restarted under it)"
        if info.state != "running":
            self.info = info
            self._show(self.lines.flush(), show)

    def _show(self, lines: list[str], show: Callable[[str], None]) -> None:
        self.rank_zero = self.rank_zero or any(line.startswith("[rank 0] ") for line in lines)
        if lines:
            show("\n".join(lines))


@dataclass
class Followed:
    """What following a run found: how each node's part ended, which were lost, and where rank 0 was."""

    infos: dict[int, RunInfo] = field(default_factory=dict)  # node -> its part's end
    lost: dict[int, str] = field(default_factory=dict)  # node -> why it is lost
    unreachable: set[int] = field(default_factory=set)  # the lost nodes that could not be asked at all
    rank_zero: int | None = None  # the node whose output showed rank 0
    stopped: bool = False  # the others were asked to stop after a node was lost

    def states(self, nodes: list[NodeRun]) -> dict[int, str]:
        ended = {n: "lost" if n in self.lost else info.state for n, info in self.infos.items()}
        return {n.node: ended.get(n.node, "lost" if n.node in self.lost else "running") for n in nodes}


def follow_nodes(
    nodes: list[NodeRun],
    run_id: str,
    show: Callable[[str], None],
    *,
    follow: bool = True,
    poll: float = 1.0,
    grace: float | None = None,
) -> Followed:
    """Stream every node's log to ``show`` until each node's part ended or is lost (once, without ``follow``).
    Logs are read by offset, so a new `labctl logs --follow` after a dropped connection sees every line."""
    grace = LOST_GRACE_S if grace is None else grace
    several = len(nodes) > 1
    tails = [_Tail(node, RankLines(node_rank=node.node if several else None)) for node in nodes]
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
