"""Fixtures that bring up real parts: an sshd on 127.0.0.1, the Docker engine, the test images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labctl.machine.ssh import SSHMachine
from labctl.state import LabRecord
from labctl.ui import PlainReporter
from tests.support.docker_engine import hold_engine, start_dockerd, stop_dockerd
from tests.support.sshd import KeyPair, SSHServer, free_port, make_server, sshd_unavailable


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[SSHServer, KeyPair]]:
    """A running sshd accepting one fresh client key; yields (server, client key)."""
    reason = sshd_unavailable()
    if reason:
        pytest.skip(reason)
    server, client = make_server(tmp_path / "sshd")
    server.start()
    try:
        yield server, client
    finally:
        server.stop()


@pytest.fixture
def machine(sshd: tuple[SSHServer, KeyPair]) -> Iterator[SSHMachine]:
    server, client = sshd
    m = SSHMachine(
        server.host, server.port, server.user, client.private_path, server.host_key.public, ui=PlainReporter()
    )
    m.connect()
    try:
        yield m
    finally:
        m.close()


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """The Docker engine (started here if none answers and we are root); skips with the reason otherwise."""
    held = hold_engine()
    proc, reason = start_dockerd()
    if reason:
        held.close()
        pytest.skip(reason)
    import docker

    client = docker.from_env(timeout=600)
    try:
        yield client
    finally:
        client.close()
        stop_dockerd(proc, held)


@pytest.fixture(scope="session")
def test_base_image(docker_client: Any) -> str:
    """The stand-in for the pytorch base image, built once per engine (minutes the first time)."""
    from tests.support.docker_images import BASE_TAG, ensure_test_base, image_exists, missing_base_tools

    if not image_exists(docker_client, BASE_TAG):
        missing = missing_base_tools()
        if missing:
            pytest.skip(f"the test base image is missing and building it needs: {', '.join(missing)}")
    return ensure_test_base(docker_client)


@pytest.fixture(scope="session")
def lab_image(docker_client: Any, test_base_image: str) -> str:
    """labctl's lab image built from templates/Dockerfile FROM the test base; LABCTL_BASE_IMAGE stays set."""
    from tests.support.docker_images import ensure_lab_image

    return ensure_lab_image(docker_client)


def _unused_lab_name(docker_client: Any) -> Iterator[str]:
    import secrets

    from labctl.container import remove_lab

    name = f"t{secrets.token_hex(4)}"
    yield name
    remove_lab(docker_client, name)


@pytest.fixture
def lab_name(docker_client: Any) -> Iterator[str]:
    """A lab name no one else on this Docker engine uses; its container and volume are removed afterwards."""
    yield from _unused_lab_name(docker_client)


@pytest.fixture(scope="module")
def module_lab_name(docker_client: Any) -> Iterator[str]:
    """The same, for a lab that the tests of one module share (each start of Jupyter costs seconds)."""
    yield from _unused_lab_name(docker_client)


@pytest.fixture(scope="session")
def session_lab_name(docker_client: Any) -> Iterator[str]:
    yield from _unused_lab_name(docker_client)


@pytest.fixture(scope="session")
def shared_lab(lab_image: str, session_lab_name: str) -> LabRecord:
    """One lab on this computer for the tests of any module that only look at it, or at most change files in its
    workspace or start processes in it (each start of Jupyter costs seconds); a test that stops, replaces or
    removes a lab, or that needs its workspace as `up` left it, makes its own."""
    from labctl.labhost import prepare_lab

    return prepare_lab(
        LabRecord(name=session_lab_name, target="local", jupyter_port=free_port()), PlainReporter(quiet=True)
    )
