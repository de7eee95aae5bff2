"""Docker images for tests, built from scratch because no registry is reachable where the tests run.

The test base stands in for the ``pytorch/pytorch`` runtime image: Debian bookworm from ``debootstrap`` plus
python3, pip, the host's CA bundle (so pip inside builds trusts whatever the host trusts), a CPU build of torch
and the torchvision of that release (the notebook imports it; see ``torchvision_cpu.py``). Building it takes
minutes, so it is built once and found again by its tag on later runs; a file lock keeps parallel test processes
from building it twice. The same holds for the bare Debian that lacks only Docker, where the Docker bootstrap
installs it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Bump the version when the recipe below changes, so every machine rebuilds.
BASE_TAG = "labctl-test/base:bookworm-torch2.13-vision0.28-v2"
ROOTFS_TAG = "labctl-test/rootfs:bookworm-v1"
DOCKER_DEPS_TAG = "labctl-test/rootfs-docker-deps:bookworm-v1"
TORCH_REQUIREMENT = "torch==2.13.0+cpu"
TORCHVISION_REQUIREMENT = "torchvision==0.28.0"  # the release made for torch 2.13
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
DEBIAN_MIRROR = os.environ.get("LABCTL_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
_LOCK = Path(tempfile.gettempdir()) / "labctl-test-images.lock"

_BASE_DOCKERFILE = """\
FROM {rootfs}
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \\
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \\
    PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    PIP_DEFAULT_TIMEOUT=120
COPY wheels/ torchvision_cpu.py /tmp/wheels/
RUN python -m pip install --no-cache-dir /tmp/wheels/*.whl \\
    && python /tmp/wheels/torchvision_cpu.py && rm -rf /tmp/wheels
WORKDIR /workspace
"""

# The bare Debian with everything docker.io needs, and no Docker: docker.io is installed and purged again, which
# leaves its hundred dependencies (iptables, containerd, runc, git, ...) in place and no docker command.
_DOCKER_DEPS_DOCKERFILE = """\
FROM {rootfs}
RUN export DEBIAN_FRONTEND=noninteractive && apt-get update -q \\
    && apt-get install -y -q docker.io >/dev/null && apt-get purge -y -q docker.io >/dev/null \\
    && apt-get clean && rm -rf /var/lib/apt/lists/* && ! command -v docker
"""

Log = Callable[[str], None]


def _say(message: str) -> None:
    print(f"[test images] {message}", file=sys.stderr, flush=True)


@contextmanager
def _build_lock() -> Iterator[None]:
    with open(_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def image_exists(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def missing_base_tools() -> list[str]:
    """What building the base needs from the host; tests skip with this list when it is not empty."""
    missing = [tool for tool in ("debootstrap",) if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root (debootstrap needs it)")
    if not HOST_CA_BUNDLE.is_file():
        missing.append(str(HOST_CA_BUNDLE))
    return missing


def _rootfs(client: Any, log: Log) -> None:
    if image_exists(client, ROOTFS_TAG):
        return
    with tempfile.TemporaryDirectory(prefix="labctl-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        log(f"debootstrap bookworm from {DEBIAN_MIRROR} (about a minute)")
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-pip,python-is-python3,ca-certificates",
                "bookworm",
                str(root),
                DEBIAN_MIRROR,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        # The host's bundle, so that TLS-intercepting proxies the host trusts are trusted inside too.
        shutil.copyfile(HOST_CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
        # Like the pytorch image, pip may install into the system Python.
        for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
        tar = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(tar), "."], check=True)
        log(f"importing the root file system as {ROOTFS_TAG}")
        repository, tag = ROOTFS_TAG.split(":")
        client.api.import_image(src=str(tar), repository=repository, tag=tag)


def _wheel(dest: Path, requirement: str) -> Path:
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest), requirement]
    if subprocess.run(command).returncode != 0:
        # CPU builds ("+cpu") live on PyTorch's own index, not on PyPI; a local wheel directory may also hold one.
        subprocess.run([*command, "--extra-index-url", TORCH_CPU_INDEX], check=True)
    wheels = sorted(dest.glob(f"{requirement.partition('==')[0]}-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download {requirement} produced no wheel")
    return wheels[0]


def ensure_test_base(client: Any, log: Log = _say) -> str:
    """The tag of the test base image, building it first if this engine does not have it."""
    if image_exists(client, BASE_TAG):
        return BASE_TAG
    with _build_lock():
        if image_exists(client, BASE_TAG):
            return BASE_TAG
        _rootfs(client, log)
        with tempfile.TemporaryDirectory(prefix="labctl-base-") as tmp:
            context = Path(tmp)
            (context / "wheels").mkdir()
            for requirement in (TORCH_REQUIREMENT, TORCHVISION_REQUIREMENT):
                log(f"fetching {requirement}")
                _wheel(context / "wheels", requirement)
            shutil.copyfile(Path(__file__).with_name("torchvision_cpu.py"), context / "torchvision_cpu.py")
            _build(client, BASE_TAG, _BASE_DOCKERFILE.format(rootfs=ROOTFS_TAG), context, log)
    return BASE_TAG


def _build(client: Any, tag: str, dockerfile: str, context: Path, log: Log) -> None:
    (context / "Dockerfile").write_text(dockerfile)
    log(f"building {tag}")
    for chunk in client.api.build(path=str(context), tag=tag, rm=True, forcerm=True, decode=True):
        if "error" in chunk:
            raise RuntimeError(f"building {tag} failed: {chunk['error']}")
        text = str(chunk.get("stream", "")).rstrip()
        if text.startswith(("Step ", "torchvision ")):
            log(text)


def ensure_docker_deps_host(client: Any, log: Log = _say) -> str:
    """The tag of a bare Debian that lacks only Docker itself, building it first if this engine does not have it.

    Installing docker.io's dependencies is half a minute of dpkg that tests nothing of labctl's; the bootstrap
    script still finds Docker missing there and installs docker.io from the distribution with apt, for real.
    """
    if image_exists(client, DOCKER_DEPS_TAG):
        return DOCKER_DEPS_TAG
    with _build_lock():
        if not image_exists(client, DOCKER_DEPS_TAG):
            _rootfs(client, log)
            with tempfile.TemporaryDirectory(prefix="labctl-docker-deps-") as tmp:
                _build(client, DOCKER_DEPS_TAG, _DOCKER_DEPS_DOCKERFILE.format(rootfs=ROOTFS_TAG), Path(tmp), log)
    return DOCKER_DEPS_TAG


def ensure_lab_image(client: Any, log: Log = _say) -> str:
    """labctl's real lab image (templates/Dockerfile), built FROM the test base through labctl's own code.

    ``LABCTL_BASE_IMAGE`` must stay set to the test base for as long as labctl should find this image again,
    because the base is part of the image's tag.
    """
    from labctl.container import BASE_IMAGE_ENV, build_context, ensure_image
    from labctl.ui import PlainReporter

    os.environ[BASE_IMAGE_ENV] = ensure_test_base(client, log)
    _, tag = build_context()
    if image_exists(client, tag):
        return tag
    with _build_lock():
        log(f"building the lab image {tag} (pip installs JupyterLab; a few minutes)")
        return ensure_image(client, PlainReporter(sys.stderr), None)


if __name__ == "__main__":  # build by hand: python -m tests.support.docker_images
    import docker

    print(ensure_lab_image(docker.from_env(timeout=600)))
