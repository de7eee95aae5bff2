"""One command per lab at a time, across real processes: a second one waits briefly, then names the first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labctl.state import LabRecord, StateStore

ROOT = Path(__file__).resolve().parents[2]

# Holds the lab's lock until its stdin closes: the test decides when the first command ends.
HOLD = """
import sys
from labctl.locks import lab_lock
from labctl.ui import PlainReporter
with lab_lock("lab", sys.argv[1], PlainReporter(sys.stderr)):
    print("held", flush=True)
    sys.stdin.read()
"""


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path, **extra)


def _holder(command: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, command], env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _labctl(*args: str, wait: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labctl", *args],
        env=_env(LABCTL_LOCK_WAIT=wait),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def lab() -> None:
    StateStore().save(LabRecord(name="lab", target="ssh"))  # never reached a machine: `down` just forgets it


@pytest.mark.usefixtures("lab")
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_second_command_refuses_naming_the_first_and_a_killed_holder_leaves_no_lock() -> None:
    holder = _holder("up")
    try:
        started = time.monotonic()
        busy = _labctl("down", "--yes", wait="0.5")
        assert busy.returncode != 0
        assert f"'labctl up' (pid {holder.pid})" in busy.stderr and "did nothing" in busy.stderr, busy.stderr
        assert time.monotonic() - started < 60
        assert StateStore().exists("lab")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    done = _labctl("down", "--yes", wait="0.5")  # the dead holder's lock went with it
    assert done.returncode == 0, done.stderr
    assert not StateStore().exists("lab")


@pytest.mark.usefixtures("lab")
def test_a_second_command_waits_for_a_short_first_one() -> None:
    holder = _holder("stop")
    second = subprocess.Popen(
        [sys.executable, "-m", "labctl", "down", "--yes"],
        env=_env(LABCTL_LOCK_WAIT="30"),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert second.stderr is not None
        said = ""
        while "Waiting up to 30 s" not in said and second.poll() is None:
            said += second.stderr.readline()
        assert holder.stdin is not None
        holder.stdin.close()  # the first command ends while the second one waits
        said += second.communicate(timeout=120)[1]
    finally:
        for proc in (holder, second):
            if proc.poll() is None:
                proc.kill()
        holder.wait(30)
    assert second.returncode == 0, said
    assert f"'labctl stop' (pid {holder.pid})" in said and "Waiting up to 30 s" in said
