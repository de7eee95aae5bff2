"""Shared fixtures: every test gets its own labctl state directory, never the user's."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("labctl-state")
    monkeypatch.setenv("LABCTL_STATE_DIR", str(state))
    yield state


@pytest.fixture(scope="session")
def python_image() -> str:
    """A small Debian image with Python, built from a debootstrap rootfs once and reused (no registry here)."""
    import shutil
    import subprocess
    import tempfile

    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine answers ({exc})")
    tag = "labctl-test-python:bookworm"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        pytest.skip("building the test image needs root and debootstrap")
    with tempfile.TemporaryDirectory(prefix="labctl-rootfs-") as root:
        subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3", "bookworm", root],
            check=True,
            capture_output=True,
        )
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", tag], stdin=tar.stdout, check=True, capture_output=True)
        tar.wait()
    return tag
