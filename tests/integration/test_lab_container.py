"""The lab container from labctl's real image (built FROM the test base): Jupyter, its token, its binding."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from labctl import container as lab
from labctl import workspace
from labctl.labhost import prepare_lab, teardown_lab
from labctl.state import LabRecord
from labctl.ui import PlainReporter
from tests.support.sshd import free_port

pytestmark = pytest.mark.integration


def _status(port: int, token: str | None, host: str = "127.0.0.1") -> int:
    headers = {"Authorization": f"token {token}"} if token else {}
    request = urllib.request.Request(f"http://{host}:{port}/api/status", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture
def own_lab(lab_image: str, lab_name: str) -> LabRecord:
    """A lab of the test's own, for a test that stops, replaces or removes it."""
    return prepare_lab(LabRecord(name=lab_name, target="local", jupyter_port=free_port()), PlainReporter(quiet=True))


def test_jupyter_answers_with_the_token_only(shared_lab: LabRecord, lab_image: str) -> None:
    token = shared_lab.jupyter_token
    assert token is not None and len(token) == 64 and int(token, 16) >= 0  # 256 bits, hex
    assert shared_lab.image == lab_image
    assert shared_lab.container_name == f"labctl-{shared_lab.name}"
    assert _status(shared_lab.jupyter_port, token) == 200
    assert _status(shared_lab.jupyter_port, None) == 403
    assert _status(shared_lab.jupyter_port, "0" * 64) == 403


def test_opens_check_accepts_the_token_and_explains_a_wrong_one(shared_lab: LabRecord) -> None:
    from labctl.errors import LabctlError
    from labctl.workflows.reach import check_jupyter

    assert shared_lab.jupyter_token
    check_jupyter(shared_lab.jupyter_port, shared_lab.jupyter_token)
    with pytest.raises(LabctlError) as failed:
        check_jupyter(shared_lab.jupyter_port, "cd" * 32)
    assert "refused the lab's token" in failed.value.render()
    assert "cd" * 32 not in failed.value.render()


def test_published_on_loopback_only(shared_lab: LabRecord, docker_client: Any) -> None:
    container = docker_client.containers.get(shared_lab.container_name)
    bindings = container.attrs["HostConfig"]["PortBindings"]["8888/tcp"]
    assert bindings == [{"HostIp": "127.0.0.1", "HostPort": str(shared_lab.jupyter_port)}]
    # 127.0.0.2 is this machine too; a server published on all addresses would answer there.
    with pytest.raises(OSError), socket.create_connection(("127.0.0.2", shared_lab.jupyter_port), timeout=3):
        pass


def test_container_settings(shared_lab: LabRecord, docker_client: Any) -> None:
    container = docker_client.containers.get(shared_lab.container_name)
    attrs = container.attrs
    assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert container.labels[lab.LAB_LABEL] == shared_lab.name
    assert "/api/status" in " ".join(attrs["Config"]["Healthcheck"]["Test"])
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts["/workspace"]["Name"] == lab.volume_name(shared_lab.name)
    # The token is passed in, and Jupyter does not print it in its log.
    assert shared_lab.jupyter_token not in container.logs().decode(errors="replace")
    assert f"JUPYTER_TOKEN={shared_lab.jupyter_token}" in attrs["Config"]["Env"]


def test_rerun_keeps_a_healthy_container_replaces_a_broken_one_and_teardown_removes_it(
    own_lab: LabRecord, docker_client: Any
) -> None:
    first = docker_client.containers.get(own_lab.container_name)
    token = own_lab.jupyter_token
    again = prepare_lab(own_lab, PlainReporter(quiet=True))
    assert docker_client.containers.get(own_lab.container_name).id == first.id
    assert again.jupyter_token == token

    lab.LabContainer(first).put("/workspace", {"keep.txt": b"mine\n"})
    first.stop(timeout=2)
    prepare_lab(own_lab, PlainReporter(quiet=True))
    replaced = docker_client.containers.get(own_lab.container_name)
    assert replaced.id != first.id
    assert _status(own_lab.jupyter_port, token) == 200
    kept = lab.LabContainer(replaced).exec(["cat", "/workspace/keep.txt"]).text
    assert kept == "mine\n", "the workspace volume survives a replaced container"

    # Teardown on the same lab (each new lab costs a Jupyter start): the container first, then the volume.
    import docker.errors

    removed = teardown_lab(own_lab, PlainReporter(quiet=True), keep_volume=True)
    assert removed == [f"container {own_lab.container_name}"]
    docker_client.volumes.get(lab.volume_name(own_lab.name))
    removed = teardown_lab(own_lab, PlainReporter(quiet=True))
    assert removed == [f"volume {lab.volume_name(own_lab.name)}"]
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(lab.volume_name(own_lab.name))


def test_a_given_image_is_used_as_is_and_a_busy_port_on_the_machine_moves_jupyter(
    lab_image: str, lab_name: str, docker_client: Any
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        record = prepare_lab(
            LabRecord(name=lab_name, target="local", jupyter_port=taken), PlainReporter(quiet=True), image=lab_image
        )
    assert record.jupyter_port != taken
    assert _status(record.jupyter_port, record.jupyter_token) == 200
    assert record.image == lab_image
    assert docker_client.containers.get(record.container_name).image.id == docker_client.images.get(lab_image).id


def test_notebook_is_seeded_once_and_never_overwritten(
    shared_lab: LabRecord, docker_client: Any, tmp_path: Path
) -> None:
    container = docker_client.containers.get(shared_lab.container_name)
    box = lab.LabContainer(container)
    box.exec(["rm", "-f", f"/workspace/{workspace.SEED_MARKER}", f"/workspace/{lab.NOTEBOOK}"])
    notebook = tmp_path / lab.NOTEBOOK
    notebook.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    box.put("/workspace", {lab.NOTEBOOK: b"user-version\n"})
    assert workspace.seed_workspace(box, notebook) is False  # the user's copy stays
    assert box.exec(["cat", f"/workspace/{lab.NOTEBOOK}"]).text == "user-version\n"

    box.exec(["rm", "-f", f"/workspace/{workspace.SEED_MARKER}", f"/workspace/{lab.NOTEBOOK}"])
    assert workspace.seed_workspace(box, notebook) is True
    assert json.loads(box.exec(["cat", f"/workspace/{lab.NOTEBOOK}"]).output)["nbformat"] == 4
    box.exec(["rm", f"/workspace/{lab.NOTEBOOK}"])
    assert workspace.seed_workspace(box, notebook) is False  # deleted by the user: not brought back


def test_an_image_without_jupyter_fails_plainly(test_base_image: str, lab_name: str) -> None:
    from labctl.errors import LabctlError

    record = LabRecord(name=lab_name, target="local", jupyter_port=free_port())
    with pytest.raises(LabctlError) as failed:
        prepare_lab(record, PlainReporter(quiet=True), image=test_base_image)
    assert "has no 'jupyter' command" in failed.value.render() and "--image" in failed.value.render()
