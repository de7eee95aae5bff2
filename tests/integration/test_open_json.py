"""`labctl open --json` holding a tunnel: the URL comes out as one JSON line while the tunnel is up, not after.

A script waiting for the URL cannot wait for Ctrl-C, so this runs the real CLI as a process with a pipe for
stdout (where buffering would hide a line that is not flushed), reads the first line while the tunnel is held,
uses the URL, then ends the tunnel with SIGINT as Ctrl-C does. The lab is a real one on the test sshd.

`open --forward` on the same lab (each `up` costs a Jupyter start): more ports of the lab reach this computer's
127.0.0.1 through the one SSH tunnel. Two HTTP servers run in the lab's container; `open --json --forward A
--forward B` names each forwarded URL, and each answers with its own server's page while the tunnel is held. Port B
is taken on this computer first, so its forward moves to the next free one.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labctl.cli import app
from labctl.container import container_name
from labctl.state import StateStore
from tests.support.sshd import KeyPair, SSHServer, free_port

pytestmark = pytest.mark.integration

SERVE = (
    "import http.server as h, os, sys; os.chdir(sys.argv[1]); h.test(h.SimpleHTTPRequestHandler, port=int(sys.argv[2]))"
)


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The next stdout line, or fail after ``timeout`` seconds with whatever stderr said."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sel.select(timeout=0.5):
                return proc.stdout.readline()
            if proc.poll() is not None:
                break
    proc.kill()
    _, err = proc.communicate()
    pytest.fail(f"open --json printed no line within {timeout:.0f}s; stderr: {err}")


def up_on_sshd(sshd: tuple[SSHServer, KeyPair], home: Path, monkeypatch: pytest.MonkeyPatch, lab_name: str) -> None:
    """`labctl up --target ssh` on the test sshd, with a home of its own that knows the host's key."""
    server, client = sshd
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "known_hosts").write_text(f"[{server.host}]:{server.port} {server.host_key.public}\n")
    monkeypatch.setenv("HOME", str(home))
    host = f"{server.user}@{server.host}:{server.port}"
    up = CliRunner().invoke(
        app, ["up", "--target", "ssh", "--host", host, "--ssh-key", str(client.private_path), "-n", lab_name]
    )
    assert up.exit_code == 0, up.output


def test_open_json_prints_each_url_as_soon_as_the_tunnel_is_up_and_forwarded_ports_answer(
    sshd: tuple[SSHServer, KeyPair],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lab_image: str,
    lab_name: str,
    docker_client: Any,
) -> None:
    up_on_sshd(sshd, tmp_path / "home", monkeypatch, lab_name)
    token = StateStore().load(lab_name).jupyter_token

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "labctl", "open", "--json", "-n", lab_name, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        opened: dict[str, Any] = json.loads(_read_line(proc, 90))
        assert proc.poll() is None, "the tunnel must still be held after the line is printed"
        assert opened == {
            "name": lab_name,
            "url": f"http://127.0.0.1:{port}/lab?token={token}",
            "port": port,
            "tunnel": True,
        }
        with urllib.request.urlopen(opened["url"].replace("/lab?", "/api/status?"), timeout=10) as response:
            assert response.status == 200
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert [json.loads(line) for line in rest.splitlines()] == [{}]  # closed; nothing said twice
    assert token not in err
    _forwarded_ports_answer_through_the_tunnel(lab_name, docker_client)


def _forwarded_ports_answer_through_the_tunnel(lab_name: str, docker_client: Any) -> None:
    box = docker_client.containers.get(container_name(lab_name))
    ports = [free_port(), free_port()]
    for port in ports:
        folder = f"/tmp/served-{port}"
        box.exec_run(["sh", "-c", f"mkdir -p {folder} && echo served by {port} > {folder}/index.html"])
        box.exec_run(["python", "-c", SERVE, folder, str(port)], detach=True)

    taken = socket.socket()
    taken.bind(("127.0.0.1", ports[1]))
    taken.listen(1)
    args = ["open", "--json", "-n", lab_name, "--port", str(free_port())]
    proc = subprocess.Popen(
        [sys.executable, "-m", "labctl", *args, "--forward", str(ports[0]), "--forward", str(ports[1])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        opened = json.loads(_read_line(proc, 90))
        forwards = opened["forwards"]
        assert [f["port"] for f in forwards] == ports
        assert forwards[0]["url"] == f"http://127.0.0.1:{ports[0]}/"  # the lab's number, free here
        assert forwards[1]["url"] != f"http://127.0.0.1:{ports[1]}/"  # taken here: the next free one
        for port, forwarded in zip(ports, forwards, strict=True):
            with urllib.request.urlopen(forwarded["url"], timeout=30) as response:
                assert response.read().decode() == f"served by {port}\n"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        taken.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    with pytest.raises(OSError):  # the forwards close with the tunnel
        urllib.request.urlopen(forwards[0]["url"], timeout=5)
