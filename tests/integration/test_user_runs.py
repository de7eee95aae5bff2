"""The user's own script and notebook run as lab runs in a real local lab, a run stopped with `cancel`, and
`status` with several labs; all through the command line."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labctl.cli import app
from labctl.state import LabRecord, NodeRecord, StateStore
from tests.conftest import clean_environment_in
from tests.support.sshd import free_port

pytestmark = pytest.mark.integration

runner = CliRunner()

SCRIPT = textwrap.dedent(
    """
    import os, sys
    import helpers  # kept in /workspace: on the import path of every run
    print("args", sys.argv[1:], flush=True)
    print("cwd is LAB_OUT", os.getcwd() == os.environ["LAB_OUT"], flush=True)
    open("result.txt", "w").write(helpers.answer())
    """
)

SLOW = textwrap.dedent(
    """
    import signal, sys, time
    def stop(signum, frame):
        open("checkpoint.pt", "wb").write(b"weights")
        print("saved the checkpoint", flush=True)
        sys.exit(143)
    signal.signal(signal.SIGTERM, stop)
    print("training", flush=True)
    time.sleep(300)
    """
)


@pytest.fixture(scope="module")
def made_lab(lab_image: str, module_lab_name: str, tmp_path_factory: pytest.TempPathFactory) -> LabRecord:
    """One local lab for the module, made by `up` (each start of Jupyter costs seconds)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        clean_environment_in(monkeypatch, tmp_path_factory)
        up = runner.invoke(app, ["up", "--target", "local", "-n", module_lab_name])
        assert up.exit_code == 0, up.output
        return StateStore().load(module_lab_name)


@pytest.fixture
def local_lab(made_lab: LabRecord) -> str:
    """The module's lab as `up` recorded it, in the test's own state: no run of another test in its record."""
    StateStore().save(made_lab)
    return made_lab.name


def _results(lab: str, run_id: str) -> Path:
    import os

    return Path(os.environ["LABCTL_RESULTS_DIR"]) / lab / run_id


def test_a_script_from_here_runs_like_the_lab(local_lab: str, tmp_path: Path) -> None:
    helpers = tmp_path / "helpers.py"
    helpers.write_text("def answer():\n    return '42'\n")
    assert runner.invoke(app, ["push", str(helpers), "-n", local_lab]).exit_code == 0
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)

    result = runner.invoke(app, ["run", "-n", local_lab, "--json", str(script), "--epochs", "3", "-x"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # stdout is the JSON alone: the run's log streamed to stderr
    assert "args ['--epochs', '3', '-x']" in result.stderr
    assert data["state"] == "succeeded" and data["where"] == f"lab {local_lab}" and data["verified"]
    assert "cwd is LAB_OUT True" in result.stderr
    results = _results(local_lab, data["run_id"])
    assert (results / "result.txt").read_text() == "42"
    assert (results / "train.py").read_text() == SCRIPT  # what ran is kept with its results

    logs = runner.invoke(app, ["logs", data["run_id"], "-n", local_lab])
    assert "args ['--epochs', '3', '-x']" in logs.stdout
    listed = runner.invoke(app, ["runs", "-n", local_lab, "--json"])
    assert data["run_id"] in [r["run_id"] for r in json.loads(listed.stdout)["runs"]]

    inside = runner.invoke(app, ["run", "-n", local_lab, "helpers.py"])  # a script already in /workspace
    assert inside.exit_code == 0, inside.output
    missing = runner.invoke(app, ["run", "-n", local_lab, "nowhere.py"])
    assert missing.exit_code == 3 and "neither on this computer nor in the lab's workspace" in missing.output


def test_cancel_stops_a_run_which_keeps_its_checkpoint(local_lab: str, tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text(SLOW)
    started = runner.invoke(app, ["run", "-n", local_lab, "--detach", "--json", str(script)])
    assert started.exit_code == 0, started.output
    run_id = json.loads(started.stdout)["run_id"]
    deadline = time.monotonic() + 60
    while "training" not in runner.invoke(app, ["logs", run_id, "-n", local_lab]).stdout:
        assert time.monotonic() < deadline, "the script never started"
        time.sleep(0.5)

    cancelled = runner.invoke(app, ["cancel", "-n", local_lab, "--json"])
    assert cancelled.exit_code == 0, cancelled.output
    data = json.loads(cancelled.stdout[cancelled.stdout.index("{") :])
    assert data["run_id"] == run_id and data["state"] == "interrupted"
    assert "checkpoint.pt" in data["kept"] and "train.log" in data["kept"]
    again = runner.invoke(app, ["cancel", "-n", local_lab])
    assert again.exit_code == 2 and "No run is running" in again.output
    fetched = runner.invoke(app, ["fetch", run_id, "-n", local_lab])
    assert fetched.exit_code == 0, fetched.output
    assert (_results(local_lab, run_id) / "checkpoint.pt").read_bytes() == b"weights"


def test_a_notebook_of_ones_own_runs_in_the_lab(local_lab: str, tmp_path: Path) -> None:
    cell = "import os\nopen(os.path.join(os.environ['LAB_OUT'], 'from-notebook.txt'), 'w').write('ran')\nprint('hi')"
    notebook = {
        "cells": [{"cell_type": "code", "source": cell, "metadata": {}, "outputs": [], "execution_count": None}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = tmp_path / "mine.ipynb"
    path.write_text(json.dumps(notebook))
    result = runner.invoke(app, ["run-lab", "-n", local_lab, "--notebook", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # stdout is the JSON alone: the run's log streamed to stderr
    assert "cell 1/1" in result.stderr
    results = _results(local_lab, data["run_id"])
    assert (results / "from-notebook.txt").read_text() == "ran"
    executed = json.loads((results / "mine.executed.ipynb").read_text())
    assert "".join(executed["cells"][0]["outputs"][0]["text"]) == "hi\n"


def test_status_of_several_labs_is_one_table(local_lab: str) -> None:
    # A second lab on an SSH host that does not answer: it is listed too, as unreachable, instead of an error.
    StateStore().save(
        LabRecord(
            name="elsewhere",
            target="ssh",
            status="ready",
            nodes=[NodeRecord(host="127.0.0.1", port=free_port(), user="me")],
        )
    )
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(local_lab in line and "local" in line for line in lines)
    assert any("elsewhere" in line and "ssh" in line and "unreachable" in line for line in lines)
    header = next(line for line in lines if "name" in line and "target" in line)
    assert all(word in header for word in ("size", "state", "$/h", "spend", "idle", "last run"))
    as_json = runner.invoke(app, ["status", "--json"])
    assert sorted(lab["name"] for lab in json.loads(as_json.stdout)["labs"]) == sorted([local_lab, "elsewhere"])
