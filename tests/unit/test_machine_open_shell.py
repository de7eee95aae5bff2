"""`open`'s URL and its check of a silent port, and the ssh command `labctl ssh` runs, without any machine."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from labctl.errors import LabctlError, UsageError
from labctl.keys import generate_ed25519
from labctl.state import LabRecord, NodeRecord
from labctl.workflows.reach import check_jupyter, lab_url, ssh_command

TOKEN = "ab" * 32


def test_check_explains_silence() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(LabctlError, match="did not answer"):
        check_jupyter(port, TOKEN, timeout=2)


def test_url_shape() -> None:
    assert lab_url(8890, TOKEN) == f"http://127.0.0.1:8890/lab?token={TOKEN}"


def _record() -> LabRecord:
    return LabRecord(
        name="lab",
        target="azure",
        ssh_key_path="/keys/lab",
        nodes=[NodeRecord(host="203.0.113.7", port=2222, user="azureuser", host_key=generate_ed25519().public_line)],
    )


def test_ssh_trusts_only_the_pinned_key(tmp_path: Path) -> None:
    record = _record()
    known = tmp_path / "known_hosts"
    command = ssh_command(record, known, ["uptime"])
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    line = known.read_text().strip()
    assert line.startswith(f"labctl-{record.name} ssh-ed25519 ")
    assert line.count(" ") == 2  # name, type, key: the comment is dropped
    joined = " ".join(command)
    for option in ("StrictHostKeyChecking=yes", f"UserKnownHostsFile={known}", f"GlobalKnownHostsFile={known}"):
        assert option in joined
    assert f"HostKeyAlias=labctl-{record.name}" in joined
    assert "StrictHostKeyChecking=no" not in joined
    assert command[-2:] == ["azureuser@203.0.113.7", "uptime"]
    assert command[command.index("-p") : command.index("-p") + 2] == ["-p", "2222"]


def test_ssh_to_a_local_lab_points_at_docker_exec(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="this computer"):
        ssh_command(LabRecord(name="lab", target="local"), tmp_path / "k")


@pytest.mark.parametrize(
    ("platform", "words"), [("win32", "Optional features"), ("darwin", "/usr/bin"), ("linux", "openssh-client")]
)
def test_a_missing_ssh_client_is_explained_for_the_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform: str, words: str
) -> None:
    from labctl.workflows import reach

    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no ssh anywhere on the PATH
    monkeypatch.setattr(reach.sys, "platform", platform)
    with pytest.raises(LabctlError) as info:
        reach.ssh_client()
    assert "no" in info.value.message and words in info.value.render()
