"""templates/run_state.py, the program labctl runs in the lab container, read here on real run directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from labctl.files import template
from labctl.runs import STARTING_GRACE_S, run_info_from


def _run_dir(root: Path, run_id: str, **files: str) -> Path:
    run = root / run_id
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"started_at": "2026-01-01T00:00:00+00:00", "command": ["train"]}))
    for name, text in files.items():
        (run / name).write_text(text)
    return run


def _state(root: Path, *run_ids: str) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, str(template("run_state.py")), str(root), *run_ids],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {info.run_id: info.state for info in map(run_info_from, json.loads(out))}


def test_each_state_a_run_directory_can_be_in(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _run_dir(tmp_path, "ok", exit_code="0\n", **{"metrics.json": '{"accuracy": 0.5, "status": "succeeded"}'})
    _run_dir(tmp_path, "failed", exit_code="3\n")
    _run_dir(tmp_path, "stopped", exit_code="130\n", **{"metrics.json": '{"status": "interrupted"}'})
    _run_dir(tmp_path, "live", pid=f"{os.getpid()}\n")
    _run_dir(tmp_path, "gone", pid=f"{dead.pid}\n")
    _run_dir(tmp_path, "starting")
    old = _run_dir(tmp_path, "never-started")
    past = time.time() - STARTING_GRACE_S - 5
    os.utime(old, (past, past))
    assert _state(tmp_path) == {
        "ok": "succeeded",
        "failed": "failed",
        "stopped": "interrupted",
        "live": "running",
        "gone": "lost",
        "starting": "running",
        "never-started": "lost",
    }


def test_only_the_named_runs_and_nothing_without_a_runs_directory(tmp_path: Path) -> None:
    _run_dir(tmp_path, "a", exit_code="0")
    _run_dir(tmp_path, "b", exit_code="1")
    assert _state(tmp_path, "b", "missing") == {"b": "failed"}
    assert _state(tmp_path / "no-runs-yet") == {}


def test_a_half_written_file_is_no_error(tmp_path: Path) -> None:
    _run_dir(tmp_path, "r", exit_code="", pid="not a pid", **{"metrics.json": '{"accur'})
    out = subprocess.run(
        [sys.executable, str(template("run_state.py")), str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout
    (facts,) = json.loads(out)
    assert facts["exit_code"] is None and facts["accuracy"] is None and facts["started_at"].startswith("2026")
