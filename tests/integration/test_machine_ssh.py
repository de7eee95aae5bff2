"""The SSH machine against a real sshd on 127.0.0.1: auth, host-key pinning, streaming, tunnels, reconnects."""

from __future__ import annotations

import http.server
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from labctl.errors import LabctlError
from labctl.keys import HostKeyMismatch, fingerprint
from labctl.machine.base import CommandFailed
from labctl.machine.ssh import SSHMachine
from labctl.ui import PlainReporter
from tests.support.sshd import KeyPair, SSHServer, free_port, make_server, sshd_unavailable

pytestmark = pytest.mark.integration


class Recorder(PlainReporter):
    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.messages: list[str] = []

    def info(self, message: str) -> None:
        self.messages.append(message)


def test_key_auth_and_exit_codes(machine: SSHMachine) -> None:
    result = machine.run("echo hello; echo oops >&2; exit 0")
    assert result.exit_code == 0
    assert result.output.splitlines() == ["hello", "oops"]
    assert machine.run("exit 7", check=False).exit_code == 7
    with pytest.raises(CommandFailed) as failed:
        machine.run(["sh", "-c", "echo the reason; exit 3"])
    assert failed.value.result.exit_code == 3
    assert "the reason" in failed.value.render()


def test_output_is_streamed_while_the_command_runs(machine: SSHMachine, tmp_path: Path) -> None:
    # The command waits for a file that only the callback creates: without streaming this never ends.
    flag = tmp_path / "go"
    seen: list[str] = []

    def on_line(line: str) -> None:
        seen.append(line)
        if line == "ready":
            flag.touch()

    script = f"echo ready; while [ ! -e {flag} ]; do sleep 0.05; done; echo done; printf 'no newline'"
    machine.run(script, on_line=on_line, timeout=20)
    assert seen == ["ready", "done", "no newline"]


def test_stdin_reaches_the_command(machine: SSHMachine) -> None:
    assert machine.run("bash -s -- world", stdin='echo "hello $1"\n').output == "hello world\n"


def test_changed_host_key_is_refused_with_an_explanation(sshd: tuple[SSHServer, KeyPair], tmp_path: Path) -> None:
    server, client = sshd
    other = KeyPair.create(tmp_path, "someone-else")
    m = SSHMachine(server.host, server.port, server.user, client.private_path, other.public)
    with pytest.raises(HostKeyMismatch) as refused:
        m.connect()
    text = refused.value.render()
    assert "man-in-the-middle" in text
    assert fingerprint(other.public) in text and fingerprint(server.host_key.public) in text
    # Waiting does not turn a refusal into retries.
    started = time.monotonic()
    with pytest.raises(HostKeyMismatch):
        m.connect(wait=30)
    assert time.monotonic() - started < 10


def test_a_rebuilt_host_is_refused(sshd: tuple[SSHServer, KeyPair]) -> None:
    server, client = sshd
    pinned = server.host_key.public
    server.stop()
    server.replace_host_key()
    server.start()
    with pytest.raises(HostKeyMismatch):
        SSHMachine(server.host, server.port, server.user, client.private_path, pinned).connect()


def test_wrong_client_key_is_refused(
    sshd: tuple[SSHServer, KeyPair], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = sshd
    stranger = KeyPair.create(tmp_path, "stranger")
    ui = Recorder()
    m = SSHMachine(server.host, server.port, server.user, stranger.private_path, server.host_key.public, ui=ui)
    with pytest.raises(LabctlError, match="refused the SSH key"):
        m.connect()
    # While waiting, a refused key is retried only for a short grace, not for the whole wait.
    monkeypatch.setattr("labctl.machine.ssh.AUTH_GRACE", 1.0)
    started = time.monotonic()
    with pytest.raises(LabctlError, match="refused the SSH key"):
        m.connect(wait=120)
    assert time.monotonic() - started < 60
    assert ui.messages


def test_a_key_that_cannot_be_read_is_named_at_once(sshd: tuple[SSHServer, KeyPair], tmp_path: Path) -> None:
    """A key replaced since it was checked (or one paramiko cannot read) is the user's to fix, not a network
    failure to wait out."""
    server, _ = sshd
    key = tmp_path / "replaced"
    key.write_text("not a key any more\n")
    ui = Recorder()
    m = SSHMachine(server.host, server.port, server.user, key, server.host_key.public, ui=ui)
    with pytest.raises(LabctlError, match="could not be read") as failed:
        m.connect(wait=120)
    assert str(key) in failed.value.render() and "--ssh-key" in failed.value.render()
    assert not ui.messages  # no "trying again" line: it was not retried


def test_waits_for_a_server_that_starts_late(tmp_path: Path) -> None:
    reason = sshd_unavailable()
    if reason:
        pytest.skip(reason)
    server, client = make_server(tmp_path / "late")
    timer = threading.Timer(2.0, server.start)
    timer.start()
    ui = Recorder()
    try:
        m = SSHMachine(server.host, server.port, server.user, client.private_path, server.host_key.public, ui=ui)
        m.connect(wait=60)
        assert m.run("echo up").output == "up\n"
        assert any("not ready yet" in msg for msg in ui.messages)
        m.close()
    finally:
        timer.join()
        server.stop()


def test_gives_up_after_the_timeout(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    key, host = KeyPair.create(tmp_path, "client"), KeyPair.create(tmp_path, "host")
    ui = Recorder()
    m = SSHMachine("127.0.0.1", port, "nobody", key.private_path, host.public, ui=ui)
    with pytest.raises(LabctlError) as failed:
        m.connect(wait=2)
    assert "Gave up after 2s" in failed.value.render()
    assert "connection refused" in failed.value.render()
    assert ui.messages, "progress was reported while waiting"


def test_reconnects_after_the_connection_drops(sshd: tuple[SSHServer, KeyPair], machine: SSHMachine) -> None:
    server, _ = sshd
    assert machine.run("echo before").output == "before\n"
    server.stop()  # ends the open connection too
    server.start()
    assert machine.run("echo after").output == "after\n"


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[int]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("through the tunnel\n")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield int(httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()


def test_port_forward_carries_http(machine: SSHMachine, http_server: int) -> None:
    with machine.forward(http_server) as port:
        assert port != http_server
        for _ in range(3):  # several connections through one forward
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10) as response:
                assert response.read() == b"through the tunnel\n"
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # the forward is closed with the block


def test_busy_local_port_takes_the_next_free_one(machine: SSHMachine, http_server: int) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        with machine.forward(http_server, local_port=taken) as port:
            assert port > taken
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10) as response:
                assert response.status == 200


def test_a_connection_lost_mid_command_is_reported(sshd: tuple[SSHServer, KeyPair], machine: SSHMachine) -> None:
    server, _ = sshd

    def on_line(line: str) -> None:
        if line == "started":
            server.stop()

    with pytest.raises(LabctlError, match="was lost while running"):
        machine.run("echo started; sleep 30; echo never", on_line=on_line, timeout=60)


def test_more_sessions_than_sshd_allows_on_one_connection(machine: SSHMachine) -> None:
    # OpenSSH allows 10 sessions per connection by default; labctl carries the rest on extra connections.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=14) as pool:
        outputs = list(pool.map(lambda i: machine.run(f"sleep 2; echo {i}").output, range(14)))
    # The last line is the command's; a login shell's start-up may print warnings of its own before it.
    assert [out.splitlines()[-1] for out in outputs] == [str(i) for i in range(14)]


def test_a_command_that_keeps_printing_still_times_out(machine: SSHMachine, tmp_path: Path) -> None:
    """The deadline holds even when output never pauses long enough for a read to time out."""
    beats = tmp_path / "beats"
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(LabctlError, match=r"did not finish on .* within 1s") as caught:
        machine.run(f"while true; do echo tick; echo x >> {beats}; sleep 0.1; done", on_line=lines.append, timeout=1)
    elapsed = time.monotonic() - started
    assert elapsed < 20, f"stopped only after {elapsed:.1f}s"  # it stops at all, rather than running on
    assert "labctl ssh" in caught.value.render()
    assert len(lines) >= 3  # it really was printing all along
    # Closing the channel ends the command too (its next write fails), so nothing keeps running.
    time.sleep(1.0)
    count = len(beats.read_text().splitlines())
    time.sleep(1.0)
    assert len(beats.read_text().splitlines()) == count
    assert machine.run("echo still usable").output.strip() == "still usable"
