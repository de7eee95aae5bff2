"""`down --keep-workspace` on an SSH host and on this computer: the lab goes, node 0's real Docker volume stays with
the user's files, `list` and `status` show it, the next `up` of the name brings the lab back with it, and only
`down --delete-workspace` deletes it."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labctl.cli import app
from labctl.container import container_name, volume_name
from labctl.state import StateStore
from tests.support.sshd import KeyPair, SSHServer

pytestmark = pytest.mark.integration

runner = CliRunner()


def _invoke(*args: str, code: int = 0) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result


def _write(docker_client: Any, lab: str, text: str) -> None:
    box = docker_client.containers.get(container_name(lab))
    made = box.exec_run(["sh", "-c", f"printf %s '{text}' > /workspace/mine.txt"])
    assert made.exit_code == 0, made.output


def _read(docker_client: Any, lab: str) -> str:
    read = docker_client.containers.get(container_name(lab)).exec_run(["cat", "/workspace/mine.txt"])
    assert read.exit_code == 0, read.output
    return str(read.output.decode())


def _gone(docker_client: Any, lab: str) -> bool:
    import docker.errors

    try:
        docker_client.containers.get(container_name(lab))
    except docker.errors.NotFound:
        return True
    return False


def _ssh_up(sshd: tuple[SSHServer, KeyPair], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lab: str) -> list[str]:
    """`up`'s arguments for a lab on the test's sshd, its host key known."""
    server, client = sshd
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LABCTL_RESULTS_DIR", str(tmp_path / "results"))
    (home / ".ssh" / "known_hosts").write_text(f"[{server.host}]:{server.port} {server.host_key.public}\n")
    host = f"{server.user}@{server.host}:{server.port}"
    return ["up", "--target", "ssh", "--host", host, "--ssh-key", str(client.private_path), "-n", lab]


def test_both_flags_together_are_refused_before_anything() -> None:
    refused = _invoke("down", "--keep-workspace", "--delete-workspace", "--yes", "-n", "nolab", code=2)
    assert "--keep-workspace and --delete-workspace ask for opposite things" in refused.output
    assert "nothing was deleted" in refused.output


def test_ssh_lab_keeps_its_volume_and_comes_back_with_it(
    sshd: tuple[SSHServer, KeyPair],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lab_image: str,
    lab_name: str,
    docker_client: Any,
) -> None:
    server = sshd[0]
    up_args = _ssh_up(sshd, tmp_path, monkeypatch, lab_name)
    plan = _invoke(*up_args, "--dry-run")
    assert "'down --keep-workspace' keeps it where it lives" in plan.stdout
    _invoke(*up_args)
    _write(docker_client, lab_name, "kept on the host")

    down = _invoke("down", "--yes", "--keep-workspace", "-n", lab_name, "--json")
    kept = json.loads(down.stdout)["kept_workspace"]
    assert kept.startswith(f"Docker volume {volume_name(lab_name)} on {server.host}")
    assert json.loads(down.stdout)["saved"] is None  # kept, so not copied
    assert not (tmp_path / "results").exists()
    assert _gone(docker_client, lab_name)
    assert docker_client.volumes.get(volume_name(lab_name))
    assert StateStore().load(lab_name).status == "kept"

    listed = _invoke("list", "--local")
    assert f"Kept workspace of lab {lab_name}: Docker volume {volume_name(lab_name)}" in listed.stdout
    shown = _invoke("status", "-n", lab_name)
    assert "kept workspace" in shown.stdout and "--delete-workspace" in shown.stdout
    opened = _invoke("open", "--print", "-n", lab_name, code=3)
    assert "only its workspace is kept" in opened.output
    # A plain `down` would delete it uncopied: it is refused, the volume untouched.
    refused = _invoke("down", "--yes", "-n", lab_name, code=2)
    assert "only its workspace is kept" in refused.output and "--delete-workspace" in refused.output
    assert docker_client.volumes.get(volume_name(lab_name))

    plan = _invoke(*up_args, "--dry-run")
    assert "the one kept by an earlier 'down --keep-workspace'" in plan.stdout
    again = _invoke(*up_args)
    assert "comes back with its kept workspace" in again.output
    assert _read(docker_client, lab_name) == "kept on the host"
    assert StateStore().load(lab_name).status == "ready"

    _invoke("down", "--yes", "--keep-workspace", "-n", lab_name)
    deleted = _invoke("down", "--yes", "--delete-workspace", "-n", lab_name)
    assert f"volume {volume_name(lab_name)}" in deleted.output
    assert not StateStore().exists(lab_name)
    assert volume_name(lab_name) not in [v.name for v in docker_client.volumes.list()]


def test_local_lab_keeps_its_volume_and_a_plain_down_after_up_copies_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lab_image: str, lab_name: str, docker_client: Any
) -> None:
    results = tmp_path / "results"
    monkeypatch.setenv("LABCTL_RESULTS_DIR", str(results))
    _invoke("up", "--target", "local", "-n", lab_name)
    _write(docker_client, lab_name, "kept here")
    down = _invoke("down", "--yes", "--keep-workspace", "-n", lab_name)
    assert f"Docker volume {volume_name(lab_name)} on this computer" in down.stdout
    assert "--delete-workspace" in down.stdout and _gone(docker_client, lab_name)

    _invoke("up", "--target", "local", "-n", lab_name)
    assert _read(docker_client, lab_name) == "kept here"
    _invoke("down", "--yes", "-n", lab_name)  # a lab that is up again: the usual copy home, then all of it goes
    assert (results / lab_name / "workspace" / "mine.txt").read_text() == "kept here"
    assert volume_name(lab_name) not in [v.name for v in docker_client.volumes.list()]


def test_up_with_an_image_waits_for_the_boot_to_bind_the_workspace(
    sshd: tuple[SSHServer, KeyPair],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lab_image: str,
    lab_name: str,
    docker_client: Any,
) -> None:
    """cloud-init binds the workspace volume to the mounted disk before it starts the prewarm: a container made
    earlier gets a volume of Docker's own (on Azure on the OS disk, which down --keep-workspace deletes)."""
    up_args = _ssh_up(sshd, tmp_path, monkeypatch, lab_name)
    boot, disk = tmp_path / "prewarm", tmp_path / "disk"
    boot.mkdir(), disk.mkdir()
    (boot / "prewarm.state").write_text("pending\n")
    monkeypatch.setenv("LABCTL_PREWARM_DIR", str(boot))
    monkeypatch.setenv("LABCTL_PREWARM_POLL", "0.2")
    failed: list[Exception] = []

    def runcmd() -> None:  # as cloud-init's, late
        time.sleep(8)
        try:
            opts = {"type": "none", "o": "bind", "device": str(disk)}
            docker_client.volumes.create(volume_name(lab_name), driver="local", driver_opts=opts)
        except Exception as exc:  # a volume Docker made first: the options differ
            failed.append(exc)
        (boot / "prewarm.state").write_text("done\n")

    late = threading.Thread(target=runcmd)
    late.start()
    _invoke(*up_args, "--image", lab_image)
    late.join()
    options = docker_client.volumes.get(volume_name(lab_name)).attrs.get("Options") or {}
    assert not failed and options.get("device") == str(disk), failed
    _write(docker_client, lab_name, "on the disk")
    assert (disk / "mine.txt").read_text() == "on the disk"
