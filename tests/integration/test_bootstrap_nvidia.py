"""bootstrap-nvidia.sh on a freshly booted VM: it waits for cloud-init and the apt lock, then proves the GPU
from a container of the image labctl gives it.

The real script runs under real bash through labctl's LocalMachine; only the tools that need an NVIDIA GPU or
would change this host (cloud-init, nvidia-smi, nvidia-ctk, docker, apt-get, the key download) are small
scripts on PATH that log how they were called, in the order they were called.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from labctl.labhost import run_script
from labctl.machine.base import LocalMachine
from labctl.ui import PlainReporter

STUBS = {
    "cloud-init": 'echo "cloud-init $*" >>"$STUB_LOG"; echo "status: done"',
    "nvidia-smi": 'echo "nvidia-smi $*" >>"$STUB_LOG"; echo "Tesla T4, 550.54.15"',
    "docker": """echo "docker $*" >>"$STUB_LOG"
case "$1" in
  info) echo '{"nvidia":{"path":"nvidia-container-runtime"},"runc":{"path":"runc"}}' ;;
  run) echo "GPU 0: Tesla T4 (UUID: GPU-0d1f2e3c)" ;;
esac""",
    "apt-get": 'echo "apt-get $*" >>"$STUB_LOG"',
    "curl": 'echo "curl $*" >>"$STUB_LOG"; echo "deb https://nvidia.github.io/deb /"',
    "gpg": 'echo "gpg $*" >>"$STUB_LOG"; cat >/dev/null',
    "tee": 'echo "tee $*" >>"$STUB_LOG"; cat >/dev/null',
    "sudo": '[ "$1" = -n ] && shift; exec "$@"',
}


def _stubs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, toolkit: bool) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    stubs = dict(STUBS)
    if toolkit:
        stubs["nvidia-ctk"] = 'echo "nvidia-ctk $*" >>"$STUB_LOG"; echo "NVIDIA Container Toolkit CLI version 1.17.8"'
    for name, body in stubs.items():
        path = folder / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    log = tmp_path / "calls.log"
    log.touch()
    monkeypatch.setenv("STUB_LOG", str(log))
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return log


def test_it_waits_for_cloud_init_then_checks_cuda_with_the_image_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _stubs(tmp_path, monkeypatch, toolkit=True)
    shown: list[str] = []
    ui = PlainReporter(quiet=True)
    monkeypatch.setattr(ui, "info", shown.append)
    run_script(LocalMachine(), "bootstrap-nvidia.sh", ["mcr.example/pytorch:2.4"], ui, "nvidia")
    calls = log.read_text().splitlines()
    assert calls[0] == "cloud-init status --wait"  # before the driver, the toolkit or Docker are looked at
    assert "docker run --rm --gpus all mcr.example/pytorch:2.4 nvidia-smi -L" in calls
    assert any("CUDA check in a container passed (GPU 0: Tesla T4" in line for line in shown)


def test_every_apt_run_waits_for_the_lock_held_by_the_first_boot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _stubs(tmp_path, monkeypatch, toolkit=False)  # the toolkit is installed with apt
    run_script(LocalMachine(), "bootstrap-nvidia.sh", ["mcr.example/pytorch:2.4"], PlainReporter(quiet=True), "nvidia")
    apt = [line for line in log.read_text().splitlines() if line.startswith("apt-get ")]
    assert len(apt) == 4 and apt[-1].endswith("install -y -q nvidia-container-toolkit")
    assert all(line.startswith("apt-get -o DPkg::Lock::Timeout=600 ") for line in apt)
