"""Play a VM's first boot from the cloud-init document labctl made: its files written, its runcmd run as argvs.

The document's paths under /var/lib/labctl are moved under a directory of the test's own (``LABCTL_PREWARM_DIR``
tells the script and labctl where), and nothing else changes: the script that runs is the one the document carries.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

from labctl.labhost import PREWARM_DIR


def moved(value: str, root: Path) -> str:
    return str(root) + value[len(PREWARM_DIR) :] if value.startswith(PREWARM_DIR + "/") else value


def write_files(doc: dict[str, Any], root: Path) -> Path:
    """Write the document's files that belong to the prewarm under ``root``; returns ``root``."""
    for entry in doc["write_files"]:
        if entry["path"].startswith(PREWARM_DIR + "/"):
            path = Path(moved(entry["path"], root))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(entry["content"])
            path.chmod(int(entry["permissions"], 8))
    return root


def boot_env(root: Path, path_first: Path | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, "LABCTL_PREWARM_DIR": str(root), **extra}
    if path_first is not None:
        env["PATH"] = f"{path_first}:{env['PATH']}"
    return env


def run_boot_path(doc: dict[str, Any], root: Path, env: dict[str, str], *, wait: float = 0.0) -> str:
    """Write the files, run every runcmd entry as cloud-init does; with ``wait``, until the prewarm ends."""
    write_files(doc, root)
    for command in doc["runcmd"]:
        assert isinstance(command, list), "a runcmd entry that is not an argv would be shell text"
        subprocess.run([moved(str(arg), root) for arg in command], env=env, check=True, timeout=30)
    state = root / "prewarm.state"
    deadline = time.monotonic() + wait
    while wait and time.monotonic() < deadline:
        text = state.read_text().split()[0] if state.exists() and state.read_text().strip() else ""
        if text in ("done", "failed"):
            return text
        time.sleep(0.05)
    return state.read_text().split()[0] if state.exists() else "absent"


def fake_docker(bin_dir: Path, calls: Path, *, failing_builds: int = 0) -> Path:
    """A ``docker`` that answers, has no image, records each call (tab-separated) and fails the first builds;
    beside it a ``sleep`` that records its pause instead of taking it (the script's waits between tries)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    record = f'(IFS="$(printf "\\t")"; printf "%s\\n" "$*") >>"{calls}"\n'
    script = bin_dir / "docker"
    script.write_text(
        f"#!/bin/sh\n{record}"
        'case "$1" in\n'
        "  info|pull) exit 0 ;;\n"
        "  image) exit 1 ;;\n"
        f'  build) n=$(grep -c "^build" "{calls}"); [ "$n" -gt {failing_builds} ] ;;\n'
        "esac\n"
    )
    (bin_dir / "sleep").write_text(f'#!/bin/sh\nset -- sleep "$@"\n{record}')
    for tool in (script, bin_dir / "sleep"):
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return script
