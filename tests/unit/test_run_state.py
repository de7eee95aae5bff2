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


# A trainer as cifarlab behaves on SIGTERM: it finishes its step, saves, and ends as interrupted (130). With
# "ignore" it goes on regardless, as a run that cannot checkpoint in time.
_TRAINER = """
import signal, sys, time
def stop(*_):
    open("checkpoint.pt", "w").write("saved")
    sys.exit(130)
signal.signal(signal.SIGTERM, signal.SIG_IGN if sys.argv[1] == "ignore" else stop)
open("started", "w").close()
while True:
    time.sleep(0.05)
"""


def _launch(root: Path, run_id: str, behaviour: str = "checkpoint", **meta: object) -> subprocess.Popen[bytes]:
    run = _run_dir(root, run_id)
    (run / "run.json").write_text(json.dumps({"started_at": "2026-01-01T00:00:00+00:00", **meta}))
    argv = ["sh", str(template("lab-run.sh")), str(run), str(root), sys.executable, "-c", _TRAINER, behaviour]
    proc = subprocess.Popen(argv, cwd=run)
    deadline = time.monotonic() + 60
    while not ((run / "started").exists() and (run / "pid").exists()):
        assert time.monotonic() < deadline, f"the trainer of {run_id} did not start within 60 s"
        time.sleep(0.05)
    return proc


def _interrupt(*args: str) -> subprocess.CompletedProcess[str]:
    """As the idle agent runs it: the program read from stdin."""
    program = template("run_state.py").read_text()
    return subprocess.run([sys.executable, "-", "interrupt", *args], input=program, capture_output=True, text=True)


def test_interrupt_checkpoints_every_live_run_and_marks_it_to_resume(tmp_path: Path) -> None:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    _run_dir(tmp_path, "finished", exit_code="0\n")
    _run_dir(tmp_path, "gone", pid=f"{done.pid}\n")
    procs = [_launch(tmp_path, "a"), _launch(tmp_path, "kept", resume=False)]
    result = _interrupt("idle", str(tmp_path), "--wait", "20")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"interrupted": ["a", "kept"], "timed_out": []}
    assert [p.wait(10) for p in procs] == [130, 130]
    mark = json.loads((tmp_path / "a" / "resume.json").read_text())
    assert mark["reason"] == "idle" and mark["at"].startswith("20")
    assert (tmp_path / "a" / "checkpoint.pt").read_text() == "saved"
    assert (tmp_path / "a" / "exit_code").read_text().strip() == "130"
    assert _state(tmp_path, "a", "kept") == {"a": "interrupted", "kept": "interrupted"}
    assert not (tmp_path / "kept" / "resume.json").exists()  # its run.json said no
    assert not any((tmp_path / name / "resume.json").exists() for name in ("finished", "gone"))


def test_interrupt_waits_no_longer_than_told(tmp_path: Path) -> None:
    proc = _launch(tmp_path, "stubborn", "ignore")
    try:
        t0 = time.monotonic()
        result = _interrupt("spot", str(tmp_path), "--wait", "1")
        assert time.monotonic() - t0 < 8
        assert json.loads(result.stdout) == {"interrupted": ["stubborn"], "timed_out": ["stubborn"]}
        assert json.loads((tmp_path / "stubborn" / "resume.json").read_text())["reason"] == "spot"
        assert proc.poll() is None
    finally:
        proc.kill()
        for child in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split():
            os.kill(int(child), 9)
        proc.wait()


def test_interrupt_refuses_an_unknown_reason_before_touching_a_run(tmp_path: Path) -> None:
    proc = _launch(tmp_path, "a")
    try:
        for bad, named in ((["reboot", str(tmp_path)], "'reboot'"), (["stop", str(tmp_path), "--wait", "-1"], "-1")):
            result = _interrupt(*bad)
            assert result.returncode == 2 and named in result.stderr and not result.stdout
            assert not (tmp_path / "a" / "resume.json").exists() and proc.poll() is None
        assert json.loads(_interrupt("stop", str(tmp_path / "none")).stdout) == {"interrupted": [], "timed_out": []}
    finally:
        proc.terminate()
        proc.wait(10)


def _info(state_facts: dict[str, object]) -> str:
    base = {"run_id": "r", "exit_code": 130, "status": "interrupted", "epoch": 3.0, "epochs": 10.0, "resumable": True}
    info = run_info_from({**base, "resume_reason": "idle", **state_facts})
    return info.shown() + (" [to resume]" if info.to_resume else "")


def test_how_a_stopped_run_reads_and_whether_it_resumes() -> None:
    assert _info({}) == "interrupted at epoch 3/10, resumes on start [to resume]"
    assert _info({"resume_reason": None}) == "interrupted at epoch 3/10"  # cancelled: never marked
    assert _info({"resume_off": True}) == "interrupted at epoch 3/10, not resumed (--no-resume)"
    script = {"resumable": False, "epoch": None, "exit_code": 143, "status": None}
    assert _info(script) == "interrupted, not resumable (it would start over)"
    # the checkpoint not finished before the machine went: from the last epoch's
    lost = {"exit_code": None, "status": None, "alive": False, "has_pid": True, "checkpoint": True}
    assert _info(lost) == "interrupted at epoch 3/10, resumes on start [to resume]"
    assert _info({**lost, "checkpoint": False}) == "lost"
    assert _info({"exit_code": 0, "status": "succeeded"}) == "succeeded"


def test_a_stop_that_comes_as_the_run_starts_still_ends_it_in_order(tmp_path: Path) -> None:
    """A SIGTERM as soon as the pid file is there reaches the trainer through the wrapper, which never dies first,
    leaving the trainer running on with no exit code and no checksums."""
    run = _run_dir(tmp_path, "early")
    argv = ["sh", str(template("lab-run.sh")), str(run), str(tmp_path), sys.executable, "-c", _TRAINER, "checkpoint"]
    proc = subprocess.Popen(argv, cwd=run)
    while not (run / "pid").exists():  # as `run_state.py interrupt` finds a live run: by its pid file
        time.sleep(0.0002)
    proc.terminate()
    code = proc.wait(30)
    assert (run / "exit_code").read_text().strip() == str(code) and code in (130, 143)
    assert (run / "SHA256SUMS").exists() and not (run / "pid").exists()
