"""`open --forward`: a bad port is refused before anything is connected to, in one paragraph with exit code 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from labctl.cli import app
from labctl.state import LabRecord, NodeRecord, StateStore

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.fixture
def lab() -> str:
    # A ready lab at an address where nothing answers: any attempt to connect would fail another way (exit 1).
    node = NodeRecord(host="192.0.2.1", port=22, user="me", host_key=KEY)
    record = LabRecord(name="lab", target="ssh", nodes=[node], status="ready", container_name="labctl-lab")
    record.jupyter_token, record.jupyter_port, record.ssh_key_path = "0" * 64, 8890, "/nonexistent/key"
    StateStore().save(record)
    return record.name


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--forward", "0"], "--forward 0 is not a port number (1-65535)"),
        (["--forward", "65536"], "--forward 65536 is not a port number (1-65535)"),
        (["--forward", "6006", "--forward", "5000", "--forward", "6006"], "--forward 6006 is given twice"),
        (["--forward", "8890"], "--forward 8890 is the lab's Jupyter port"),
        (["--forward", "8888"], "--forward 8888 is the lab's Jupyter port"),
        (["--forward", "6006", "--print"], "--print holds none"),
    ],
)
def test_a_bad_forward_is_refused_before_connecting(lab: str, args: list[str], words: str) -> None:
    result = CliRunner().invoke(app, ["open", "-n", lab, *args])
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output
    assert "192.0.2.1" not in result.output  # nothing was dialled


def test_a_port_that_is_not_a_number_is_a_usage_error(lab: str) -> None:
    result = CliRunner().invoke(app, ["open", "-n", lab, "--forward", "tensorboard"])
    assert result.exit_code == 2 and "--forward" in result.output and "integer" in result.output


def test_a_bad_forward_is_named_even_where_there_is_no_lab() -> None:
    result = CliRunner().invoke(app, ["open", "--forward", "0"])
    assert result.exit_code == 2 and "--forward 0 is not a port number" in result.output, result.output
