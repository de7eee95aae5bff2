"""Docker, and on GPU machines the NVIDIA runtime, made ready by idempotent scripts sent on stdin."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
