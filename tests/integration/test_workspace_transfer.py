"""The user's workspace copied out of and into a real lab container (labctl's image on the real engine):
byte for byte, verified, without caches, links or labctl's own folders, and only what changed when asked."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from labctl import container as lab
from labctl import workspace as ws
from labctl.errors import NotFound, UsageError
from tests.support.sshd import free_port

pytestmark = pytest.mark.integration

NOTEBOOK = json.dumps({"cells": [{"cell_type": "code", "source": "print('ünï')"}], "nbformat": 4}).encode()


@pytest.fixture(scope="module")
def module_box(lab_image: str, module_lab_name: str, docker_client: Any) -> lab.LabContainer:
    """A lab container from labctl's image, one for the module: each start runs Jupyter in it."""
    spec = lab.ContainerSpec(module_lab_name, lab_image, False, token="0" * 64, port=free_port())
    return lab.LabContainer(lab.start_container(docker_client, spec))


@pytest.fixture
def box(module_box: lab.LabContainer) -> lab.LabContainer:
    """The module's container with an empty workspace (the baseline and the seed marker live there too), seeded the
    way `up` seeds it, with the baseline `up` saves: as a new lab's."""
    module_box.exec(["find", "/workspace", "-mindepth", "1", "-delete"])
    assert module_box.exec(["find", "/workspace", "-mindepth", "1"]).text == ""
    ws.seed_workspace(module_box)
    return module_box


def _put(box: lab.LabContainer, files: dict[str, bytes], links: dict[str, str] | None = None) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time()) + 1
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    assert box.container.put_archive("/workspace", buffer.getvalue())


def _sha_in_container(box: lab.LabContainer, path: str) -> str:
    return box.exec(["sha256sum", "--", f"/workspace/{path}"]).text.split()[0]


def test_pull_copies_the_workspace_byte_for_byte_and_leaves_the_rest(box: lab.LabContainer, tmp_path: Path) -> None:
    mine = {
        "analysis.ipynb": NOTEBOOK,
        "src/pkg/model.py": b"import torch\n",
        "notes with space/ünï.md": "ü".encode() * 1000,
        "data/small.csv": b"a,b\n1,2\n",
        "data/huge.bin": os.urandom(3 << 20),
        "src/pkg/__pycache__/model.cpython-311.pyc": b"\0\0",
        ".ipynb_checkpoints/analysis-checkpoint.ipynb": NOTEBOOK,
        ".cache/torch/hub.bin": b"cache",
        "runs/r1/train.log": b"fetched by labctl fetch",
    }
    _put(box, mine, links={"escape": "/etc", "src/pkg/passwd": "/etc/passwd"})
    seen: list[tuple[int, int]] = []
    result = ws.pull(box, tmp_path / "lab", max_size=1 << 20, progress=lambda d, t: seen.append((d, t)))

    copy = tmp_path / "lab" / "workspace"
    expected = {"analysis.ipynb", "src/pkg/model.py", "notes with space/ünï.md", "data/small.csv", lab.NOTEBOOK}
    assert {f.path for f in result.files} == expected
    for path in expected - {lab.NOTEBOOK}:
        assert (copy / path).read_bytes() == mine[path]
    for path in expected:
        assert hashlib.sha256((copy / path).read_bytes()).hexdigest() == _sha_in_container(box, path)
    local = sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file() or p.is_symlink())
    assert local == sorted(expected)
    reasons = {s.path: s.reason for s in result.skipped}
    assert reasons["data/huge.bin"] == "too large" and reasons["escape"] == "link"
    assert reasons["src/pkg/passwd"] == "link" and reasons["runs"] == "excluded"
    assert reasons["src/pkg/__pycache__"] == reasons[".ipynb_checkpoints"] == reasons[".cache"] == "excluded"
    assert seen and seen[-1][0] == seen[-1][1] == result.bytes

    recorded = json.loads((tmp_path / "lab" / "MANIFEST.json").read_text())
    assert {f["path"] for f in recorded["files"]} == expected
    if shutil.which("sha256sum"):
        check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path / "lab", capture_output=True)
        assert check.returncode == 0, check.stdout


def test_only_what_changed_since_up(box: lab.LabContainer, tmp_path: Path) -> None:
    _put(box, {"mine.ipynb": NOTEBOOK, f"{lab.NOTEBOOK}": b"the user's edit of the tutorial"})
    result = ws.pull(box, tmp_path / "lab", changed_only=True)
    assert sorted(f.path for f in result.files) == sorted([lab.NOTEBOOK, "mine.ipynb"])
    assert result.unchanged == 0

    again = ws.pull(box, tmp_path / "lab", changed_only=True)  # the baseline is still the one from `up`
    assert again.files == [] and sorted(f.path for f in again.already_here) == sorted([lab.NOTEBOOK, "mine.ipynb"])
    _put(box, {"later.py": b"x = 1\n"})
    box.exec(["rm", "-f", str(ws.BASELINE)])  # an older lab without a baseline: the seed marker decides
    box.exec(["touch", "-d", "2000-01-01", f"/workspace/{lab.NOTEBOOK}", "/workspace/mine.ipynb"])
    fallback = ws.pull(box, tmp_path / "lab2", changed_only=True)
    assert [f.path for f in fallback.files] == ["later.py"]


def test_a_copy_cut_short_resumes_with_the_files_not_yet_here(box: lab.LabContainer, tmp_path: Path) -> None:
    _put(box, {"done.bin": b"d" * 5000, "todo/a.py": b"a = 1\n", "todo/b.py": b"b = 2\n"})
    copy = ws.pull(box, tmp_path / "lab", changed_only=True).copy_dir
    (copy / "todo" / "a.py").unlink()  # as if the copy had stopped before it
    again = ws.pull(box, tmp_path / "lab", changed_only=True)
    assert [f.path for f in again.files] == ["todo/a.py"]
    assert {"done.bin", "todo/b.py"} <= {f.path for f in again.already_here}
    assert (copy / "todo" / "a.py").read_bytes() == b"a = 1\n"
    recorded = json.loads((tmp_path / "lab" / "MANIFEST.json").read_text())
    assert {"done.bin", "todo/a.py", "todo/b.py"} <= {f["path"] for f in recorded["files"]}


def test_a_named_path_and_a_missing_one(box: lab.LabContainer, tmp_path: Path) -> None:
    _put(box, {"src/a.py": b"a", "src/sub/b.py": b"b", "other.py": b"o"})
    result = ws.pull(box, tmp_path / "lab", paths=["src", "/workspace/other.py"])
    assert sorted(f.path for f in result.files) == ["other.py", "src/a.py", "src/sub/b.py"]
    with pytest.raises(NotFound):
        ws.pull(box, tmp_path / "lab", paths=["nowhere.py"])
    with pytest.raises(UsageError):
        ws.pull(box, tmp_path / "lab", paths=["../etc"])


def test_a_local_edit_is_moved_aside_not_overwritten(box: lab.LabContainer, tmp_path: Path) -> None:
    _put(box, {"nb.ipynb": b"v1"})
    ws.pull(box, tmp_path / "lab")
    local = tmp_path / "lab" / "workspace" / "nb.ipynb"
    local.write_bytes(b"edited here")
    _put(box, {"nb.ipynb": b"v2 from the lab"})
    result = ws.pull(box, tmp_path / "lab")
    assert local.read_bytes() == b"v2 from the lab"
    assert [p.read_bytes() for p in result.kept_local] == [b"edited here"]
    _put(box, {"nb.ipynb": b"v3"})
    assert ws.pull(box, tmp_path / "lab").kept_local == []  # unchanged since the last pull: just replaced


def test_push_sends_files_and_folders_and_checks_them(box: lab.LabContainer, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "pkg" / "__pycache__").mkdir(parents=True)
    (project / "pkg" / "train.py").write_bytes(b"print('train')\n")
    (project / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (project / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (project / "run.sh").chmod(0o755)
    (project / "secret-link").symlink_to("/etc/passwd")
    single = tmp_path / "data.csv"
    single.write_bytes(os.urandom(5 << 20))
    seen: list[int] = []
    result = ws.push(box, [project, single], "code", progress=lambda d, _t: seen.append(d))

    assert result.dest == "/workspace/code"
    assert set(result.files) == {"code/project/pkg/train.py", "code/project/run.sh", "code/data.csv"}
    for path, sha in result.files.items():
        assert _sha_in_container(box, path) == sha
    assert box.exec(["test", "-x", "/workspace/code/project/run.sh"], check=False).exit_code == 0
    assert not box.exists("/workspace/code/project/secret-link")
    assert not box.exists("/workspace/code/project/pkg/__pycache__")
    assert sorted(Path(p).name for p in result.skipped) == ["__pycache__", "secret-link"]
    assert len(seen) > 1 and seen == sorted(seen)

    # And back: what was pushed comes back equal.
    back = ws.pull(box, tmp_path / "back", paths=["code"])
    assert (back.copy_dir / "code" / "data.csv").read_bytes() == single.read_bytes()


def test_push_refuses_destinations_outside_the_workspace(box: lab.LabContainer, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    for dest in ("../etc", "/etc", ".labctl/tools"):
        with pytest.raises(UsageError):
            ws.push(box, [tmp_path / "f"], dest)
    with pytest.raises(NotFound):
        ws.push(box, [tmp_path / "missing"], "")
