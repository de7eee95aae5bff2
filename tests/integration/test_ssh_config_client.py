"""The entry labctl writes, used by the real system ``ssh`` client against a real sshd: the pinned host key is
checked (and a wrong one refused), the login key is the lab's, and the Jupyter forward carries bytes."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labctl import sshconfig
from labctl.keys import generate_ed25519
from labctl.sshconfig import HostEntry, known_hosts_path
from tests.support.sshd import KeyPair, SSHServer, free_port

pytestmark = pytest.mark.integration

SSH = shutil.which("ssh")


@pytest.fixture(autouse=True)
def _needs_ssh() -> None:
    if SSH is None:
        pytest.skip("the OpenSSH client is not installed (apt-get install openssh-client)")


def _entry(server: SSHServer, client: KeyPair, *, host_key: str | None = None, jupyter: int = 8888) -> HostEntry:
    return HostEntry(
        lab="t-ssh",
        host=server.host,
        port=server.port,
        user=server.user,
        identity_file=client.private_path,
        host_key=host_key or server.host_key.public,
        jupyter_port=jupyter,
        local_port=free_port(),
    )


def _ssh(config: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    assert SSH is not None
    return subprocess.run(
        [SSH, "-F", str(config), "-o", "BatchMode=yes", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_ssh_reaches_the_lab_with_the_pinned_key(sshd: tuple[SSHServer, KeyPair], tmp_path: Path) -> None:
    server, client = sshd
    config = sshconfig.write_entry(_entry(server, client))
    result = _ssh(config, "labctl-t-ssh", "echo", "reached")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "reached"
    # Nothing was learnt on the way: the known_hosts file still holds exactly the pinned key.
    assert known_hosts_path("t-ssh").read_text().split() == ["labctl-t-ssh", *server.host_key.public.split()[:2]]


def test_a_wrong_pinned_key_is_refused_before_login(sshd: tuple[SSHServer, KeyPair], tmp_path: Path) -> None:
    server, client = sshd
    impostor = generate_ed25519("someone-else").public_line
    config = sshconfig.write_entry(_entry(server, client, host_key=impostor))
    result = _ssh(config, "labctl-t-ssh", "touch", str(tmp_path / "ran"))
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr or "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr
    assert not (tmp_path / "ran").exists()


def test_through_the_include_line_of_a_user_config(sshd: tuple[SSHServer, KeyPair], tmp_path: Path) -> None:
    server, client = sshd
    user_config = Path.home() / ".ssh" / "config"
    user_config.parent.mkdir()
    # A user config with a catch-all block after which an Include would no longer apply to every host.
    user_config.write_text("Host *\n    ServerAliveInterval 30\n")
    sshconfig.write_entry(_entry(server, client))
    assert sshconfig.ensure_include(lambda _q: True) is sshconfig.IncludeState.ADDED
    result = _ssh(user_config, "labctl-t-ssh", "true")
    assert result.returncode == 0, result.stderr
    sshconfig.remove_entry("t-ssh")
    gone = _ssh(user_config, "labctl-t-ssh", "true")
    assert gone.returncode == 255  # the alias no longer resolves to anything


@pytest.fixture
def jupyter_stand_in() -> Iterator[int]:
    """A TCP server on the machine's loopback that answers one line, standing in for Jupyter."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"jupyter-here\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(timeout=2)
    listener.close()


def test_the_local_forward_reaches_jupyter(
    sshd: tuple[SSHServer, KeyPair], tmp_path: Path, jupyter_stand_in: int
) -> None:
    server, client = sshd
    entry = _entry(server, client, jupyter=jupyter_stand_in)
    config = sshconfig.write_entry(entry)
    assert SSH is not None
    tunnel = subprocess.Popen(
        [SSH, "-F", str(config), "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-N", "labctl-t-ssh"],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert tunnel.poll() is None, tunnel.stderr.read() if tunnel.stderr else ""
            try:
                with socket.create_connection(("127.0.0.1", entry.local_port), timeout=2) as sock:
                    data = sock.recv(64)
                if data:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the forward never answered"
            time.sleep(0.2)
        assert data == b"jupyter-here\n"
    finally:
        tunnel.terminate()
        tunnel.wait(timeout=10)


def test_the_commands_write_the_entry_and_run_one_command(
    sshd: tuple[SSHServer, KeyPair], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from labctl.cli import app
    from labctl.state import LabRecord, NodeRecord, StateStore

    server, client = sshd
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    record = LabRecord(
        name="t-cli",
        target="ssh",
        status="ready",
        ssh_key_path=str(client.private_path),
        nodes=[NodeRecord(host=server.host, port=server.port, user=server.user, host_key=server.host_key.public)],
    )
    record.jupyter_port = free_port()
    StateStore().save(record)
    runner = CliRunner()

    quiet = runner.invoke(app, ["ssh-config", "-n", "t-cli", "--json"])  # no terminal: nothing asked or written
    assert quiet.exit_code == 0, quiet.output
    assert '"include": "not asked"' in quiet.stdout and not (home / ".ssh" / "config").exists()

    added = runner.invoke(app, ["ssh-config", "-n", "t-cli", "--include"])
    assert added.exit_code == 0, added.output
    assert "ssh labctl-t-cli" in added.stdout
    reached = _ssh(home / ".ssh" / "config", "labctl-t-cli", "echo", "through-the-include")
    assert reached.returncode == 0 and reached.stdout.strip() == "through-the-include", reached.stderr

    one = runner.invoke(app, ["ssh", "-n", "t-cli", "--", "sh", "-c", "exit 7"])
    assert one.exit_code == 7


@pytest.mark.parametrize("hostile", ["-oProxyCommand=touch {marker}", "-oLocalCommand=touch {marker}"])
def test_a_remote_command_that_looks_like_an_option_never_reaches_the_local_client(
    sshd: tuple[SSHServer, KeyPair], tmp_path: Path, hostile: str
) -> None:
    from typer.testing import CliRunner

    from labctl.cli import app
    from labctl.state import LabRecord, NodeRecord, StateStore

    server, client = sshd
    StateStore().save(
        LabRecord(
            name="t-opt",
            target="ssh",
            status="ready",
            ssh_key_path=str(client.private_path),
            nodes=[NodeRecord(host=server.host, port=server.port, user=server.user, host_key=server.host_key.public)],
        )
    )
    marker = tmp_path / "pwned"
    result = CliRunner().invoke(app, ["ssh", "-n", "t-opt", "--", hostile.format(marker=marker)])
    assert not marker.exists()
    # The word went to the remote shell as one quoted word (a command that does not exist), never as an option.
    assert result.exit_code == 127, result.output
