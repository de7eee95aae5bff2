"""`open --forward`: more ports of the lab reach this computer's 127.0.0.1 through the one SSH tunnel.

A real lab on the test sshd runs two HTTP servers in its container; `open --json --forward A --forward B` runs as
the real CLI process, its JSON line names each forwarded URL, and each answers with its own server's page while
the tunnel is held. Port B is taken on this computer first, so its forward moves to the next free one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from labctl.container import container_name
from tests.integration.test_open_json import _read_line, up_on_sshd
from tests.support.sshd import KeyPair, SSHServer, free_port

pytestmark = pytest.mark.integration

SERVE = (
    "import http.server as h, os, sys; os.chdir(sys.argv[1]); h.test(h.SimpleHTTPRequestHandler, port=int(sys.argv[2]))"
)


def test_forwarded_ports_answer_through_the_tunnel(
    sshd: tuple[SSHServer, KeyPair],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lab_name: str,
    docker_client: Any,
    lab_image: str,
) -> None:
    up_on_sshd(sshd, tmp_path / "home", monkeypatch, lab_name)
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
