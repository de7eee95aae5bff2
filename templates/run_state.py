"""What the lab container knows about its runs, as one JSON list on stdout.

labctl ships this file into the lab container and runs it there as ``python run_state.py RUNS_DIR [RUN_ID...]``
(every run when no id is given). It reads the files ``lab-run.sh`` leaves in each run directory and decides
nothing: labctl turns these facts into a run's state. Standard library only; it runs in whatever Python the
image has.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _json(path: str) -> dict[str, Any]:
    try:
        value = json.loads(_read(path) or "")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _int(text: str | None) -> int | None:
    try:
        return int((text or "").strip())
    except ValueError:
        return None


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def facts(run_dir: str) -> dict[str, Any]:
    meta = _json(os.path.join(run_dir, "run.json"))
    metrics = _json(os.path.join(run_dir, "metrics.json"))
    pid_text = _read(os.path.join(run_dir, "pid"))
    return {
        "run_id": os.path.basename(run_dir),
        "started_at": meta.get("started_at"),
        "command": meta.get("command"),
        "exit_code": _int(_read(os.path.join(run_dir, "exit_code"))),
        "accuracy": metrics.get("accuracy"),
        "status": metrics.get("status"),
        "has_pid": pid_text is not None,
        "alive": _alive(_int(pid_text)),
        "age": time.time() - os.path.getmtime(run_dir),
    }


def main(argv: list[str]) -> None:
    root, wanted = argv[0], argv[1:]
    names = wanted or (sorted(os.listdir(root)) if os.path.isdir(root) else [])
    found = [os.path.join(root, name) for name in names if os.path.isdir(os.path.join(root, name))]
    print(json.dumps([facts(run_dir) for run_dir in found]))


if __name__ == "__main__":
    main(sys.argv[1:])
