"""The machine made ready for the lab by scripts from ``templates/``: Docker, and on GPU machines the NVIDIA runtime
(idempotent, sent on stdin); and the dependency image the VM builds while it boots (cloud-init starts the script),
which labctl waits for, and builds itself where there is no such build, or it failed or died."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from labctl.assets import template
from labctl.errors import LabctlError
from labctl.machine import Machine
from labctl.ui import Reporter

if TYPE_CHECKING:
    import docker

SCRIPT_TIMEOUT_S = 1800  # a first install of Docker or the NVIDIA toolkit downloads a few hundred MB


def run_script(machine: Machine, name: str, args: list[str], ui: Reporter, prefix: str) -> str:
    """Its last ``PREFIX: ERROR: reason`` line is the error."""
    script = template(name).read_text()
    result = machine.run(
        ["bash", "-s", "--", *args],
        stdin=script,
        on_line=lambda line: ui.info(f"  {line}") if line.strip() else None,
        check=False,
        timeout=SCRIPT_TIMEOUT_S,
    )
    if result.exit_code != 0:
        errors = [ln for ln in result.output.splitlines() if f"{prefix}: ERROR:" in ln]
        reason = errors[-1].split("ERROR:", 1)[1].strip() if errors else result.output.strip()[-500:]
        raise LabctlError(
            f"Preparing {machine.describe()} failed ({name}, exit code {result.exit_code}): {reason}",
            hint="Fix that on the machine ('labctl ssh' opens a shell there) and run 'labctl up' again.",
        )
    return result.output


def bootstrap_docker(machine: Machine, ui: Reporter, user: str | None) -> None:
    with ui.step(f"Docker on {machine.describe()}"):
        out = run_script(machine, "bootstrap-docker.sh", [user] if user else [], ui, "docker")
    if "to the docker group" in out:
        machine.reconnect()  # group membership only applies to new logins


def bootstrap_nvidia(machine: Machine, ui: Reporter, check_image: str) -> None:
    with ui.step(f"NVIDIA driver and container runtime on {machine.describe()}"):
        run_script(machine, "bootstrap-nvidia.sh", [check_image], ui, "nvidia")


def check_cuda(client: docker.DockerClient, image: str, ui: Reporter) -> None:
    import docker.errors
    from docker.types import DeviceRequest

    code = "import torch; assert torch.cuda.is_available(), 'no CUDA'; print(torch.cuda.get_device_name(0))"
    with ui.step("CUDA check inside a container"):
        try:
            out = client.containers.run(
                image,
                ["python", "-c", code],
                remove=True,
                device_requests=[DeviceRequest(count=-1, capabilities=[["gpu"]])],
            )
        except (docker.errors.ContainerError, docker.errors.APIError) as exc:
            raise LabctlError(
                f"A container on the machine cannot use the GPU ({exc}).",
                hint="Check 'nvidia-smi' on the machine ('labctl ssh'); a driver update may need a reboot.",
            ) from None
        ui.info(f"  GPU: {out.decode().strip()}")


PREWARM_DIR = "/var/lib/labctl"
PREWARM_SCRIPT = "labctl-prewarm.sh"
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
        {
            "path": f"{PREWARM_DIR}/{PREWARM_SCRIPT}",
            "permissions": "0755",
            "content": template(PREWARM_SCRIPT).read_text(),
        },
        {"path": f"{PREWARM_DIR}/deps/Dockerfile", "permissions": "0644", "content": dockerfile},
        # cloud-init writes files before SSH answers but runs commands later: labctl waits for a pending prewarm.
        {"path": f"{PREWARM_DIR}/prewarm.state", "permissions": "0644", "content": "pending\n"},
    ]
    return files, ["sh", "-c", LAUNCH, "labctl-prewarm", f"{PREWARM_DIR}/{PREWARM_SCRIPT}", base, deps_tag]


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
