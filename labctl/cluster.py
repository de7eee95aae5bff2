"""A run on the lab's nodes: one run id, an ordinary run of ``labctl.runs`` in every node's container (a dropped
connection loses nothing), followed, found and stopped together."""

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

LOST_GRACE_S = 120.0  # once a node is lost, the others' time to end on their own (rank 0 saves its checkpoint)
RANK_ZERO_FILE = "events.jsonl"  # written by rank 0 only, from the start of the run
# Binds the port asked for on the host's network (the node's container uses it), else any free one; prints it.
_PORT_PY = """\
import socket, sys
s = socket.socket()
try:
    s.bind(("0.0.0.0", int(sys.argv[1])))
except OSError:
    s.bind(("0.0.0.0", 0))
print(s.getsockname()[1])
"""


@dataclass
class NodeRun:
    node: int
    where: str
    runs: LabRuns


class LabNodes(ExitStack):
    """Each node reached once, when a command first needs it; every connection closes when the ``with`` ends."""

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


def rendezvous_port(head: NodeRun) -> int:
    """The default port, or a free port of node 0 if something holds it."""
    result = head.runs.box.exec(["python", "-c", _PORT_PY, str(DEFAULT_RDZV_PORT)], check=False)
    text = result.text.strip()
    return int(text) if result.exit_code == 0 and text.isdigit() else DEFAULT_RDZV_PORT


def rank_zero_node(nodes: list[NodeRun], run_id: str) -> NodeRun | None:
    """The node whose run directory rank 0 wrote to; unreachable nodes are passed over."""
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
    """SIGTERM, as `cancel`, to every node that still runs it; the nodes that were asked."""
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
class Followed:
    infos: dict[int, RunInfo] = field(default_factory=dict)  # node -> its part's end
    lost: dict[int, str] = field(default_factory=dict)  # node -> why it is lost
    unreachable: set[int] = field(default_factory=set)  # the lost nodes that could not be asked at all
    rank_zero: int | None = None  # the node whose output showed rank 0
    stopped: bool = False  # the others were asked to stop after a node was lost

    def states(self, nodes: list[NodeRun]) -> dict[int, str]:
        ended = {n: "lost" if n in self.lost else info.state for n, info in self.infos.items()}
        return {n.node: ended.get(n.node, "lost" if n.node in self.lost else "running") for n in nodes}

    def active(self, nodes: list[NodeRun]) -> list[NodeRun]:
        return [n for n in nodes if n.node not in self.infos and n.node not in self.lost]


def follow_nodes(
    nodes: list[NodeRun],
    run_id: str,
    show: Callable[[str], None],
    *,
    follow: bool = True,
    poll: float = 1.0,
) -> Followed:
    """Until each node's part ended or is lost (once, without ``follow``). Logs are read by offset, so a new
    `labctl logs --follow` after a dropped connection sees every line."""
    lines = {n.node: RankLines(node_rank=n.node if len(nodes) > 1 else None) for n in nodes}
    offsets = dict.fromkeys(lines, 0)
    followed, lost_at = Followed(), None
    wait = 0.0  # the first look at once; later ones wait in the containers, where a run's end cuts the wait short
    while True:
        began, active = time.monotonic(), followed.active(nodes)
        for node in active:
            try:
                info, chunk = node.runs.read_log(run_id, offsets[node.node], wait / len(active))
            except _unreachable() as exc:
                reason = exc.message if isinstance(exc, LabctlError) else f"{type(exc).__name__}: {exc}"
                followed.lost[node.node] = f"it could not be reached ({reason.rstrip('.')})"
                followed.unreachable.add(node.node)
                continue
            offsets[node.node] += len(chunk)
            text = lines[node.node].feed(chunk.decode(errors="replace"))
            text += lines[node.node].flush() if info.state != "running" else []
            if any(line.startswith("[rank 0] ") for line in text) and followed.rank_zero is None:
                followed.rank_zero = node.node
            if text:
                show("\n".join(text))
            if info.state == "lost":
                followed.lost[node.node] = "its launcher is gone (its container or machine restarted under it)"
            if info.state != "running":
                followed.infos[node.node] = info
        active = followed.active(nodes)
        if not follow or not active:
            return followed
        if lost_at is None and followed.lost:
            lost_at = time.monotonic()
        if lost_at is not None and time.monotonic() - lost_at > LOST_GRACE_S:
            if followed.stopped:
                return followed  # asked to stop a grace ago and still running: leave them, and say so
            stop_nodes(active, run_id)
            followed.stopped, lost_at = True, time.monotonic()
        if wait:  # a wait cut short by one node's end while others go on: the rest of the poll here
            time.sleep(max(0.0, began + poll - time.monotonic()))
        wait = poll
