"""`down` never claims a clean slate it did not get: when the container cannot be removed, it says so."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from labctl import labhost
from labctl.cli import app
from labctl.state import LabRecord, NodeRecord, StateStore
from tests.support.sshd import KeyPair, free_port


@pytest.fixture(autouse=True)
def _no_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine is not there: retrying for a blip, as everyday commands do, would only wait."""
    monkeypatch.setattr(labhost, "EVERYDAY_WAIT", 0.0)


def _unreachable_lab(tmp_path: Path) -> None:
    client, host = KeyPair.create(tmp_path, "client"), KeyPair.create(tmp_path, "host")
    StateStore().save(
        LabRecord(
            name="lab",
            target="ssh",
            status="ready",
            ssh_key_path=str(client.private_path),
            container_name="labctl-lab",
            nodes=[NodeRecord(host="127.0.0.1", port=free_port(), user="me", host_key=host.public)],
        )
    )


def test_unsaved_work_keeps_the_lab(tmp_path: Path) -> None:
    _unreachable_lab(tmp_path)
    result = CliRunner().invoke(app, ["down", "--yes"])
    assert result.exit_code == 1
    assert "was not deleted" in result.output and "--no-save" in result.output
    assert StateStore().load("lab").status == "ready"  # nothing was started on the way to deleting it


def test_failed_teardown_keeps_the_record(tmp_path: Path) -> None:
    _unreachable_lab(tmp_path)
    result = CliRunner().invoke(app, ["down", "--yes", "--no-save"])
    assert result.exit_code == 1
    assert "Could not remove the lab container on me@127.0.0.1:" in result.output
    assert "nothing is left" not in result.output
    assert StateStore().exists("lab")  # so `down` can run again once the machine is back


def test_forced_down_forgets_but_names_what_is_left(tmp_path: Path) -> None:
    _unreachable_lab(tmp_path)
    result = CliRunner().invoke(app, ["down", "--yes", "--force", "--no-save"])
    assert result.exit_code == 1
    assert "forgotten here as --force asked" in result.output and "left behind" in result.output
    assert "docker rm -f labctl-lab" in result.output
    assert not StateStore().exists("lab")
