"""The boot path on a real Docker engine: the prewarm script from the cloud-init document builds the dependency
image, labctl (over a real SSH connection) waits for it and then builds only the thin lab image FROM it."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from labctl import container as lab
from labctl.keys import generate_ed25519, normalize
from labctl.labhost import await_prewarm
from labctl.machine.ssh import SSHMachine
from labctl.targets.azure.provision import render_cloud_init
from labctl.ui import PlainReporter
from tests.support.boot_path import boot_env, run_boot_path

pytestmark = pytest.mark.integration
CACHE_KEEPER = "labctl-test/prewarm-deps:cache"


@pytest.fixture
def fresh_base(docker_client: Any, test_base_image: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The test base under a tag of its own, so the dependency image's tag is new: nothing of it exists yet."""
    ref = f"labctl-test/prewarm-base:{secrets.token_hex(4)}"
    repository, tag = ref.split(":")
    docker_client.images.get(test_base_image).tag(repository, tag)
    monkeypatch.setenv(lab.BASE_IMAGE_ENV, ref)
    yield ref
    deps = lab.deps_tag(ref)
    if lab.has_image(docker_client, deps):  # kept under one tag: the next run's build finds its layers cached
        docker_client.images.get(deps).tag(*CACHE_KEEPER.split(":"))
    for made in (lab.build_context()[1], deps, ref):
        if lab.has_image(docker_client, made):
            docker_client.images.remove(made)


def test_boot_time_prewarm_builds_deps_and_up_builds_only_the_thin_image(
    fresh_base: str, docker_client: Any, machine: SSHMachine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deps = lab.deps_tag(fresh_base)
    assert not lab.has_image(docker_client, deps)
    host = generate_ed25519("h")
    doc = yaml.safe_load(render_cloud_init(host.private_openssh, normalize(host.public_line), "lab", fresh_base))
    root = tmp_path / "var-lib-labctl"
    monkeypatch.setenv("LABCTL_PREWARM_DIR", str(root))
    monkeypatch.setenv("LABCTL_PREWARM_POLL", "0.2")

    run_boot_path(doc, root, boot_env(root))  # in the background, as cloud-init starts it
    out = io.StringIO()
    ui = PlainReporter(out)
    assert await_prewarm(machine, ui) == "done", (root / "prewarm.log").read_text()
    log = (root / "prewarm.log").read_text()
    assert f"base image {fresh_base} is present" in log and "pulling" not in log
    deps_id = docker_client.images.get(deps).id

    tag = lab.ensure_image(machine.docker(), ui)
    text = out.getvalue()
    assert f"Dependency image {deps} is ready" in text
    assert "Building the dependency image" not in text and f"Building the lab image {tag} FROM {deps}" in text
    assert docker_client.images.get(deps).id == deps_id  # not built again
    thin = docker_client.images.get(tag).attrs
    deps_layers = docker_client.images.get(deps).attrs["RootFS"]["Layers"]
    assert thin["RootFS"]["Layers"][: len(deps_layers)] == deps_layers
    assert "PYTHONPATH=/opt/labctl/lab" in thin["Config"]["Env"]
    assert lab.ensure_image(docker_client, PlainReporter(io.StringIO())) == tag  # found again by its tag
