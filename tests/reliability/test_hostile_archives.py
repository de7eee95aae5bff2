"""A run's results come back as a tar made on the lab machine; a machine that is not what it should be can send
any tar at all. Each hostile one is refused with one paragraph naming the entry, nothing lands outside the
results directory, and a copy fetched earlier stays as it was.

The tar is served by a container object whose ``get_archive`` answers with real tar bytes, exactly what the
Docker SDK hands back; everything from there on (staging, extraction, checksums, the swap) is labctl's own.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from labctl.container import LabContainer
from labctl.errors import LabctlError
from labctl.runs import LabRuns

RUN = "20260101-000000-abcd"
METRICS = b'{"accuracy": 0.5}\n'


class TarContainer:
    """The two things fetching asks of a lab container: its name and a tar of a path in it."""

    name = "labctl-lab"

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.asked: list[str] = []

    def get_archive(self, path: str, **_: Any) -> tuple[Iterator[bytes], dict[str, Any]]:
        self.asked.append(path)
        return iter([self.data[i : i + 4096] for i in range(0, len(self.data), 4096)]), {"name": Path(path).name}


Member = tuple[tarfile.TarInfo, bytes | None]


def _file(name: str, data: bytes, mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def _link(name: str, target: str, kind: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _special(name: str, kind: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info, None


def _dir(name: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info, None


def good_members(extra_sums: str = "") -> list[Member]:
    sums = f"{hashlib.sha256(METRICS).hexdigest()}  metrics.json\n{extra_sums}"
    return [_dir(RUN), _file(f"{RUN}/metrics.json", METRICS), _file(f"{RUN}/SHA256SUMS", sums.encode())]


def tar_of(members: list[Member]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


OUTSIDE_SUMS = f"{hashlib.sha256(b'secret').hexdigest()}  ../../outside/secret.txt\n"

# id -> (the archive, given the directory outside the results; a word its refusal must name)
HOSTILE: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "parent-traversal": (lambda o: tar_of([*good_members(), _file(f"{RUN}/../../escape.txt", b"x")]), "escape.txt"),
    "traversal-in-the-middle": (
        lambda o: tar_of([*good_members(), _file(f"{RUN}/a/../../../x.txt", b"x")]),
        "x.txt",
    ),
    "absolute-path": (lambda o: tar_of([*good_members(), _file(f"{o}/abs.txt", b"x")]), "abs.txt"),
    "symlink-absolute": (
        lambda o: tar_of([*good_members(), _link(f"{RUN}/passwd", "/etc/passwd", tarfile.SYMTYPE)]),
        "passwd",
    ),
    "symlink-out-of-results": (
        lambda o: tar_of([*good_members(), _link(f"{RUN}/up", "../../..", tarfile.SYMTYPE)]),
        f"{RUN}/up",
    ),
    "symlink-then-write-through-it": (
        lambda o: tar_of(
            [*good_members(), _link(f"{RUN}/d", str(o), tarfile.SYMTYPE), _file(f"{RUN}/d/planted.txt", b"x")]
        ),
        f"{RUN}/d",
    ),
    "hardlink-absolute": (
        lambda o: tar_of([*good_members(), _link(f"{RUN}/h", "/etc/passwd", tarfile.LNKTYPE)]),
        f"{RUN}/h",
    ),
    "hardlink-out-of-results": (
        lambda o: tar_of([*good_members(), _link(f"{RUN}/h", "../outside/secret.txt", tarfile.LNKTYPE)]),
        f"{RUN}/h",
    ),
    "device-node": (lambda o: tar_of([*good_members(), _special(f"{RUN}/null", tarfile.CHRTYPE)]), f"{RUN}/null"),
    "fifo": (lambda o: tar_of([*good_members(), _special(f"{RUN}/pipe", tarfile.FIFOTYPE)]), f"{RUN}/pipe"),
    "another-top-directory": (lambda o: tar_of([*good_members(), _file("other-run/x.txt", b"x")]), "other-run"),
    "no-run-directory": (lambda o: tar_of([_file("something/else.txt", b"x")]), RUN),
    "run-is-a-file": (lambda o: tar_of([_file(RUN, b"x")]), RUN),
    "not-a-tar": (lambda o: b"this is not a tar archive" * 40, RUN),
    "checksums-point-outside": (lambda o: tar_of(good_members(OUTSIDE_SUMS)), "../../outside/secret.txt"),
    "checksums-malformed": (lambda o: tar_of(good_members("justonetoken\n")), "justonetoken"),
}


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    """(results root, a directory beside it holding a file no fetch may touch)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    results = tmp_path / "results" / "lab"
    results.mkdir(parents=True)
    return results, outside


def fetch(container: TarContainer, dest: Path) -> int:
    """What `labctl fetch` does with the lab container's answer, through labctl's own container and run layers."""
    return LabRuns(LabContainer(container)).fetch(RUN, dest)  # type: ignore[arg-type]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p): (p.read_bytes() if p.is_file() else b"") for p in sorted(root.rglob("*"))}


def test_a_good_archive_is_fetched_and_verified(places: tuple[Path, Path]) -> None:
    results, _ = places
    count = fetch(TarContainer(tar_of(good_members())), results / RUN)
    assert count == 1 and (results / RUN / "metrics.json").read_bytes() == METRICS


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_archive_is_refused_and_writes_nothing_outside(case: str, places: tuple[Path, Path]) -> None:
    results, outside = places
    root = results.parent.parent
    make, word = HOSTILE[case]
    before = _tree(root)
    with pytest.raises(LabctlError) as caught:
        fetch(TarContainer(make(outside)), results / RUN)
    error = caught.value
    text = error.render()
    assert error.exit_code == 1, text
    assert word in text, text
    assert error.hint, f"no way out given: {text}"
    assert _tree(root) == before, "the fetch changed files"


@pytest.mark.parametrize("case", ["parent-traversal", "symlink-absolute", "checksums-point-outside"])
def test_a_hostile_refetch_keeps_the_earlier_good_copy(case: str, places: tuple[Path, Path]) -> None:
    results, outside = places
    fetch(TarContainer(tar_of(good_members())), results / RUN)
    kept = _tree(results)
    with pytest.raises(LabctlError):
        fetch(TarContainer(HOSTILE[case][0](outside)), results / RUN)
    assert _tree(results) == kept
