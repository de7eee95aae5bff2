"""The lab image's build context: its tag follows its contents and the base image, nothing else."""

from __future__ import annotations

import io
import tarfile

import pytest

from labctl import container as lab


def test_context_holds_the_dockerfile_and_the_lab() -> None:
    data, tag = lab.build_context()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
    assert "Dockerfile" in names
    assert "lab/cifarlab/__init__.py" in names
    assert not [n for n in names if "__pycache__" in n]
    assert tag.startswith(f"{lab.IMAGE_REPO}:") and len(tag.split(":")[1]) == 16


def test_tag_is_stable_and_follows_the_base(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(lab.BASE_IMAGE_ENV, raising=False)
    first = lab.build_context()
    assert lab.build_context() == first
    monkeypatch.setenv(lab.BASE_IMAGE_ENV, "example/base:1")
    assert lab.build_context()[1] != first[1]


def test_dockerfile_pins_a_pytorch_base_and_sets_pythonpath() -> None:
    from labctl.files import template

    deps = template("Dockerfile.deps").read_text()
    assert "ARG BASE_IMAGE=pytorch/pytorch:" in deps and ":latest" not in deps and "COPY" not in deps
    text = template("Dockerfile").read_text()
    assert "FROM ${DEPS_IMAGE}" in text and "pip install" not in text
    assert "PYTHONPATH=/opt/labctl/lab" in text
    assert "COPY lab/ /opt/labctl/lab/" in text


def test_names_follow_the_lab() -> None:
    assert lab.container_name("cifar-gpu") == "labctl-cifar-gpu"
    assert lab.volume_name("cifar-gpu") == "labctl-cifar-gpu-workspace"


def test_dockerfile_default_base_is_the_one_cloud_init_prepulls(monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    from labctl.container import DEFAULT_BASE_IMAGE, effective_base_image
    from labctl.files import template

    monkeypatch.delenv("LABCTL_BASE_IMAGE", raising=False)
    monkeypatch.setenv("LABCTL_CONFIG", "/nonexistent/labctl-config.toml")
    match = re.search(r"^ARG BASE_IMAGE=(\S+)$", template("Dockerfile.deps").read_text(), re.M)
    assert match and match.group(1) == DEFAULT_BASE_IMAGE
    assert effective_base_image() == DEFAULT_BASE_IMAGE
    monkeypatch.setenv("LABCTL_BASE_IMAGE", "registry.example/pytorch:custom")
    assert effective_base_image() == "registry.example/pytorch:custom"
