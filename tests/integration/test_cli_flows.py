"""Whole commands through Typer's CliRunner: `up --target ssh` -> `open` -> `ssh` -> `down`, and `--target local`.

The SSH host is a real sshd on 127.0.0.1 whose Docker engine is this computer's; the lab image is labctl's own,
built FROM the local test base.
"""

from __future__ import annotations

import socket
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labctl.cli import app
from labctl.container import container_name, remove_lab
from labctl.keys import fingerprint
from labctl.labhost import describe_lab
from labctl.state import StateStore
from labctl.ui import PlainReporter
from labctl.workflows.reach import open_lab, run_ssh
from tests.support.sshd import KeyPair, SSHServer

pytestmark = pytest.mark.integration

runner = CliRunner()


class Recorder(PlainReporter):
    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.lines: list[str] = []
        self.got_line = threading.Event()

    def info(self, message: str) -> None:
        if message.startswith("http"):  # the URL open prints
            self.lines.append(message)
            self.got_line.set()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME of our own, so ~/.ssh/known_hosts is the test's and never the user's."""
    path = tmp_path / "home"
    (path / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(path))
    return path


def _host(server: SSHServer) -> str:
    return f"{server.user}@{server.host}:{server.port}"


def test_unknown_host_key_is_not_accepted_silently(sshd: tuple[SSHServer, KeyPair], home: Path) -> None:
    server, client = sshd
    args = ["up", "--target", "ssh", "--host", _host(server), "--ssh-key", str(client.private_path), "-n", "keyq"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert fingerprint(server.host_key.public) in result.output
    assert "ssh-keyscan" in result.output and "--host-key-fingerprint SHA256:" in result.output
    assert "Traceback" not in result.output


def test_ssh_flow_up_open_ssh_down(
    sshd: tuple[SSHServer, KeyPair], home: Path, lab_image: str, lab_name: str, docker_client: Any
) -> None:
    server, client = sshd
    # The host key comes from known_hosts, the way `ssh-keyscan >> ~/.ssh/known_hosts` leaves it.
    (home / ".ssh" / "known_hosts").write_text(f"[{server.host}]:{server.port} {server.host_key.public}\n")
    up = runner.invoke(
        app,
        ["up", "--target", "ssh", "--host", _host(server), "--ssh-key", str(client.private_path), "-n", lab_name],
    )
    assert up.exit_code == 0, up.output
    assert f"Lab '{lab_name}' is ready." in up.stdout
    record = StateStore().load(lab_name)
    assert record.nodes[0].host_key == server.host_key.public.rsplit(" ", 1)[0]
    assert record.jupyter_token and record.jupyter_token not in up.output
    assert docker_client.containers.get(container_name(lab_name)).status == "running"

    # Running `up` again converges without replacing anything.
    first_id = docker_client.containers.get(container_name(lab_name)).id
    again = runner.invoke(app, ["up", "--target", "ssh", "--host", _host(server), "-n", lab_name])
    assert again.exit_code == 0, again.output
    assert docker_client.containers.get(container_name(lab_name)).id == first_id

    printed = runner.invoke(app, ["open", "--print", "-n", lab_name, "--port", "18888"])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout.strip() == f"http://127.0.0.1:18888/lab?token={record.jupyter_token}"

    # The held tunnel on a busy local port: the next free one is used, the URL works while it is open, and
    # `stop` plays Ctrl-C.
    ui, stop = Recorder(), threading.Event()
    outcome: dict[str, Any] = {}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        thread = threading.Thread(target=lambda: outcome.update(open_lab(ui, lab_name, taken, stop=stop).data))
        thread.start()
        try:
            assert ui.got_line.wait(60), "open printed no URL"
            url = ui.lines[0]
            assert url.endswith(f"/lab?token={record.jupyter_token}")
            assert f":{taken}/" not in url
            with urllib.request.urlopen(url.replace("/lab?", "/api/status?"), timeout=10) as response:
                assert response.status == 200
        finally:
            stop.set()
            thread.join(30)
    assert outcome["tunnel"] is True and outcome["port"] != taken

    facts = describe_lab(record)
    assert facts["container"] == "running" and facts["jupyter"] == "up"

    assert run_ssh(record, ["echo", "shell-ok"]) == 0
    impostor = StateStore().load(lab_name)
    impostor.nodes[0].host_key = KeyPair.create(home, "impostor").public
    assert run_ssh(impostor, ["true"]) == 255  # the system ssh refuses a key other than the pinned one

    down = runner.invoke(app, ["down", "--yes", "-n", lab_name])
    assert down.exit_code == 0, down.output
    assert not StateStore().exists(lab_name)
    import docker.errors

    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container_name(lab_name))
    # `down` never touches the machine itself.
    assert run_ssh(record, ["true"]) == 0


def test_yes_never_pins_an_unknown_host_key(sshd: tuple[SSHServer, KeyPair], home: Path) -> None:
    server, client = sshd
    args = ["up", "--target", "ssh", "--host", _host(server), "--ssh-key", str(client.private_path), "-n", "keyy"]
    result = runner.invoke(app, [*args, "--yes"])
    assert result.exit_code == 2, result.output
    assert "--yes does not pin an unknown key" in result.output
    assert f"--host-key-fingerprint {fingerprint(server.host_key.public)}" in result.output
    assert not StateStore().exists("keyy")  # nothing pinned, and a refused `up` leaves no lab record


def test_the_fingerprint_given_pins_the_key_and_another_is_refused(sshd: tuple[SSHServer, KeyPair], home: Path) -> None:
    from labctl.errors import LabctlError
    from labctl.keys import confirm_host_key

    server, client = sshd
    right = fingerprint(server.host_key.public)
    pinned = confirm_host_key(server.host, server.port, Recorder(), expected=right, assume_yes=True)
    assert pinned == server.host_key.public.rsplit(" ", 1)[0]

    wrong = fingerprint(KeyPair.create(home, "other").public)
    with pytest.raises(LabctlError, match="not " + wrong.replace("+", "[+]")):
        confirm_host_key(server.host, server.port, Recorder(), expected=wrong)
    args = ["up", "--target", "ssh", "--host", _host(server), "--ssh-key", str(client.private_path), "-n", "keyw"]
    result = runner.invoke(app, [*args, "--yes", "--host-key-fingerprint", wrong])
    assert result.exit_code == 1 and "nothing was pinned" in result.output, result.output
    assert not StateStore().exists("keyw")  # nothing pinned, and a refused `up` leaves no lab record
    bad = runner.invoke(app, [*args, "--host-key-fingerprint", "MD5:aa:bb"])
    assert bad.exit_code == 2 and "not an SSH host key fingerprint" in bad.output


def test_local_flow_up_open_down(lab_image: str, lab_name: str, docker_client: Any) -> None:
    # This computer gets no idle agent and is told why (here, not in a lab of its own: each `up` starts Jupyter).
    up = runner.invoke(app, ["up", "--target", "local", "-n", lab_name, "--idle-stop", "5"])
    assert up.exit_code == 0, up.output
    assert "No idle stop: labctl installs no idle agent on this computer" in up.output
    shown = runner.invoke(app, ["status", "-n", lab_name])
    assert "not installed (labctl installs no idle agent on this computer" in shown.stdout
    refused = runner.invoke(app, ["idle-stop", "-n", lab_name, "10"])
    assert refused.exit_code == 2 and "this computer" in refused.output
    record = StateStore().load(lab_name)
    opened = runner.invoke(app, ["open", "-n", lab_name])
    assert opened.exit_code == 0, opened.output
    url = opened.stdout.strip()
    assert url == f"http://127.0.0.1:{record.jupyter_port}/lab?token={record.jupyter_token}"
    with urllib.request.urlopen(url.replace("/lab?", "/api/status?"), timeout=10) as response:
        assert response.status == 200
    shell = runner.invoke(app, ["ssh", "-n", lab_name])
    assert shell.exit_code == 2 and "docker exec" in shell.output

    # A lab whose container died: `open` says so and how to repair it, instead of printing a dead URL.
    docker_client.containers.get(container_name(lab_name)).stop(timeout=2)
    dead = runner.invoke(app, ["open", "-n", lab_name])
    assert dead.exit_code == 1 and "labctl up" in dead.output and "Traceback" not in dead.output
    assert record.jupyter_token not in dead.output

    down = runner.invoke(app, ["down", "--yes", "-n", lab_name])
    assert down.exit_code == 0, down.output
    import docker.errors

    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container_name(lab_name))


def test_a_lab_made_with_an_image_keeps_it_when_up_runs_again(
    lab_image: str, lab_name: str, docker_client: Any
) -> None:
    own = f"labctl-test/own-image:{lab_name}"  # an image of the user's: here, the lab image with a label of its own
    maker = docker_client.containers.create(lab_image)
    maker.commit("labctl-test/own-image", lab_name, changes=["LABEL labctl.test.own=1"])
    maker.remove()
    try:
        for args in (["--image", own], []):
            up = runner.invoke(app, ["up", "--target", "local", "-n", lab_name, *args])
            assert up.exit_code == 0, up.output
            assert own in docker_client.containers.get(container_name(lab_name)).image.tags
            assert (StateStore().load(lab_name).image, StateStore().load(lab_name).image_asked) == (own, own)
    finally:
        remove_lab(docker_client, lab_name)
        docker_client.images.remove(own)


def test_gpu_lab_on_a_machine_without_a_driver_fails_plainly(
    sshd: tuple[SSHServer, KeyPair], home: Path, lab_name: str, docker_client: Any
) -> None:
    server, client = sshd
    if __import__("shutil").which("nvidia-smi"):
        pytest.skip("this host has an NVIDIA driver")
    (home / ".ssh" / "known_hosts").write_text(f"[{server.host}]:{server.port} {server.host_key.public}\n")
    args = ["up", "--target", "ssh", "--gpu", "--host", _host(server), "--ssh-key", str(client.private_path)]
    result = runner.invoke(app, [*args, "-n", lab_name])
    assert result.exit_code == 1
    assert "no NVIDIA driver" in result.output or "no NVIDIA GPU" in result.output
    assert "Traceback" not in result.output
