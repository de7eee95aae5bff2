"""labctl against a real Azure subscription: the answers no fake can promise. Run with ``make live``
(LABCTL_LIVE_SUBSCRIPTION=<id>, logged in with ``az login`` or a service principal's variables).

1. The cheapest CPU size: up, open (a cell runs in the Jupyter kernel), run-lab for one epoch, stop, start,
   down, and nothing tagged for the lab is left.
2. A two-node CPU lab: up, run-lab on both nodes for one epoch, down, nothing left.

Every ARM request and answer is written to ``tests/recordings/<test>.json`` (secrets blanked, see recorder.py),
which ``tests/integration/test_azure_recorded.py`` replays against the fake. Cost and time: tests/live/README.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

from labctl.cli import app
from tests.live.recorder import Recorder
from tests.support.sshd import free_port

SUBSCRIPTION = os.environ.get("LABCTL_LIVE_SUBSCRIPTION", "")
SIZE = os.environ.get("LABCTL_LIVE_SIZE", "Standard_B2s")  # the catalog's cheapest CPU size
REGION = os.environ.get("LABCTL_LIVE_REGION", "eastus")
RECORDINGS = Path(__file__).resolve().parents[1] / "recordings"


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Recorder]:
    recording = Recorder(SUBSCRIPTION)
    monkeypatch.setattr(requests.Session, "send", recording.wrap(requests.Session.send))
    yield recording
    RECORDINGS.mkdir(exist_ok=True)
    recording.save(RECORDINGS / f"{request.node.name}.json")


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return str(result.output)


def _up(name: str, *more: str) -> None:
    _cli("up", "--name", name, "--subscription", SUBSCRIPTION, "--region", REGION, "--size", SIZE, "--yes", *more)


def _nothing_left(name: str) -> None:
    from labctl.targets.azure.clients import connect
    from labctl.targets.azure.inventory import leftovers

    assert leftovers(connect(SUBSCRIPTION), name) == []


def _a_cell_runs() -> None:
    """Through `open`'s tunnel, a kernel runs a cell: the same steps as the end-to-end test."""
    from tests.e2e.test_full_flow import _api, _execute, _hold_tunnel, _tunnel_base

    thread, stop, said, _ = _hold_tunnel(free_port())
    try:
        base = _tunnel_base(thread, said)
        token = next(line for line in said.getvalue().splitlines() if "token=" in line).split("token=")[1].strip()
        code, kernel = _api("POST", f"{base}/api/kernels", token)
        assert code == 201, kernel
        ws = base.replace("http://", "ws://") + f"/api/kernels/{kernel['id']}/channels?token={token}"
        assert _execute(ws, "print(6 * 7)").split()[-1] == "42"
    finally:
        stop.set()
        thread.join(timeout=30)


def test_the_cheapest_cpu_lab_from_up_to_down(recorder: Recorder) -> None:
    try:
        _up("live-one")
        _a_cell_runs()
        assert "Overall accuracy:" in _cli("run-lab", "--name", "live-one", "--epochs", "1")
        _cli("stop", "--name", "live-one")
        _cli("start", "--name", "live-one")
    finally:
        _cli("down", "--name", "live-one", "--yes")
    _nothing_left("live-one")


def test_a_two_node_cpu_lab_trains_on_both(recorder: Recorder) -> None:
    try:
        _up("live-two", "--nodes", "2")
        assert "Overall accuracy:" in _cli("run-lab", "--name", "live-two", "--nodes", "2", "--epochs", "1")
    finally:
        _cli("down", "--name", "live-two", "--yes")
    _nothing_left("live-two")
