"""The lab container on every node at once, the same for every target: prepare (idempotent), reach, describe, remove.
Preparing a machine runs ``templates/`` scripts (Docker; the NVIDIA runtime on GPU machines) and waits for the
dependency image cloud-init builds while the VM boots, building it here where that build is absent, failed or died."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from labctl import container as lab
from labctl import workspace
from labctl.distributed import GPU_PROBE, TORCH_PROBE, parse_gpu_count
from labctl.errors import LabctlError, NotFound
from labctl.files import template
from labctl.machine import DEFAULT_WAIT, Machine, connect
from labctl.runs import LabRuns
from labctl.state import LabRecord
from labctl.ui import NodeReporter, PlainReporter, Reporter

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

PORT_TRIES = 20  # ports from the recorded one tried when the machine's loopback port is taken
# Everyday commands meet a machine that is up or not: a short retry rides out a blip, and a stopped VM is
# reported in seconds rather than after the minutes `up` allows a booting one.
EVERYDAY_WAIT = 5.0
SCRIPT_TIMEOUT_S = 1800  # a first install of Docker or the NVIDIA toolkit downloads a few hundred MB
PREWARM_DIR = "/var/lib/labctl"
PREWARM_SCRIPT = "labctl-prewarm.sh"
# Started by cloud-init as an argv; the script, image and tag are its arguments, never part of this text.
LAUNCH = 'nohup bash "$@" >/dev/null 2>&1 &'
# Read by labctl over SSH, with the directory as "$1": the state, "stale" for a run that is no longer alive
# (the machine rebooted, or the script was killed), then the last line of the log.
STATUS = r"""
d="$1"
[ -r "$d/prewarm.state" ] || { echo absent; exit 0; }
read -r state pid boot <"$d/prewarm.state"
now="$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown)"
if [ "$state" = running ] && { [ "$boot" != "$now" ] || [ ! -d "/proc/$pid" ]; }; then
  state=stale
fi
echo "${state:-absent}"
tail -n 1 "$d/prewarm.log" 2>/dev/null || true
"""
WAIT_S = 2700.0  # a pull of several GB and the pip installs, on a slow day
PENDING_S = 300.0  # how long cloud-init may take to start the script after SSH answers
T = TypeVar("T")


def node_where(record: LabRecord, node: int) -> str:
    reach = record.nodes[node]
    user = reach.user or record.nodes[0].user
    where = f"{user}@{reach.host}:{reach.port}" if reach.host else "this computer"
    where = reach.name if node and reach.name else where
    return f"node {node} ({where})" if len(record.nodes) > 1 else where


def private_addresses(record: LabRecord) -> list[str]:
    return [n.private_address or n.host or "127.0.0.1" for n in record.nodes]


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
    """Every node's container, from ``image``, else the image the lab was made from, else labctl's lab image."""
    image = image or record.image_asked
    record.jupyter_token = record.jupyter_token or secrets.token_hex(32)
    on_each_node(record, lambda node, node_ui: _prepare_node(record, node, node_ui, image), ui)
    return record


def _prepare_node(record: LabRecord, node: int, ui: Reporter, image: str | None) -> None:
    with connect(record, ui, wait=DEFAULT_WAIT, node=node) as machine:
        if machine.remote:
            user = record.nodes[node].user or record.nodes[0].user
            with ui.step(f"Docker on {machine.describe()}"):
                out = run_script(machine, "bootstrap-docker.sh", [user] if user else [], ui, "docker")
            if "to the docker group" in out:
                machine.reconnect()  # group membership only applies to new logins
            if record.gpu:
                with ui.step(f"NVIDIA driver and container runtime on {machine.describe()}"):
                    run_script(machine, "bootstrap-nvidia.sh", [lab.effective_base_image()], ui, "nvidia")
        client = machine.docker()
        if machine.remote:  # the pull and build the boot may have under way are not started twice; with an image
            # given, only cloud-init's commands before it: the workspace volume's binding, which the container needs
            await_prewarm(machine, ui, started=bool(image) or lab.has_image(client, lab.deps_tag()))
        tag = lab.ensure_image(client, ui, image)
        tag = lab.with_packages(client, ui, record.name, tag, record.requirements) if record.requirements else tag
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


def run_script(machine: Machine, name: str, args: list[str], ui: Reporter, prefix: str) -> str:
    """Its last ``PREFIX: ERROR: reason`` line is the error."""
    script = template(name).read_text()
    result = machine.run(
        ["bash", "-s", "--", *args],
        stdin=script,
        on_line=lambda line: ui.info(f"  {line}") if line.strip() else None,
        check=False,
        timeout=SCRIPT_TIMEOUT_S,
    )
    if result.exit_code != 0:
        errors = [ln for ln in result.output.splitlines() if f"{prefix}: ERROR:" in ln]
        reason = errors[-1].split("ERROR:", 1)[1].strip() if errors else result.output.strip()[-500:]
        raise LabctlError(
            f"Preparing {machine.describe()} failed ({name}, exit code {result.exit_code}): {reason}",
            hint="Fix that on the machine ('labctl ssh' opens a shell there) and run 'labctl up' again.",
        )
    return result.output


def check_cuda(client: docker.DockerClient, image: str, ui: Reporter) -> None:
    import docker.errors
    from docker.types import DeviceRequest

    code = "import torch; assert torch.cuda.is_available(), 'no CUDA'; print(torch.cuda.get_device_name(0))"
    gpus = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    with ui.step("CUDA check inside a container"):
        try:
            out = client.containers.run(image, ["python", "-c", code], remove=True, device_requests=gpus)
        except (docker.errors.ContainerError, docker.errors.APIError) as exc:
            raise LabctlError(
                f"A container on the machine cannot use the GPU ({exc}).",
                hint="Check 'nvidia-smi' on the machine ('labctl ssh'); a driver update may need a reboot.",
            ) from None
        ui.info(f"  GPU: {out.decode().strip()}")


def cloud_init(base: str, deps_tag: str) -> tuple[list[dict[str, Any]], list[str]]:
    """``write_files`` and the ``runcmd`` argv: contents are data, the checked image references arguments."""
    files = [
        (PREWARM_SCRIPT, "0755", template(PREWARM_SCRIPT).read_text()),
        ("deps/Dockerfile", "0644", template("Dockerfile.deps").read_text()),
        # cloud-init writes files before SSH answers but runs commands later: labctl waits for a pending prewarm.
        ("prewarm.state", "0644", "pending\n"),
    ]
    written = [{"path": f"{PREWARM_DIR}/{name}", "permissions": mode, "content": text} for name, mode, text in files]
    return written, ["sh", "-c", LAUNCH, "labctl-prewarm", f"{PREWARM_DIR}/{PREWARM_SCRIPT}", base, deps_tag]


def read_state(machine: Machine) -> tuple[str, str]:
    """(absent, pending, running, stale, done or failed; the last log line)."""
    where = os.environ.get("LABCTL_PREWARM_DIR") or PREWARM_DIR
    result = machine.run(["sh", "-c", STATUS, "labctl-prewarm-status", where], check=False, timeout=60)
    lines = result.output.strip().splitlines() if result.exit_code == 0 else []
    return (lines[0].strip(), lines[1].strip() if len(lines) > 1 else "") if lines else ("absent", "")


def await_prewarm(machine: Machine, ui: Reporter, *, timeout: float = WAIT_S, started: bool = False) -> str:
    """Only ``done`` means the dependency image is there; ``started``: wait only until cloud-init has started it."""
    waiting = ("pending",) if started else ("pending", "running")
    state, last = read_state(machine)
    if state not in waiting:
        return state
    start, shown = time.monotonic(), ""
    with ui.step("Waiting for the dependency image the machine builds while it boots"):
        while state in waiting:
            if last and last != shown:
                ui.info(f"  {last[:160]}")
                shown = last
            waited = time.monotonic() - start
            if waited > timeout or (state == "pending" and waited > PENDING_S):
                ui.warn(f"The machine's image preparation is still {state} after {waited:.0f}s; labctl builds it.")
                return "timeout"
            time.sleep(float(os.environ.get("LABCTL_PREWARM_POLL") or 1))
            state, last = read_state(machine)
    if state != "done":
        ui.warn(f"The machine's image preparation ended {state} ({last or 'no log'}); labctl builds the image itself.")
    return state


def teardown_lab(record: LabRecord, ui: Reporter, *, keep_volume: bool = False) -> list[str]:
    """A failure says what is left and how to remove it by hand: `down` must never claim a clean slate. ``keep_volume``
    keeps node 0's workspace volume, the one `down --keep-workspace` keeps."""
    removed = on_each_node(record, lambda node, node_ui: _teardown_node(record, node, node_ui, keep_volume), ui)
    return [what for done in removed for what in done]


def _teardown_node(record: LabRecord, node: int, ui: Reporter, keep_volume: bool) -> list[str]:
    try:
        with connect(record, ui, wait=EVERYDAY_WAIT, node=node) as machine:
            client = machine.docker()
            removed = lab.remove_lab(client, record.name, keep_volume=keep_volume and not node, node=node)
            removed += lab.remove_packages(client, record.name, record.image)
    except LabctlError as exc:
        raise LabctlError(
            f"Could not remove the lab container on {node_where(record, node)}: {exc.message}",
            hint="Fix that (the machine unreachable, or Docker stopped) and run 'labctl down' again, or remove it "
            f"there by hand with 'docker rm -f {lab.container_name(record.name, node)}"
            + ("'." if keep_volume and not node else f"; docker volume rm {lab.volume_name(record.name, node)}'."),
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
                    facts["latest_run"] = max(infos, key=lambda i: i.run_id).facts()
    except LabctlError as exc:
        facts.update(reachable=False, error=exc.message)
    except Exception as exc:  # docker API and HTTP errors from a half-working machine: report, do not crash
        facts.update(reachable=False, error=f"{type(exc).__name__}: {exc}")
    return facts
