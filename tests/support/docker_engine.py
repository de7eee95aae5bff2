"""A Docker engine for tests: the one already running, or one started here when we are root and none answers."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from typing import Any


def engine_answers() -> bool:
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=10)
        client.ping()
        client.close()
    except (docker.errors.DockerException, OSError):
        return False
    return True


def start_dockerd(timeout: float = 60.0) -> tuple[subprocess.Popen[bytes] | None, str | None]:
    """(process we started or None, reason it cannot run or None)."""
    if engine_answers():
        return None, None
    if os.geteuid() != 0:
        return None, "no Docker engine answers and starting one needs root"
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        return None, "no Docker engine answers and dockerd is not installed (apt-get install docker.io)"
    log = tempfile.NamedTemporaryFile(prefix="labctl-dockerd-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen([dockerd], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None, f"dockerd exited with {proc.returncode}; see {log.name}"
        if engine_answers():
            return proc, None
        time.sleep(0.5)
    proc.terminate()
    return None, f"dockerd did not answer within {timeout:.0f}s; see {log.name}"


USERS_LOCK = os.path.join(tempfile.gettempdir(), "labctl-test-dockerd.lock")


def hold_engine() -> Any:
    """A shared lock held by every test session that uses the engine, so that the session that started dockerd
    does not stop it under another session still running (two test runs side by side on one machine)."""
    import fcntl

    handle = open(USERS_LOCK, "a+")  # noqa: SIM115  # held for the session, released by stop_dockerd
    fcntl.flock(handle, fcntl.LOCK_SH)
    return handle


def stop_dockerd(proc: Any, held: Any = None) -> None:
    """Stop the dockerd this session started, unless another session still holds the engine."""
    if held is not None:
        import fcntl

        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # only when no other session holds it shared
        except BlockingIOError:
            held.close()
            return
        held.close()
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
