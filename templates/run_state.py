"""What the lab container knows about its runs, and the one thing it does to them before the machine stops.

labctl ships this file into the lab container and runs it there as ``python run_state.py RUNS_DIR [RUN_ID...]``
(every run when no id is given): it reads the files ``lab-run.sh`` leaves in each run directory and prints them as
one JSON list, deciding nothing: labctl turns these facts into a run's state.

``python run_state.py interrupt REASON RUNS_DIR [--wait SECONDS]`` is what ``labctl stop`` and the idle agent run
before the machine stops (also read from stdin, as ``python - interrupt ...``): every live run gets
``resume.json`` (why and when; unless its ``run.json`` says ``"resume": false``) and SIGTERM, which makes it save
its checkpoint; then it waits for each to end (its ``exit_code``), at most SECONDS, and prints
``{"interrupted": [every run signalled], "timed_out": [those of them not ended in time]}``.

``python run_state.py claim RUN_DIR GRACE`` is a resume's first step: it prints ``claimed`` once it has put the last
attempt's end aside, or ``busy`` when the run is running or being started (no pid yet, younger than GRACE seconds):
one resume of a run at a time, whichever computer asks.

Standard library only; it runs in whatever Python the image has.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from datetime import datetime, timezone
from typing import Any

REASONS = ("stop", "idle", "budget", "shutdown", "spot")  # what stops the machine: stop, idle agent, budget, ...


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
    marked = os.path.join(run_dir, "resume.json")
    options = metrics.get("options")
    options = options if isinstance(options, dict) else {}
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
        "epoch": metrics.get("epochs_completed"),
        "epochs": options.get("epochs"),
        "resumable": meta.get("resumable") is True,
        "resume_off": meta.get("resume") is False,
        "resume_reason": (_json(marked).get("reason") or "?") if os.path.exists(marked) else None,
        "checkpoint": os.path.exists(os.path.join(run_dir, "checkpoint.pt")),
    }


def run_dirs(root: str, wanted: list[str]) -> list[str]:
    names = wanted or (sorted(os.listdir(root)) if os.path.isdir(root) else [])
    return [os.path.join(root, name) for name in names if os.path.isdir(os.path.join(root, name))]


def _ended(run_dir: str) -> bool:
    return os.path.exists(os.path.join(run_dir, "exit_code"))


def interrupt(reason: str, root: str, wait: float) -> dict[str, list[str]]:
    """SIGTERM to every live run, each marked to resume first (unless it opted out), then a bounded wait."""
    signalled = []
    for run_dir in run_dirs(root, []):
        pid = _int(_read(os.path.join(run_dir, "pid")))
        if pid is None or _ended(run_dir) or not _alive(pid):
            continue
        if _json(os.path.join(run_dir, "run.json")).get("resume") is not False:
            mark = {"reason": reason, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            with open(os.path.join(run_dir, "resume.json.tmp"), "w") as f:
                json.dump(mark, f)
            os.replace(os.path.join(run_dir, "resume.json.tmp"), os.path.join(run_dir, "resume.json"))
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:  # it ended meanwhile
            continue
        signalled.append(run_dir)
    deadline = time.monotonic() + wait
    waiting = [run_dir for run_dir in signalled if not _ended(run_dir)]
    while waiting and time.monotonic() < deadline:
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        waiting = [run_dir for run_dir in waiting if not _ended(run_dir)]
    return {
        "interrupted": [os.path.basename(d) for d in signalled],
        "timed_out": [os.path.basename(d) for d in waiting],
    }


def claim(run_dir: str, grace: float) -> bool:
    """Under the run directory's lock, so that of two resumes at once only the first goes on."""
    held = os.open(run_dir, os.O_RDONLY)
    try:
        if sys.platform != "win32":  # always true: it runs in the lab's Linux container
            import fcntl

            fcntl.flock(held, fcntl.LOCK_EX)
        run = facts(run_dir)
        if run["alive"] or (run["exit_code"] is None and not run["has_pid"] and run["age"] < grace):
            return False
        ended, n = os.path.join(run_dir, "exit_code"), 1
        while os.path.exists(f"{ended}.{n}"):
            n += 1
        if os.path.exists(ended):
            os.replace(ended, f"{ended}.{n}")
        for name in ("pid", "resume.json"):
            if os.path.exists(os.path.join(run_dir, name)):
                os.remove(os.path.join(run_dir, name))
        os.utime(run_dir)  # young again: "being started" until the new attempt writes its pid
        return True
    finally:
        os.close(held)


def main(argv: list[str]) -> None:
    if argv[:1] == ["claim"]:
        print("claimed" if claim(argv[1], float(argv[2])) else "busy")
        return
    if argv[:1] != ["interrupt"]:
        print(json.dumps([facts(run_dir) for run_dir in run_dirs(argv[0], argv[1:])]))
        return
    parser = argparse.ArgumentParser(prog="run_state.py interrupt", description="Checkpoint every live run.")
    parser.add_argument("reason", choices=REASONS)
    parser.add_argument("runs_dir")
    parser.add_argument("--wait", type=float, default=120.0, metavar="SECONDS")
    args = parser.parse_args(argv[1:])
    if args.wait < 0:
        parser.error(f"--wait {args.wait:g}: give the seconds to wait for the runs' checkpoints, 0 or more")
    print(json.dumps(interrupt(args.reason, args.runs_dir, args.wait)))


if __name__ == "__main__":
    main(sys.argv[1:])
