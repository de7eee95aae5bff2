"""The bootstrap scripts: shellcheck-clean, idempotent on a host with Docker, a clear error without a GPU driver."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest

from labctl.errors import LabctlError
from labctl.files import bundled
from labctl.labhost import run_script
from labctl.machine.ssh import SSHMachine
from labctl.ui import PlainReporter

pytestmark = pytest.mark.integration


def test_scripts_pass_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    scripts = sorted(str(p) for p in bundled("templates").glob("*.sh"))
    assert scripts
    result = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_docker_bootstrap_is_a_no_op_the_second_time(machine: SSHMachine, docker_client: Any) -> None:
    ui = PlainReporter(quiet=True)
    first = run_script(machine, "bootstrap-docker.sh", [machine.user], ui, "docker")
    second = run_script(machine, "bootstrap-docker.sh", [machine.user], ui, "docker")
    version = docker_client.version()["Version"]
    assert first.splitlines()[0].startswith("docker: present (")
    assert f"docker: daemon running (engine {version})" in second
    for change in ("installed", "started", "added"):
        assert change not in second
    assert first == second


def test_nvidia_bootstrap_explains_a_missing_driver(machine: SSHMachine) -> None:
    if machine.run("command -v nvidia-smi", check=False).ok:
        pytest.skip("this host has an NVIDIA driver; the missing-driver path cannot be shown here")
    raw = machine.run(["bash", "-s"], stdin=(bundled("templates") / "bootstrap-nvidia.sh").read_text(), check=False)
    assert raw.exit_code == 3
    assert "nvidia-smi is missing" in raw.output
    with pytest.raises(LabctlError) as failed:
        run_script(machine, "bootstrap-nvidia.sh", ["labctl-check:latest"], PlainReporter(quiet=True), "nvidia")
    assert "no NVIDIA driver" in failed.value.render() or "no NVIDIA GPU" in failed.value.render()
    assert "labctl up" in failed.value.render()


@pytest.mark.slow
def test_docker_bootstrap_installs_docker_where_it_is_missing(docker_client: Any, test_base_image: str) -> None:
    """A bare Debian without Docker: the script installs docker.io from the distribution with apt and adds the
    login user to the group. The host has docker.io's dependencies already (``ensure_docker_deps_host``), so apt
    unpacks one package rather than a hundred.

    An unprivileged container cannot run a Docker daemon, so the daemon step must fail here, plainly; the
    second run then finds Docker present and the user already in the group.
    """
    from labctl.container import LabContainer
    from tests.support.docker_images import ensure_docker_deps_host

    host = ensure_docker_deps_host(docker_client)
    box = docker_client.containers.run(host, ["sleep", "900"], detach=True, labels={"labctl.test": "bootstrap"})
    try:
        lab = LabContainer(box)
        lab.put("/t", {"bootstrap-docker.sh": bundled("templates") / "bootstrap-docker.sh"})
        lab.exec(["useradd", "-m", "azureuser"], workdir="/")
        env = {"LABCTL_DOCKER_START_WAIT": "1"}
        run = ["bash", "/t/bootstrap-docker.sh", "azureuser"]
        result = lab.exec(run, check=False, env=env, workdir="/")
        result2 = lab.exec(run, check=False, env=env, workdir="/")
    finally:
        box.remove(force=True)
    code, first = result.exit_code, result.text.splitlines()
    code2, second = result2.exit_code, result2.text.splitlines()
    report = [ln for ln in first if ln.startswith("docker: ")]
    assert report[0] == "docker: installed (docker.io from the distribution)"
    assert report[1] == "docker: added azureuser to the docker group (new logins)"
    assert code == 1 and "docker: ERROR: the Docker daemon does not start" in first[-1]
    again = [ln for ln in second if ln.startswith("docker: ")]
    assert again[0].startswith("docker: present (")
    assert again[1] == "docker: user azureuser can use it"
    assert code2 == 1


def test_docker_bootstrap_without_root_says_what_needs_root(docker_client: Any, test_base_image: str) -> None:
    from labctl.container import LabContainer
    from tests.support.docker_images import ROOTFS_TAG

    box = docker_client.containers.run(ROOTFS_TAG, ["sleep", "300"], detach=True, labels={"labctl.test": "bootstrap"})
    try:
        LabContainer(box).put("/t", {"bootstrap-docker.sh": bundled("templates") / "bootstrap-docker.sh"})
        assert box.exec_run(["useradd", "-m", "azureuser"]).exit_code == 0
        result = box.exec_run(["bash", "/t/bootstrap-docker.sh"], user="azureuser", workdir="/")
    finally:
        box.remove(force=True)
    output = result.output.decode()
    assert result.exit_code == 1
    assert "needs root" in output and "passwordless sudo" in output and "azureuser" in output
