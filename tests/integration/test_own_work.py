"""The user's own work through whole commands on a real local lab: push, pull, and `down` that brings the
workspace back before it deletes anything (or refuses, and says how)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labctl import sshconfig
from labctl.cli import app
from labctl.container import NOTEBOOK, container_name
from labctl.keys import generate_ed25519
from labctl.state import StateStore

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "results"
    monkeypatch.setenv("LABCTL_RESULTS_DIR", str(path))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return path


@pytest.fixture(scope="module")
def made() -> dict[str, Any]:
    """The module's lab record as `up` wrote it, and what its workspace held then."""
    return {}


@pytest.fixture
def local_lab(lab_image: str, module_lab_name: str, results: Path, docker_client: Any, made: dict[str, Any]) -> str:
    """A lab as `up` leaves it: the module's, when an earlier test left it running (each start of Jupyter costs
    seconds), with that `up`'s record in this test's state and only what `up` put in its workspace; else a new
    `up`. The tests that take the lab down come last."""
    import docker.errors

    try:
        box = docker_client.containers.get(container_name(module_lab_name))
    except docker.errors.NotFound:
        box = None
    if box is not None and box.status == "running" and made:
        StateStore().save(made["record"])
        written = sorted(set(_ls(box)) - set(made["files"]))
        assert box.exec_run(["rm", "-rf", *written], workdir="/workspace", user="root").exit_code == 0
        return module_lab_name
    up = runner.invoke(app, ["up", "--target", "local", "-n", module_lab_name])
    assert up.exit_code == 0, up.output
    made.update(record=StateStore().load(module_lab_name))
    made.update(files=_ls(docker_client.containers.get(container_name(module_lab_name))))
    return module_lab_name


def _ls(box: Any) -> list[str]:
    listed = box.exec_run(["ls", "-A", "/workspace"])
    assert listed.exit_code == 0, listed.output
    return listed.output.decode().splitlines()


def _write(docker_client: Any, lab: str, files: dict[str, bytes]) -> None:
    """Files written in /workspace the way Jupyter would: by the container, not by labctl."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), int(time.time()) + 1
            tar.addfile(info, io.BytesIO(data))
    assert docker_client.containers.get(container_name(lab)).put_archive("/workspace", buffer.getvalue())


@pytest.mark.parametrize("planted", ["lab/workspace", "lab"])
def test_a_link_in_the_results_folder_sends_nothing_elsewhere(
    local_lab: str, results: Path, docker_client: Any, tmp_path: Path, planted: str
) -> None:
    """A cloned repository can carry `labctl-results/LAB/workspace -> ../../..`: pull and down refuse, naming it."""
    _write(docker_client, local_lab, {".bashrc": b"echo from the lab\n", "mine.py": b"print('mine')\n"})
    outside = tmp_path / "outside"
    outside.mkdir()
    link = results / planted.replace("lab", local_lab, 1)
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(outside, link.parent))
    for argv in (["pull", "-n", local_lab], ["down", "--yes", "-n", local_lab]):
        refused = runner.invoke(app, argv)
        assert refused.exit_code == 2, refused.output
        assert "is a link" in refused.output and link.name in refused.output
        assert list(outside.iterdir()) == []
    assert docker_client.containers.get(container_name(local_lab)).status == "running"

    named = tmp_path / "mine"  # a destination the user names is held to the same rule, itself included
    named.symlink_to(outside)
    assert runner.invoke(app, ["pull", "-n", local_lab, "--to", str(named)]).exit_code == 2
    assert list(outside.iterdir()) == []


def test_a_link_in_the_results_folder_keeps_a_fetched_run_home(
    local_lab: str, results: Path, docker_client: Any, tmp_path: Path
) -> None:
    log = b"epoch 1 done\n"
    _write(
        docker_client,
        local_lab,
        {
            "runs/r-1/train.log": log,
            "runs/r-1/SHA256SUMS": f"{hashlib.sha256(log).hexdigest()}  train.log\n".encode(),
            "runs/r-1/exit_code": b"0\n",
        },
    )
    outside = tmp_path / "outside"
    (outside / "r-1").mkdir(parents=True)  # a run of that name there: fetch would have replaced it
    results.mkdir()
    (results / local_lab).symlink_to(outside)
    refused = runner.invoke(app, ["fetch", "r-1", "-n", local_lab])
    assert refused.exit_code == 2, refused.output
    assert "is a link" in refused.output
    assert [p.name for p in outside.iterdir()] == ["r-1"] and list((outside / "r-1").iterdir()) == []

    (results / local_lab).unlink()
    fetched = runner.invoke(app, ["fetch", "r-1", "-n", local_lab])
    assert fetched.exit_code == 0, fetched.output
    assert (results / local_lab / "r-1" / "train.log").read_bytes() == log


def test_push_then_pull_through_the_commands(local_lab: str, results: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "pkg").mkdir(parents=True)
    (project / "pkg" / "model.py").write_bytes(b"class Net: ...\n")
    (project / "train.py").write_bytes(b"import pkg.model\n")
    pushed = runner.invoke(app, ["push", str(project), "--to", "code", "-n", local_lab, "--json"])
    assert pushed.exit_code == 0, pushed.output
    assert sorted(json.loads(pushed.stdout)["files"]) == ["code/project/pkg/model.py", "code/project/train.py"]

    pulled = runner.invoke(app, ["pull", "code/project/pkg", "-n", local_lab, "--to", str(tmp_path / "back")])
    assert pulled.exit_code == 0, pulled.output
    assert (tmp_path / "back" / "workspace" / "code" / "project" / "pkg" / "model.py").read_bytes() == (
        b"class Net: ...\n"
    )
    assert "1 file(s)" in pulled.output

    everything = runner.invoke(app, ["pull", "-n", local_lab, "--json"])
    assert everything.exit_code == 0, everything.output
    paths = {f["path"] for f in json.loads(everything.stdout)["files"]}
    assert paths == {NOTEBOOK, "code/project/pkg/model.py", "code/project/train.py"}
    assert (results / local_lab / "workspace" / NOTEBOOK).is_file()

    missing = runner.invoke(app, ["pull", "nowhere.ipynb", "-n", local_lab])
    assert missing.exit_code == 3 and "does not exist" in missing.output
    outside = runner.invoke(app, ["push", str(project), "--to", "../etc", "-n", local_lab])
    assert outside.exit_code == 2
    assert runner.invoke(app, ["down", "--yes", "-n", local_lab]).exit_code == 0


def test_down_refuses_when_the_work_cannot_be_saved(local_lab: str, results: Path, docker_client: Any) -> None:
    _write(docker_client, local_lab, {"mine.py": b"print('mine')\n"})
    results.mkdir()
    (results / local_lab).write_text("a file where the copy should go")
    refused = runner.invoke(app, ["down", "--yes", "-n", local_lab])
    assert refused.exit_code != 0
    assert "was not deleted" in refused.output and "--no-save" in refused.output
    assert docker_client.containers.get(container_name(local_lab)).status == "running"

    gone = runner.invoke(app, ["down", "--yes", "--no-save", "-n", local_lab])
    assert gone.exit_code == 0, gone.output


def test_down_saves_a_large_file_and_brings_the_users_notebook_back_byte_for_byte(
    local_lab: str, results: Path, docker_client: Any
) -> None:
    """One `down` for both: each takes the module's lab down, and a new one costs a Jupyter start."""
    box = docker_client.containers.get(container_name(local_lab))
    made = box.exec_run(
        ["sh", "-c", "head -c 210000000 /dev/urandom > /workspace/model.pt && sha256sum model.pt"], workdir="/workspace"
    )
    assert made.exit_code == 0, made.output
    notebook = json.dumps({"cells": [{"source": "ü" * 5000}], "nbformat": 4}).encode() + os.urandom(64)
    _write(docker_client, local_lab, {"my-experiment.ipynb": notebook, "src/helpers.py": b"def f():\n    return 1\n"})

    entry = sshconfig.HostEntry(
        local_lab, "203.0.113.7", 22, "me", Path("/k/id"), generate_ed25519().public_line, 8888, 8888
    )
    sshconfig.write_entry(entry)  # as 'labctl ssh-config' leaves it; `down` takes it away with the lab
    down = runner.invoke(app, ["down", "--yes", "-n", local_lab, "--json"])
    assert down.exit_code == 0, down.output
    assert "Host " not in sshconfig.config_path().read_text() and not sshconfig.known_hosts_path(local_lab).exists()
    copy = results / local_lab / "workspace"
    assert (copy / "model.pt").stat().st_size == 210_000_000  # over the 200 MB that `pull` leaves in the lab by default
    digest = hashlib.sha256()
    with open(copy / "model.pt", "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    assert digest.hexdigest() == made.output.decode().split()[0]
    assert "Copied 210.0 MB of 210.0 MB (100%" in down.output  # progress of a large copy
    assert (copy / "my-experiment.ipynb").read_bytes() == notebook
    assert (copy / "src" / "helpers.py").read_bytes() == b"def f():\n    return 1\n"
    assert not (copy / NOTEBOOK).exists(), "the tutorial notebook did not change since up: not copied"
    saved = json.loads(down.stdout)["saved"]
    assert sorted(f["path"] for f in saved["files"]) == ["model.pt", "my-experiment.ipynb", "src/helpers.py"]
    sums = (results / local_lab / "SHA256SUMS").read_text()
    assert f"{hashlib.sha256(notebook).hexdigest()}  workspace/my-experiment.ipynb" in sums
    import docker.errors

    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container_name(local_lab))
