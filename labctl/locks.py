"""One command at a time per lab: `up`, `down`, `stop` and `start` hold the lab's lock while they change it. It is
the OS's own lock on a file, so a killed command leaves no stale one; beside it the holder names itself."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from labctl.errors import LabctlError
from labctl.files import make_private_dir, read_json_object, write_private
from labctl.state import now_iso, user_dir, validate_lab_name
from labctl.ui import Reporter

DEFAULT_WAIT = 10.0  # seconds a command waits for another one on the same lab before it refuses


def _lock(handle: IO[bytes], *, release: bool = False) -> bool:
    """Take (without waiting) or release the OS lock on ``handle``; False when another process holds it."""
    try:
        if sys.platform == "win32":
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK if release else msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_UN if release else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


@contextmanager
def lab_lock(name: str, command: str, ui: Reporter) -> Iterator[None]:
    """Held while ``command`` (e.g. "down") runs; another holder is waited for briefly, then named in the refusal."""
    root = make_private_dir(user_dir("state") / "locks")
    lock_path = root / f"{validate_lab_name(name)}.lock"
    info_path = root / f"{name}.holder.json"
    limit = float(os.environ.get("LABCTL_LOCK_WAIT") or DEFAULT_WAIT)  # checked before any command starts
    with open(lock_path, "a+b") as handle:
        deadline = time.monotonic() + limit
        said = False
        while not _lock(handle):
            holder = read_json_object(info_path)
            other = f"'labctl {holder.get('command', '?')}' (pid {holder.get('pid', '?')})"
            if time.monotonic() >= deadline:
                raise LabctlError(
                    f"Lab '{name}' is busy: {other}, started {holder.get('since', 'just now')}, is changing it, "
                    f"so 'labctl {command}' did nothing.",
                    hint="Wait for that command to finish (or stop it with Ctrl-C in its terminal), then run this "
                    "one again.",
                )
            if not said:
                ui.info(f"Waiting up to {limit:.0f} s for {other}, which is working on lab '{name}'.")
                said = True
            time.sleep(0.1)
        write_private(info_path, json.dumps({"command": command, "pid": os.getpid(), "since": now_iso()}) + "\n")
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                info_path.unlink()
            _lock(handle, release=True)
