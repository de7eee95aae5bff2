"""A command that waited for another one on the same lab reads the lab's record only once it holds the lock, so
it never saves over what the other one saved (`stop` and `start` 0.3 s apart once lost a deallocation)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labctl.cli import app
from labctl.locks import lab_lock
from labctl.state import StateStore
from labctl.ui import PlainReporter
from tests.fakearm import FakeArm
from tests.fakearm.fixtures import arm_env, fake_arm, provision  # noqa: F401


@pytest.mark.parametrize("command", ["stop", "start"])
def test_a_command_that_waited_keeps_what_the_other_saved(arm_env: FakeArm, command: str) -> None:  # noqa: F811
    provision("lab")
    if command == "start":
        assert CliRunner().invoke(app, ["stop"]).exit_code == 0
    outcome: dict[str, Any] = {}
    with lab_lock("lab", "up", PlainReporter()):  # another command working on the lab
        waiting = threading.Thread(target=lambda: outcome.update(result=CliRunner().invoke(app, [command])))
        waiting.start()
        _wait_until_it_waits(StateStore().root / "locks" / "lab.lock")
        store = StateStore()
        record = store.load("lab")
        record.target_data["saved_by_the_other_command"] = True
        store.save(record)
    waiting.join(60)
    assert outcome["result"].exit_code == 0, outcome["result"].output
    assert StateStore().load("lab").target_data.get("saved_by_the_other_command") is True


def _wait_until_it_waits(lock: Path) -> None:
    """Until the command has opened the lab's lock file too (it has read the lab's name and waits for the lock)."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        time.sleep(2)
        return
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        opened = 0
        for fd in list(fds.iterdir()):
            with contextlib.suppress(OSError):
                opened += os.readlink(fd) == str(lock)
        if opened >= 2:
            return
        time.sleep(0.02)
    raise AssertionError("the command never waited for the lab's lock")
