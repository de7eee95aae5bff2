"""A run's directory on the machine is not trusted: links or paths that lead out of where `fetch` unpacks it make
a plain error naming the run, and nothing is written. The archives are crafted in a real container and read
back through Docker's own archive API, as `fetch` reads every run."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labctl.container import LabContainer, UnsafeArchive, archive_entries
from labctl.errors import LabctlError
from labctl.runs import RUNS_DIR, LabRuns

pytestmark = pytest.mark.integration


@pytest.fixture
def box(docker_client: Any, test_base_image: str) -> Iterator[LabContainer]:
    container = docker_client.containers.run(
        test_base_image, ["sleep", "600"], detach=True, name=f"labctl-test-fetch-{time.time_ns()}"
    )
    try:
        yield LabContainer(container)
    finally:
        container.remove(force=True)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        ("ln -s /etc/passwd {run}/metrics.json", "metrics.json"),  # an absolute link
        ("ln -s ../../../../../../etc/shadow {run}/loss_curve.png", "loss_curve.png"),  # a link out of it
        ("ln -s /root {run}/plots && echo x > {run}/ok.txt", "plots"),
    ],
)
def test_a_run_with_links_out_of_it_is_refused_naming_the_run(
    box: LabContainer, tmp_path: Path, make: str, words: str
) -> None:
    run = RUNS_DIR / "r-hostile"
    box.exec(["sh", "-c", f"mkdir -p {run} && echo 1 > {run}/SHA256SUMS && " + make.format(run=run)], workdir="/")
    dest = tmp_path / "results" / "r-hostile"
    with pytest.raises(LabctlError) as refused:
        LabRuns(box).fetch("r-hostile", dest)
    text = refused.value.render()
    assert "Run r-hostile could not be fetched" in text and words in text and "Nothing was written" in text
    assert not dest.exists() and [p.name for p in dest.parent.iterdir()] == []


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    "member",
    [
        (_entry("run/../../outside.txt"), b"x"),
        (_entry("run/abs", tarfile.SYMTYPE, "/etc/passwd"), None),
        (_entry("run/up", tarfile.SYMTYPE, "../../../x"), None),
        (_entry("run/hard", tarfile.LNKTYPE, "/etc/passwd"), None),
    ],
)
def test_crafted_archives_never_write_outside(tmp_path: Path, member: tuple[tarfile.TarInfo, bytes | None]) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchive):
        for tar, entry in archive_entries([_tar((_entry("run", tarfile.DIRTYPE), None), member)], "run", links=True):
            tar.extract(entry, dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]
