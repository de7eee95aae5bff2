"""Docker on a machine reached over SSH: the SDK talks to the remote engine through labctl's verified connection."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labctl.container import LabContainer, archive_entries
from labctl.errors import NotFound
from labctl.machine.ssh import SSHMachine
from labctl.workspace import push
from tests.support.sshd import KeyPair, SSHServer

pytestmark = pytest.mark.integration


@pytest.fixture
def remote_docker(machine: SSHMachine, docker_client: Any) -> Any:
    return machine.docker()


@pytest.fixture
def sleeper(remote_docker: Any, test_base_image: str) -> Iterator[LabContainer]:
    container = remote_docker.containers.run(
        test_base_image, ["sleep", "600"], detach=True, labels={"labctl.test": "docker-over-ssh"}
    )
    try:
        yield LabContainer(container)
    finally:
        container.remove(force=True)


def test_the_sdk_reaches_the_engine_through_ssh(
    sshd: tuple[SSHServer, KeyPair],
    machine: SSHMachine,
    remote_docker: Any,
    docker_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert remote_docker.version()["Version"] == docker_client.version()["Version"]
    assert "unix://" in remote_docker.api.base_url or remote_docker.api.base_url.startswith("http+docker://")
    # With the SSH server gone, the same client can no longer reach the engine: its traffic rides on SSH.
    server, _ = sshd
    monkeypatch.setattr("labctl.machine.ssh.RECONNECT_WAIT", 1)
    server.stop()
    with pytest.raises(Exception):  # noqa: B017 - any transport error will do; what matters is that it fails
        remote_docker.ping()
    server.start()
    monkeypatch.setattr("labctl.machine.ssh.RECONNECT_WAIT", 30)
    assert remote_docker.ping()


def test_containers_run_over_ssh(remote_docker: Any, test_base_image: str) -> None:
    out = remote_docker.containers.run(test_base_image, ["python", "-c", "print(6 * 7)"], remove=True)
    assert out == b"42\n"


def test_exec_returns_the_exit_code_and_the_output(sleeper: LabContainer) -> None:
    from labctl.errors import LabctlError

    result = sleeper.exec(["sh", "-c", "echo one; echo two >&2; echo three; exit 3"], check=False)
    assert result.exit_code == 3
    # stdout and stderr are separate pipes in the container, so only the order within each is kept.
    lines = result.text.splitlines()
    assert sorted(lines) == ["one", "three", "two"]
    assert lines.index("one") < lines.index("three")
    assert sleeper.exec(["true"]).exit_code == 0
    with pytest.raises(LabctlError) as failed:
        sleeper.exec(["sh", "-c", "echo broken; exit 4"])
    assert "exit code 4" in failed.value.render() and "broken" in failed.value.render()


def test_arguments_reach_the_command_as_they_are(sleeper: LabContainer) -> None:
    odd = "a b; echo $HOME `id` 'q' \"dq\" *"
    assert sleeper.exec(["printf", "%s", odd]).output == odd.encode()
    assert sleeper.exists("/tmp") and not sleeper.exists(odd)


def test_detached_exec_keeps_running(sleeper: LabContainer) -> None:
    sleeper.exec(["sh", "-c", "sleep 1; echo finished > /tmp/flag"], detach=True)
    assert not sleeper.exists("/tmp/flag")  # returned before the command finished
    deadline = time.monotonic() + 30
    while not sleeper.exists("/tmp/flag"):
        assert time.monotonic() < deadline, "the detached command never finished"
        time.sleep(0.2)
    assert sleeper.exec(["cat", "/tmp/flag"]).text == "finished\n"


def test_exec_in_a_stopped_container_says_how_to_repair(sleeper: LabContainer) -> None:
    from labctl.errors import LabctlError

    sleeper.container.stop(timeout=1)
    with pytest.raises(LabctlError) as failed:
        sleeper.exec(["true"])
    assert "is not running" in failed.value.render() and "labctl up" in failed.value.render()


def test_files_go_in_and_out_of_the_workspace(sleeper: LabContainer, tmp_path: Path) -> None:
    src = tmp_path / "results"
    (src / "nested").mkdir(parents=True)
    (src / "metrics.json").write_text('{"accuracy": 0.5}\n')
    (src / "nested" / "weights.bin").write_bytes(bytes(range(256)) * 400)
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "x.pyc").write_bytes(b"cache")
    sleeper.put("/workspace/runs", {"results": src, "note.txt": b"made here\n"})
    assert sleeper.exec(["cat", "/workspace/runs/results/metrics.json"]).text == '{"accuracy": 0.5}\n'
    assert sleeper.exec(["cat", "/workspace/runs/note.txt"]).text == "made here\n"
    assert sleeper.exec(["stat", "-c", "%u:%g", "/workspace/runs/results/metrics.json"]).text == "0:0\n"
    assert not sleeper.exists("/workspace/runs/results/__pycache__")
    with pytest.raises(NotFound):
        sleeper.put("/workspace", {"gone": tmp_path / "gone"})

    for path in ("/workspace/runs/results", "/workspace/runs/results/metrics.json"):
        for tar, entry in archive_entries(sleeper.archive(path), Path(path).name, links=True):
            tar.extract(entry, tmp_path / "back")
    copy = tmp_path / "back" / "results"
    assert (copy / "nested" / "weights.bin").read_bytes() == (src / "nested" / "weights.bin").read_bytes()
    assert (tmp_path / "back" / "metrics.json").read_text() == '{"accuracy": 0.5}\n'
    with pytest.raises(NotFound):
        sleeper.archive("/workspace/nothing-here")


def test_push_streams_its_archive_through_ssh(sleeper: LabContainer, tmp_path: Path) -> None:
    """push sends its archive in chunks of unknown total length: the relay over SSH must pass them on whole."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "big.bin").write_bytes(bytes(range(256)) * 8192)  # 2 MiB, several chunks
    (data / "small.txt").write_text("hello\n")
    result = push(sleeper, [data], "in")
    assert sorted(result.files) == ["in/data/big.bin", "in/data/small.txt"]
    assert sleeper.exec(["cat", "/workspace/in/data/small.txt"]).text == "hello\n"
    assert sleeper.exec(["stat", "-c", "%s", "/workspace/in/data/big.bin"]).text == f"{256 * 8192}\n"


def test_an_image_builds_over_ssh(remote_docker: Any, test_base_image: str) -> None:
    import io
    import secrets
    import tarfile

    dockerfile = f"FROM {test_base_image}\nRUN echo built-over-ssh > /marker\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    tag = f"labctl-test/over-ssh:{secrets.token_hex(4)}"
    try:
        log = list(
            remote_docker.api.build(
                fileobj=io.BytesIO(buffer.getvalue()), custom_context=True, tag=tag, decode=True, rm=True, forcerm=True
            )
        )
        assert not [c for c in log if "error" in c], log
        assert remote_docker.containers.run(tag, ["cat", "/marker"], remove=True) == b"built-over-ssh\n"
    finally:
        remote_docker.images.remove(tag, force=True)


def test_many_docker_calls_do_not_exhaust_ssh_sessions(machine: SSHMachine, sleeper: LabContainer) -> None:
    first_connection = machine._transports[0]
    for _ in range(25):
        assert sleeper.container.exec_run(["true"]).exit_code == 0
    assert machine._transports[0] is first_connection, "the SSH connection was not replaced"
    assert len(machine._transports) == 1, "no extra connection was needed"


def test_falls_back_to_dial_stdio_where_socket_forwarding_is_off(
    sshd: tuple[SSHServer, KeyPair], test_base_image: str
) -> None:
    server, client = sshd
    server.stop()
    server.extra_config = ["AllowStreamLocalForwarding no"]
    server.start()
    with SSHMachine(server.host, server.port, server.user, client.private_path, server.host_key.public) as m:
        m.connect()
        remote = m.docker()
        assert remote.api.headers.get("Connection") == "close"  # the dial-stdio path
        box = remote.containers.run(test_base_image, ["sleep", "600"], detach=True, labels={"labctl.test": "1"})
        try:
            for _ in range(15):  # more than sshd's ten sessions per connection
                assert box.exec_run(["true"]).exit_code == 0
        finally:
            box.remove(force=True)
    assert "refused" in server.log_path.read_text() or "forwarding" in server.log_path.read_text().lower()
