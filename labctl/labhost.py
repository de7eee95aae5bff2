"""The lab container on every node at once, the same for every target: prepare (idempotent), reach, describe, remove.
Node 0 runs Jupyter; the other nodes' containers only train."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from labctl import container as lab
from labctl import workspace
from labctl.bootstrap import await_prewarm, bootstrap_docker, bootstrap_nvidia, check_cuda
from labctl.distributed import GPU_PROBE, TORCH_PROBE, parse_gpu_count
from labctl.errors import LabctlError, NotFound
from labctl.machine import DEFAULT_WAIT, connect
from labctl.runs import LabRuns
from labctl.state import LabRecord
from labctl.ui import NodeReporter, PlainReporter, Reporter

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

# How many ports above the recorded one to try when the machine's loopback port is taken.
PORT_TRIES = 20
# Everyday commands meet a machine that is up or not: a short retry rides out a blip, and a stopped VM is
# reported in seconds rather than after the minutes `up` allows a booting one.
EVERYDAY_WAIT = 5.0


def node_where(record: LabRecord, node: int) -> str:
    """``node 1 (me@10.0.0.5:22)``, or on a lab of one machine just the machine."""
    reach = record.nodes[node]
    user = reach.user or record.nodes[0].user
    where = f"{user}@{reach.host}:{reach.port}" if reach.host else "this computer"
    where = reach.name if node and reach.name else where
    return f"node {node} ({where})" if len(record.nodes) > 1 else where


def private_addresses(record: LabRecord) -> list[str]:
    """Where the nodes reach each other: each one's private address, else the address labctl uses."""
    return [n.private_address or n.host or "127.0.0.1" for n in record.nodes]


T = TypeVar("T")


def side_by_side(calls: Sequence[Callable[[], T]], name: str = "labctl-call") -> list[T]:
    """Every call at once, their results in order, or the first failure once all are done. Daemon threads waited
    for in short slices: Ctrl-C ends the command at once (a pool's workers would hold the exit)."""
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as exc:  # handed to the caller's thread, raised there
            errors[index] = exc

    threads = [threading.Thread(target=run, args=(i,), name=f"{name}{i}", daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.1)
    if failure := next((error for error in errors if error is not None), None):
        raise failure
    return results


def on_each_node(record: LabRecord, action: Callable[[int, Reporter], T], ui: Reporter) -> list[T]:
    """One thread a node; once all are done the first failure is raised, named."""
    if len(record.nodes) == 1:
        return [action(0, ui)]

    def one(node: int) -> T:
        with naming_node(record, node):
            return action(node, NodeReporter(ui, f"[node {node}]"))

    return side_by_side([functools.partial(one, n) for n in range(len(record.nodes))], "labctl-node")


@contextmanager
def naming_node(record: LabRecord, node: int) -> Iterator[None]:
    try:
        yield
    except LabctlError as exc:
        if len(record.nodes) == 1:
            raise
        raise LabctlError(
            f"On {node_where(record, node)}: {exc.message}", hint=exc.hint, exit_code=exc.exit_code
        ) from None


def prepare_lab(record: LabRecord, ui: Reporter, *, image: str | None = None) -> LabRecord:
    if not record.jupyter_token:
        record.jupyter_token = secrets.token_hex(32)
    on_each_node(record, lambda node, node_ui: _prepare_node(record, node, node_ui, image), ui)
    return record


def _prepare_node(record: LabRecord, node: int, ui: Reporter, image: str | None) -> None:
    with connect(record, ui, wait=DEFAULT_WAIT, node=node) as machine:
        if machine.remote:
            user = record.nodes[node].user or record.nodes[0].user
            bootstrap_docker(machine, ui, user)
            if record.gpu:
                bootstrap_nvidia(machine, ui, lab.effective_base_image())
        client = machine.docker()
        if not image and machine.remote and not lab.has_image(client, lab.deps_tag()):
            await_prewarm(machine, ui)  # the pull and build it may have under way are not started twice
        tag = lab.ensure_image(client, ui, image)
        if record.gpu:
            check_cuda(client, tag, ui)
        _node_container(client, record, node, tag, ui)


def _node_container(client: docker.DockerClient, record: LabRecord, node: int, tag: str, ui: Reporter) -> None:
    if node:
        record.nodes[node].container_name = lab.container_name(record.name, node)
    else:
        record.image, record.container_name = tag, lab.container_name(record.name)
    token, several = record.jupyter_token or "", len(record.nodes) > 1
    spec = lab.ContainerSpec(record.name, tag, record.gpu, node, token, record.jupyter_port, several)
    existing = lab.find_container(client, record.name, node)
    if existing is not None and lab.is_current(existing, client, spec):
        ui.info(f"The lab container {existing.name} is running{'' if node else ' and healthy'}; keeping it.")
        container = existing
    else:
        if existing is not None:
            ui.info(f"Replacing the lab container {existing.name} (state: {existing.status}).")
        if node:
            with ui.step("Starting the lab container (no Jupyter: node 0 has it)"):
                container = lab.start_container(client, spec)
        else:
            with ui.step("Starting Jupyter in the lab container"):
                container = _start_on_free_port(client, spec, record, ui)
    if node == 0 and workspace.seed_workspace(lab.LabContainer(container)):
        ui.info(f"Copied {lab.NOTEBOOK} into the workspace.")


def _start_on_free_port(
    client: docker.DockerClient, spec: lab.ContainerSpec, record: LabRecord, ui: Reporter
) -> Container:
    first = spec.port
    for port in range(first, first + PORT_TRIES):
        try:
            container = lab.start_container(client, dataclasses.replace(spec, port=port))
            lab.wait_ready(container, port=port if spec.several_nodes else None)
        except lab.PortBusy:
            continue
        if port != first:
            ui.info(f"Port {first} is taken on the machine; Jupyter listens on its 127.0.0.1:{port} instead.")
        record.jupyter_port = port
        return container
    raise LabctlError(
        f"Ports {first}-{first + PORT_TRIES - 1} are all taken on the machine's loopback.",
        hint="Free one of them, or stop other Jupyter servers there, and run 'labctl up' again.",
    )


def teardown_lab(record: LabRecord, ui: Reporter, *, keep_volume: bool = False) -> list[str]:
    """A failure says what is left and how to remove it by hand: `down` must never claim a clean slate."""
    removed = on_each_node(record, lambda node, node_ui: _teardown_node(record, node, node_ui, keep_volume), ui)
    return [what for done in removed for what in done]


def _teardown_node(record: LabRecord, node: int, ui: Reporter, keep_volume: bool) -> list[str]:
    try:
        with connect(record, ui, wait=EVERYDAY_WAIT, node=node) as machine:
            removed = lab.remove_lab(machine.docker(), record.name, keep_volume=keep_volume, node=node)
    except LabctlError as exc:
        raise LabctlError(
            f"Could not remove the lab container on {node_where(record, node)}: {exc.message}",
            hint="Fix that (the machine unreachable, or Docker stopped) and run 'labctl down' again, or remove it "
            f"there by hand with 'docker rm -f {lab.container_name(record.name, node)}; docker volume rm "
            f"{lab.volume_name(record.name, node)}'.",
        ) from None
    for what in removed:
        ui.info(f"Removed {what}.")
    return removed


@contextmanager
def lab_container(record: LabRecord, ui: Reporter, *, node: int = 0) -> Iterator[lab.LabContainer]:
    """Started again if it was stopped; the connection closes after."""
    record.require_ready()
    with connect(record, ui, wait=EVERYDAY_WAIT, node=node) as machine:
        found = lab.find_container(machine.docker(), record.name, node)
        if found is None:
            raise NotFound(
                f"Lab '{record.name}' has no container on {machine.describe()}.",
                hint="Run 'labctl up' to start it again.",
            )
        if found.status != "running":
            with contextlib.suppress(Exception):
                found.start()
            found.reload()
            if found.status != "running":
                raise LabctlError(
                    f"The lab container {found.name} is {found.status}.", hint="Run 'labctl up' to repair it."
                )
        yield lab.LabContainer(found)


def count_gpus(record: LabRecord, box: lab.LabContainer) -> int:
    if not record.gpu:
        return 0
    probe = box.exec(GPU_PROBE, check=False)
    if probe.exit_code in (126, 127):  # no nvidia-smi in the container: ask torch
        probe = box.exec(TORCH_PROBE, check=False)
    return parse_gpu_count(probe.text, probe.exit_code)


def describe_lab(record: LabRecord, *, machines: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Each node dialled once, never raising; a machine the target reports off (``machines``) is not dialled: asking
    must not revive a lab the user stopped."""
    known = {int(m["node"]): m for m in machines if isinstance(m, dict) and "node" in m}
    off = {n for n, m in known.items() if m.get("power_state") not in (None, "running")}
    nodes = on_each_node(record, lambda n, _: _describe_node(record, n, n in off), PlainReporter(quiet=True))
    head = {k: v for k, v in nodes[0].items() if k not in ("node", "address", "private_address", "gpus")}
    facts = {} if 0 in off else {"jupyter_port": record.jupyter_port, "image": record.image, **head}
    if len(nodes) > 1:
        facts["nodes"] = [{**known.get(n, {}), **node} for n, node in enumerate(nodes)]
    return facts


def _describe_node(record: LabRecord, node: int, off: bool) -> dict[str, Any]:
    address = node_where(record, node).split(" (", 1)[-1].rstrip(")")
    facts: dict[str, Any] = {"node": node, "address": address, "private_address": private_addresses(record)[node]}
    if off:
        return {**facts, "reachable": False, "error": "its machine is not running"}
    try:
        with connect(record, PlainReporter(quiet=True), wait=EVERYDAY_WAIT, node=node) as machine:
            facts["reachable"] = True
            found = lab.find_container(machine.docker(), record.name, node)
            if found is None:
                return {**facts, "container": "missing", **({"jupyter": "down"} if node == 0 else {})}
            box = lab.LabContainer(found)
            health = found.attrs.get("State", {}).get("Health", {}).get("Status", "none")
            facts.update(container=found.status, health=health)
            running = found.status == "running"
            if running and len(record.nodes) > 1:
                facts["gpus"] = count_gpus(record, box)
            if node == 0:
                facts["jupyter"] = "up" if running and lab.jupyter_answers(found) else "down"
            if node == 0 and running:
                infos = LabRuns(box).list()
                facts["runs"] = len(infos)
                if infos:
                    facts["latest_run"] = max(infos, key=lambda i: i.run_id).to_json()
    except LabctlError as exc:
        facts.update(reachable=False, error=exc.message)
    except Exception as exc:  # docker API and HTTP errors from a half-working machine: report, do not crash
        facts.update(reachable=False, error=f"{type(exc).__name__}: {exc}")
    return facts
