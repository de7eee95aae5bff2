"""The workspace transfer's pure parts: path checks, what changed, the fewest archives, safe unpacking,
and the manifest program run here on a real directory."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from labctl import workspace as ws
from labctl.container import EXCLUDED_DIRS
from labctl.errors import LabctlError, UsageError
from labctl.files import template
from labctl.workspace import FileEntry, Manifest, Skipped

TOOL = template("workspace_manifest.py")


def _entry(path: str, data: bytes = b"x", mtime: float = 10.0) -> FileEntry:
    return FileEntry(path, len(data), mtime, hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize(
    ("given", "expected"),
    [("", ""), (".", ""), ("/workspace", ""), ("/workspace/a/b.py", "a/b.py"), ("./a//b/", "a/b"), ("notes", "notes")],
)
def test_workspace_paths(given: str, expected: str) -> None:
    assert ws.workspace_path(given) == expected


@pytest.mark.parametrize("given", ["../x", "a/../../x", "/etc/passwd", "/workspace/../etc", ".labctl/x", "a\0b"])
def test_paths_outside_the_workspace_or_in_labctls_own_folder_are_refused(given: str) -> None:
    with pytest.raises(UsageError):
        ws.workspace_path(given)


def test_changed_since_the_baseline_then_the_marker_then_everything() -> None:
    kept, edited, added = _entry("kept.py", b"1"), _entry("nb.ipynb", b"2"), _entry("new.py", b"3", mtime=30.0)
    baseline = Manifest({"kept.py": kept, "nb.ipynb": _entry("nb.ipynb", b"old")})
    current = Manifest({"kept.py": kept, "nb.ipynb": edited, "new.py": added}, marker_mtime=20.0)
    assert {f.path for f in ws.changed_since(current, baseline)} == {"nb.ipynb", "new.py"}
    assert {f.path for f in ws.changed_since(current, None)} == {"new.py"}
    current.marker_mtime = None
    assert len(ws.changed_since(current, None)) == 3


def test_a_folder_is_fetched_whole_only_when_nothing_unwanted_is_in_it() -> None:
    files = {p: _entry(p) for p in ["a/1", "a/2", "b/1", "b/2", "c/d/1", "c/e/1", "top.txt"]}
    manifest = Manifest(files, skipped=[Skipped("c/e/big.bin", 10**10, "too large")])
    units = ws.transfer_units(["a/1", "a/2", "b/1", "c/d/1", "c/e/1", "top.txt"], manifest)
    assert units == ["a", "b/1", "c/d", "c/e/1", "top.txt"]


def _tar(members: list[tuple[str, bytes | None, str | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                assert data is not None
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _unpacker(tmp_path: Path, wanted: list[FileEntry]) -> ws._Unpacker:
    unpacker = ws._Unpacker(tmp_path / "copy", {f.path: f for f in wanted})
    unpacker.copy_dir.mkdir()
    return unpacker


@pytest.mark.parametrize("name", ["../escape", "/etc/escape", "escape/../../escape", "other"])
def test_unsafe_names_in_the_stream_are_refused(tmp_path: Path, name: str) -> None:
    unpacker = _unpacker(tmp_path, [_entry("escape", b"evil")])
    with pytest.raises(LabctlError, match=r"The lab container sent the entry .*(absolute|'\.\.'|outside escape/)"):
        unpacker.unpack([_tar([(name, b"evil", None)])], "escape")
    assert not (tmp_path / "escape").exists() and not Path("/etc/escape").exists()


def test_links_in_the_stream_are_never_made_or_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    unpacker = _unpacker(tmp_path, [_entry("ln", b""), _entry("ln/file", b"data")])
    stream = _tar([("ln", None, str(outside)), ("ln/file", b"data", None)])
    unpacker.unpack([stream[:100], stream[100:5000], stream[5000:]], "ln")
    assert not (unpacker.copy_dir / "ln").is_symlink()
    assert (unpacker.copy_dir / "ln" / "file").read_bytes() == b"data"
    assert list(outside.iterdir()) == []


def test_a_local_link_in_the_way_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    unpacker = _unpacker(tmp_path, [_entry("sub/file", b"data")])
    (unpacker.copy_dir / "sub").symlink_to(outside)
    with pytest.raises(LabctlError, match="is a link"):
        unpacker.unpack([_tar([("sub/file", b"data", None)])], "sub")
    assert list(outside.iterdir()) == []


def test_a_file_that_does_not_match_its_checksum_never_takes_its_place(tmp_path: Path) -> None:
    unpacker = _unpacker(tmp_path, [_entry("nb.ipynb", b"what the manifest saw")])
    unpacker.unpack([_tar([("nb.ipynb", b"something else", None)])], "nb.ipynb")
    assert unpacker.done == {}
    assert list(unpacker.copy_dir.iterdir()) == []


def test_the_manifest_program_lists_skips_and_hashes(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    (root / "src" / "__pycache__").mkdir(parents=True)
    (root / "runs" / "r1").mkdir(parents=True)
    (root / "src" / "m.py").write_bytes(b"print(1)\n")
    (root / "src" / "__pycache__" / "m.pyc").write_bytes(b"\0")
    (root / "runs" / "r1" / "out").write_bytes(b"r")
    (root / "big.bin").write_bytes(b"\0" * 2048)
    (root / "link").symlink_to("/etc/passwd")
    (root / ".labctl-seeded").touch()
    excluded = [*(f"--exclude-dir={d}" for d in EXCLUDED_DIRS), *(f"--exclude-top={t}" for t in ws.EXCLUDED_TOP)]
    args = ["--root", str(root), "--max-size", "1024", f"--marker={ws.SEED_MARKER}", *excluded]
    out = subprocess.run([sys.executable, str(TOOL), *args], check=True, capture_output=True).stdout
    data = json.loads(out)
    assert [f["path"] for f in data["files"]] == ["src/m.py"]
    assert data["files"][0]["sha256"] == hashlib.sha256(b"print(1)\n").hexdigest()
    reasons = {s["path"]: s["reason"] for s in data["skipped"]}
    assert reasons == {
        ".labctl-seeded": "excluded",
        "big.bin": "too large",
        "link": "link",
        "runs": "excluded",
        "src/__pycache__": "excluded",
    }
    assert data["marker_mtime"] == os.lstat(root / ".labctl-seeded").st_mtime
    named_run = subprocess.run([sys.executable, str(TOOL), *args, "--under=big.bin"], capture_output=True)
    named = json.loads(named_run.stdout)
    assert [f["path"] for f in named["files"]] == ["big.bin"]  # a path the user names is taken whatever its size


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs GNU sha256sum")
def test_the_sums_file_is_what_sha256sum_checks(tmp_path: Path) -> None:
    names = ["plain.txt", "with space.ipynb", "back\\slash", "new\nline", "ünï.py"]
    (tmp_path / "workspace").mkdir()
    lines = ""
    for name in names:
        data = name.encode() * 3
        (tmp_path / "workspace" / name).write_bytes(data)
        lines += ws._sums_line(hashlib.sha256(data).hexdigest(), name)
    (tmp_path / "SHA256SUMS").write_text(lines)
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    (tmp_path / "workspace" / "plain.txt").write_bytes(b"changed")
    again = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=tmp_path, capture_output=True)
    assert again.returncode == 1


def test_progress_lines_for_large_copies_only() -> None:
    now = [0.0]
    said: list[str] = []
    lines = ws.progress_lines(said.append, clock=lambda: now[0], min_total=100, every_s=2.0)
    lines(10, 50)  # small: silent
    assert said == []
    for t, done in ((1.0, 100), (2.5, 250), (3.0, 300), (4.0, 1000)):
        now[0] = t
        lines(done, 1000)
    assert len(said) == 2  # one after 2 s, and the last one
    assert said[0] == "  Copied 250 B of 1.0 kB (25%, 100 B/s, about 8s left)"
    assert said[1].startswith("  Copied 1.0 kB of 1.0 kB (100%")
    assert ws.human_bytes(3_500_000_000) == "3.5 GB"
