"""The fake VM's boot hook feeds a real sshd: the first SSH connection is verified against the pinned host key.

This is the contract the end-to-end flow relies on: the host key labctl generated locally and passed in
cloud-init is the one the machine presents, and the user's key from the VM request is the one it accepts.
"""

from __future__ import annotations

import base64
import getpass
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakearm import FakeArm
from tests.fakearm.fixtures import arm_env, fake_arm, provision  # noqa: F401
from tests.support.fake_vm import serve_vms
from tests.support.sshd import free_port, sshd_unavailable


@pytest.fixture
def booted_sshd(arm_env: FakeArm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:  # noqa: F811
    reason = sshd_unavailable()
    if reason:
        pytest.skip(reason)
    port = free_port()
    monkeypatch.setenv("LABCTL_SSH_PORT", str(port))
    servers = serve_vms(arm_env, tmp_path, port)
    yield [port]
    for server in servers:
        server.stop()


def test_first_connection_is_verified_against_the_pinned_host_key(booted_sshd: list[int]) -> None:
    paramiko = pytest.importorskip("paramiko")
    record = provision("lab")
    assert record.nodes[0].host == "127.0.0.1" and record.nodes[0].port == booted_sshd[0]
    assert record.nodes[0].host_key and record.ssh_key_path
    key_type, key_data = record.nodes[0].host_key.split()
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    pinned = paramiko.Ed25519Key(data=base64.b64decode(key_data))
    client.get_host_keys().add(f"[{record.nodes[0].host}]:{record.nodes[0].port}", key_type, pinned)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.connect(
                record.nodes[0].host,
                port=record.nodes[0].port,
                username=getpass.getuser(),  # the fake VM is this machine: log in as whoever runs the test
                key_filename=record.ssh_key_path,
                look_for_keys=False,
                allow_agent=False,
                timeout=5,
            )
            break
        except (paramiko.ssh_exception.NoValidConnectionsError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        _, stdout, _ = client.exec_command("echo verified")
        assert stdout.read().decode().strip() == "verified"
    finally:
        client.close()

    stranger = paramiko.SSHClient()
    stranger.set_missing_host_key_policy(paramiko.RejectPolicy())
    from labctl.keys import generate_ed25519

    other = paramiko.Ed25519Key(data=base64.b64decode(generate_ed25519().public_line.split()[1]))
    stranger.get_host_keys().add(f"[{record.nodes[0].host}]:{record.nodes[0].port}", key_type, other)
    with pytest.raises(paramiko.BadHostKeyException):
        stranger.connect(
            record.nodes[0].host,
            port=record.nodes[0].port,
            username=getpass.getuser(),
            key_filename=record.ssh_key_path,
            look_for_keys=False,
            allow_agent=False,
            timeout=5,
        )
    stranger.close()
