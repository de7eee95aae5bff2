"""The lab on its host: from a reachable machine to a healthy Jupyter container and back, the same for every target.

``prepare_lab`` converges (bootstrap Docker, and the NVIDIA runtime on GPU machines; the image; the container)
and is safe to run again at any point. ``lab_container`` reaches the running container of a ready lab,
``describe_lab`` reports on it without changing anything, and ``teardown_lab`` removes the container and its
volume, never the machine. The machine itself is ``labctl.machine``; the container, ``labctl.container``.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from labctl import container as lab
from labctl import workspace
from labctl.bootstrap import bootstrap_docker, bootstrap_nvidia, check_cuda
from labctl.errors import LabctlError, NotFound
from labctl.machine import DEFAULT_WAIT, Machine, connect
from labctl.prewarm import await_prewarm
from labctl.state import LabRecord
from labctl.ui import Reporter

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

# How many ports above the recorded one to try when the machine's loopback port is taken.
PORT_TRIES = 20
# Everyday commands meet a machine that is up or not: a short retry rides out a blip, and a stopped VM is
# reported in seconds rather than after the minutes `up` allows a booting one.
EVERYDAY_WAIT = 5.0


@contextmanager
def machine_for(
    record: LabRecord, ui: Reporter, *, wait: float = EVERYDAY_WAIT, mark: bool = True
) -> Iterator[Machine]:
    machine = connect(record, ui, wait=wait, mark=mark)
    try:
        yield machine
    finally:
        machine.close()


def prepare_lab(record: LabRecord, ui: Reporter, *, image: str | None = None) -> LabRecord:
    """Converge the machine to a healthy lab container; fills image, container name and token. Idempotent."""
    with machine_for(record, ui, wait=DEFAULT_WAIT) as machine:
        if machine.kind != "local":
            bootstrap_docker(machine, ui, record.user)
            if record.gpu:
                bootstrap_nvidia(machine, ui, lab.effective_base_image())
        client = machine.docker()
        if not image and machine.kind != "local" and not lab.has_image(client, lab.deps_tag()):
            await_prewarm(machine, ui)  # the pull and build it may have under way are not started twice
        tag = lab.ensure_image(client, ui, image)
        if record.gpu:
            check_cuda(client, tag, ui)
        record.image = tag
        record.container_name = lab.container_name(record.name)
        if not record.jupyter_token:
            record.jupyter_token = secrets.token_hex(32)
        token = record.jupyter_token
        existing = lab.find_container(client, record.name)
        if existing is not None and lab.is_current(existing, client, tag, token, record.jupyter_port, record.gpu):
            ui.info(f"The lab container {existing.name} is running and healthy; keeping it.")
            container = existing
        else:
            if existing is not None:
                ui.info(f"Replacing the lab container {existing.name} (state: {existing.status}).")
            with ui.step("Starting Jupyter in the lab container"):
                container = _start_on_free_port(client, record, tag, token, ui)
                lab.wait_ready(container)
        box = lab.LabContainer(container)
        first_start = not box.exists(f"{lab.WORKSPACE}/{lab.SEED_MARKER}")
        if lab.seed_workspace(box):
            ui.info(f"Copied {lab.NOTEBOOK} into the workspace.")
        if first_start:  # what the workspace holds now is labctl's; what changes from here on is the user's
            workspace.save_baseline(container)
    return record


def _start_on_free_port(
    client: docker.DockerClient, record: LabRecord, tag: str, token: str, ui: Reporter
) -> Container:
    first = record.jupyter_port
    for port in range(first, first + PORT_TRIES):
        try:
            container = lab.start_container(client, record.name, tag, token=token, port=port, gpu=record.gpu)
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
    """Remove the lab container (and its workspace volume unless ``keep_volume``); the machine stays.

    A failure says what is left and how to remove it by hand, since `down` must never claim a clean slate.
    """
    where = record.host or "this computer"
    try:
        with machine_for(record, ui) as machine:
            client = machine.docker()
            removed = lab.remove_lab(client, record.name, keep_volume=keep_volume)
    except LabctlError as exc:
        raise LabctlError(
            f"Could not remove the lab container on {where}: {exc.message}",
            hint="Fix that (the machine unreachable, or Docker stopped) and run 'labctl down' again, or remove it "
            f"there by hand with 'docker rm -f {lab.container_name(record.name)}; docker volume rm "
            f"{lab.volume_name(record.name)}'.",
        ) from None
    for what in removed:
        ui.info(f"Removed {what}.")
    return removed


@contextmanager
def lab_container(record: LabRecord, ui: Reporter, *, wait: float = EVERYDAY_WAIT) -> Iterator[lab.LabContainer]:
    """The running lab container of a ready lab (started again if it was stopped); the connection closes after."""
    record.require_ready()
    with machine_for(record, ui, wait=wait) as machine:
        found = lab.find_container(machine.docker(), record.name)
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


def describe_lab(record: LabRecord, *, wait: float = EVERYDAY_WAIT) -> dict[str, object]:
    """Live, read-only facts about the lab container for `labctl status`; never raises for an unreachable machine.

    One connection gathers everything (container, Jupyter, runs), and nothing is started or changed: asking
    for the status must not revive a lab the user stopped. (Reading the runs may copy labctl's small state
    program into the container's ``.labctl/tools``, once per labctl version.)
    """
    from labctl.runs import LabRuns
    from labctl.ui import PlainReporter

    quiet = PlainReporter(quiet=True)
    facts: dict[str, object] = {"jupyter_port": record.jupyter_port, "image": record.image}
    try:
        with machine_for(record, quiet, wait=wait) as machine:
            facts["reachable"] = True
            found = lab.find_container(machine.docker(), record.name)
            if found is None:
                facts.update(container="missing", jupyter="down")
                return facts
            box = lab.LabContainer(found)
            state = box.state()
            running = state["container"] == "running"
            facts.update(container=state["container"], health=state["health"])
            facts["jupyter"] = "up" if running and lab.jupyter_answers(found) else "down"
            if running:
                infos = LabRuns(box).list()
                facts["runs"] = len(infos)
                if infos:
                    facts["latest_run"] = max(infos, key=lambda i: i.run_id).to_json()
    except LabctlError as exc:
        facts.update(reachable=False, error=exc.message)
    except Exception as exc:  # docker API and HTTP errors from a half-working machine: report, do not crash
        facts.update(reachable=False, error=f"{type(exc).__name__}: {exc}")
    return facts


__all__ = ["describe_lab", "lab_container", "machine_for", "prepare_lab", "teardown_lab"]
