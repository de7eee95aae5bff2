"""The dependency image built by the VM while it boots (cloud-init starts the script), and labctl waiting for it;
labctl builds it itself where there is no such build, or it failed or died."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from labctl.assets import template
from labctl.ui import Reporter

if TYPE_CHECKING:
    from labctl.machine import Machine

PREWARM_DIR = "/var/lib/labctl"
SCRIPT = "labctl-prewarm.sh"
# Started by cloud-init as an argv; the script, image and tag are its arguments, never part of this text.
LAUNCH = 'nohup bash "$@" >/dev/null 2>&1 &'
# Read by labctl over SSH, with the directory as "$1": the state, "stale" for a run that is no longer alive
# (the machine rebooted, or the script was killed), then the last line of the log.
STATUS = r"""
d="$1"
[ -r "$d/prewarm.state" ] || { echo absent; exit 0; }
read -r state pid boot <"$d/prewarm.state"
if [ "$state" = running ]; then
  if [ "$boot" != "$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown)" ] || [ ! -d "/proc/$pid" ]; then
    state=stale
  fi
fi
echo "${state:-absent}"
tail -n 1 "$d/prewarm.log" 2>/dev/null || true
"""
WAIT_S = 2700.0  # a pull of several GB and the pip installs, on a slow day
PENDING_S = 300.0  # how long cloud-init may take to start the script after SSH answers


def cloud_init(base: str, deps_tag: str) -> tuple[list[dict[str, Any]], list[str]]:
    """``write_files`` and the ``runcmd`` argv: contents are data, the checked image references arguments."""
    dockerfile = template("Dockerfile.deps").read_text()
    files: list[dict[str, Any]] = [
        {"path": f"{PREWARM_DIR}/{SCRIPT}", "permissions": "0755", "content": template(SCRIPT).read_text()},
        {"path": f"{PREWARM_DIR}/deps/Dockerfile", "permissions": "0644", "content": dockerfile},
        # cloud-init writes files before SSH answers but runs commands later: labctl waits for a pending prewarm.
        {"path": f"{PREWARM_DIR}/prewarm.state", "permissions": "0644", "content": "pending\n"},
    ]
    return files, ["sh", "-c", LAUNCH, "labctl-prewarm", f"{PREWARM_DIR}/{SCRIPT}", base, deps_tag]


def read_state(machine: Machine) -> tuple[str, str]:
    """(absent, pending, running, stale, done or failed; the last log line)."""
    where = os.environ.get("LABCTL_PREWARM_DIR") or PREWARM_DIR
    result = machine.run(["sh", "-c", STATUS, "labctl-prewarm-status", where], check=False, timeout=60)
    lines = result.output.strip().splitlines() if result.exit_code == 0 else []
    return (lines[0].strip(), lines[1].strip() if len(lines) > 1 else "") if lines else ("absent", "")


def await_prewarm(machine: Machine, ui: Reporter, *, timeout: float = WAIT_S) -> str:
    """Only ``done`` means the dependency image is there."""
    state, last = read_state(machine)
    if state not in ("pending", "running"):
        return state
    start = time.monotonic()
    shown = ""
    with ui.step("Waiting for the dependency image the machine builds while it boots"):
        while state in ("pending", "running"):
            if last and last != shown:
                ui.info(f"  {last[:160]}")
                shown = last
            waited = time.monotonic() - start
            if waited > timeout or (state == "pending" and waited > PENDING_S):
                ui.warn(f"The machine's image preparation is still {state} after {waited:.0f}s; labctl builds it.")
                return "timeout"
            time.sleep(float(os.environ.get("LABCTL_PREWARM_POLL") or 1))
            state, last = read_state(machine)
    if state != "done":
        ui.warn(f"The machine's image preparation ended {state} ({last or 'no log'}); labctl builds the image itself.")
    return state
