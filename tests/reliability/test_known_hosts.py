"""~/.ssh/known_hosts read as OpenSSH reads it, against a real sshd: CA lines are not host keys (they once made
every '--target ssh' fail), a revoked key is never pinned, and a negated pattern rules its line out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from labctl.errors import LabctlError
from labctl.keys import confirm_host_key, generate_ed25519, normalize, read_known_hosts
from labctl.ui import PlainReporter
from tests.support.sshd import SSHServer, make_server, sshd_unavailable


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SSHServer]:
    reason = sshd_unavailable()
    if reason:
        pytest.skip(reason)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    sshd, _ = make_server(tmp_path / "sshd")
    sshd.start()
    try:
        yield sshd
    finally:
        sshd.stop()


def _known_hosts(server: SSHServer, *lines: str) -> None:
    text = "".join(
        line.format(host=f"[{server.host}]:{server.port}", key=server.host_key.public) + "\n" for line in lines
    )
    (Path.home() / ".ssh" / "known_hosts").write_text(text)


def test_a_ca_line_and_a_negated_pattern_leave_the_hosts_own_key(server: SSHServer) -> None:
    other = generate_ed25519().public_line
    _known_hosts(
        server,
        f"@cert-authority *.example.com,{{host}} {generate_ed25519().public_line}",
        f"!{{host}},* {other}",  # every host but this one
        "{host} {key}",
    )
    key = confirm_host_key(server.host, server.port, PlainReporter(), assume_yes=True)
    assert key == normalize(server.host_key.public)


def test_a_revoked_key_is_never_pinned(server: SSHServer) -> None:
    _known_hosts(server, "@revoked * {key}", "{host} {key}")
    assert read_known_hosts(server.host, server.port)[0] == []
    with pytest.raises(LabctlError, match="@revoked"):
        confirm_host_key(server.host, server.port, PlainReporter(), assume_yes=True)
