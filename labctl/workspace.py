"""The user's own work in the lab container's /workspace: what is there, what changed, and copies both ways.

A manifest (path, size, mtime, sha256 of every file) is computed inside the container by
``workspace_manifest.py``, run there as an argument list. Pulling copies the chosen files out through the docker
SDK's ``get_archive`` as tar streams, unpacks them without ever leaving the destination (no ``..``, no absolute
names, no links), checks every file against the manifest's checksum before it takes its place, and leaves a
``MANIFEST.json`` and a ``SHA256SUMS`` (``sha256sum -c`` reads it) beside the copy. Pushing sends local files
with ``put_archive`` and checks them with a manifest computed in the container afterwards.

What changed since ``up`` is read against the baseline manifest ``up`` saves in the container (on the workspace
volume, so it outlives a replaced container); without one, against the mtime of the seed marker.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol

from labctl.errors import LabctlError, NotFound, UsageError
from labctl.files import without_links, write_private

WORKSPACE = PurePosixPath("/workspace")
LABCTL_DIR = WORKSPACE / ".labctl"  # labctl's own: lab code, uploaded data, this tool
TOOL = LABCTL_DIR / "workspace_manifest.py"
BASELINE = LABCTL_DIR / "baseline-manifest.json"
SEED_MARKER = ".labctl-seeded"
DEFAULT_MAX_FILE_MB = 200
MB = 1 << 20
# Caches and checkpoints anywhere; labctl's own directories (runs are fetched with 'labctl fetch') at the top.
EXCLUDED_DIRS = (".cache", "__pycache__", ".ipynb_checkpoints", ".Trash-0", ".pytest_cache")
EXCLUDED_TOP = (".labctl", "runs", SEED_MARKER)
MANIFEST_NAME = "MANIFEST.json"
SUMS_NAME = "SHA256SUMS"
COPY_DIR = "workspace"

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


class Container(Protocol):
    """The part of ``docker.models.containers.Container`` this module uses."""

    name: str

    def exec_run(self, cmd: Any, **kwargs: Any) -> Any: ...

    def put_archive(self, path: str, data: Any) -> bool: ...

    def get_archive(self, path: str, **kwargs: Any) -> tuple[Iterable[bytes], dict[str, Any]]: ...


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to /workspace, '/'-separated
    size: int
    mtime: float
    sha256: str


@dataclass(frozen=True)
class Skipped:
    path: str
    size: int
    reason: str  # too large | excluded | link | special


@dataclass
class Manifest:
    files: dict[str, FileEntry]
    skipped: list[Skipped] = field(default_factory=list)
    marker_mtime: float | None = None
    max_size: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        files = {
            str(f["path"]): FileEntry(str(f["path"]), int(f["size"]), float(f["mtime"]), str(f["sha256"]))
            for f in data["files"]
        }
        skipped = [Skipped(str(s["path"]), int(s["size"]), str(s["reason"])) for s in data.get("skipped", [])]
        marker = data.get("marker_mtime")
        return cls(files, skipped, float(marker) if marker is not None else None, int(data.get("max_size") or 0))


# ---------------------------------------------------------------------------------------------- paths


def workspace_path(text: str, *, allow_root: bool = True) -> str:
    """A path the user named, relative to /workspace ('' for the whole); UsageError if it leaves /workspace."""
    if "\0" in text:
        raise UsageError("A path cannot contain a NUL character.")
    path = PurePosixPath(text)
    if path.is_absolute():
        try:
            path = path.relative_to(WORKSPACE)
        except ValueError:
            raise UsageError(
                f"{text} is outside the lab's workspace.", hint=f"Name a path in {WORKSPACE} or relative to it."
            ) from None
    parts = [p for p in path.parts if p != "."]
    if ".." in parts:
        raise UsageError(f"{text} leaves the lab's workspace ('..').", hint="Name a path inside it.")
    if not parts and not allow_root:
        raise UsageError("Name a folder inside the workspace, or leave --to out for the workspace itself.")
    if parts and parts[0] == LABCTL_DIR.name:
        raise UsageError(f"{text} is labctl's own folder in the workspace.", hint="Name another path.")
    return "/".join(parts)


def _safe_member_path(name: str) -> PurePosixPath | None:
    """A tar member's name as a relative path, or None if it is absolute, climbs with '..' or is empty."""
    if not name or "\0" in name or name.startswith("/"):
        return None
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if not parts or ".." in parts:
        return None
    return PurePosixPath(*parts)


# ---------------------------------------------------------------------------------------------- manifest


def _exec(container: Container, argv: list[str]) -> tuple[int, bytes, bytes]:
    result = container.exec_run(argv, stdout=True, stderr=True, demux=True)
    out, err = result.output if isinstance(result.output, tuple) else (result.output, b"")
    code = result.exit_code if result.exit_code is not None else -1
    return int(code), bytes(out or b""), bytes(err or b"")


def install_tool(container: Container) -> None:
    """Copy the manifest program into labctl's folder in the workspace (a few kB; every time, so never stale)."""
    source = Path(__file__).with_name("workspace_manifest.py").read_bytes()
    code, _, err = _exec(container, ["mkdir", "-p", str(LABCTL_DIR)])
    if code != 0:
        raise LabctlError(f"Could not make {LABCTL_DIR} in the lab container: {err.decode(errors='replace')[:300]}")
    container.put_archive(str(LABCTL_DIR), _tar_bytes({TOOL.name: source}))


def _run_tool(container: Container, args: list[str]) -> bytes:
    for python in ("python3", "python"):
        code, out, err = _exec(container, [python, str(TOOL), "--root", str(WORKSPACE), *args])
        if code in (126, 127) and not out:
            continue  # this interpreter name does not exist in the image
        if code != 0:
            raise LabctlError(
                f"Listing the workspace in the lab container failed (exit {code}): "
                f"{err.decode(errors='replace').strip()[-400:]}",
                hint="Check the lab with 'labctl status'; 'labctl up' repairs a broken container.",
            )
        return out
    raise LabctlError("The lab container has no python3 or python.", hint="Use an image with Python installed.")


def _tool_args(max_size: int, under: list[str] | None, *, exclude: bool = True) -> list[str]:
    args = ["--max-size", str(max_size), "--marker", SEED_MARKER]
    if exclude:
        args += [f"--exclude-dir={name}" for name in EXCLUDED_DIRS]
        args += [f"--exclude-top={name}" for name in EXCLUDED_TOP]
    else:
        args.append("--no-exclude")
    for path in under or []:
        args.append(f"--under={path}")
    return args


def compute_manifest(
    container: Container,
    *,
    max_size: int = DEFAULT_MAX_FILE_MB * MB,
    under: list[str] | None = None,
    exclude: bool = True,
) -> Manifest:
    """The workspace's manifest (or of the paths ``under`` it), computed in the container."""
    install_tool(container)
    return Manifest.from_json(json.loads(_run_tool(container, _tool_args(max_size, under, exclude=exclude))))


def save_baseline(container: Container, *, max_size: int = DEFAULT_MAX_FILE_MB * MB) -> None:
    """Record what the workspace holds now (at ``up``), so later pulls can take only what changed since."""
    install_tool(container)
    _run_tool(container, [*_tool_args(max_size, None), "--write", str(BASELINE)])


def load_baseline(container: Container) -> Manifest | None:
    code, out, _ = _exec(container, ["cat", str(BASELINE)])
    if code != 0:
        return None
    try:
        return Manifest.from_json(json.loads(out))
    except (ValueError, KeyError, TypeError):
        return None  # a damaged baseline: fall back to the seed marker rather than fail a `down`


def changed_since(current: Manifest, baseline: Manifest | None) -> list[FileEntry]:
    """The files the user added or changed: against the baseline, else newer than the seed marker, else all."""
    if baseline is not None:
        return [f for p, f in current.files.items() if p not in baseline.files or baseline.files[p].sha256 != f.sha256]
    if current.marker_mtime is not None:
        return [f for f in current.files.values() if f.mtime > current.marker_mtime]
    return list(current.files.values())


def transfer_units(selected: Iterable[str], manifest: Manifest) -> list[str]:
    """The fewest paths to ask ``get_archive`` for: a folder when all it holds is wanted, else its parts.

    Everything the manifest knows (skipped entries too: large files, links, caches) counts, so a folder is only
    fetched whole when nothing unwanted would come with it.
    """
    wanted = set(selected)
    unwanted: set[str] = set()
    for entry in [*manifest.files, *(s.path for s in manifest.skipped)]:
        if entry not in wanted:
            unwanted.add(entry)
    blocked = {str(parent) for path in unwanted for parent in PurePosixPath(path).parents if str(parent) != "."}
    units: set[str] = set()
    for path in wanted:
        unit = path
        for parent in PurePosixPath(path).parents:
            if str(parent) == "." or str(parent) in blocked:
                break
            unit = str(parent)
        units.add(unit)
    return sorted(units)


# ---------------------------------------------------------------------------------------------- tar helpers


def _tar_bytes(files: dict[str, bytes], mode: int = 0o644) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class _ChunkReader(io.RawIOBase):
    """A file-like view of the chunks ``get_archive`` yields, so the tar is read as it arrives."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            try:
                self._left = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._left))
        buffer[:size] = self._left[:size]
        self._left = self._left[size:]
        return size


# ---------------------------------------------------------------------------------------------- pull


@dataclass
class PullResult:
    dest: Path  # holds workspace/, MANIFEST.json and SHA256SUMS
    files: list[FileEntry]  # copied and verified this time
    skipped: list[Skipped]  # left in the container, with the reason
    kept_local: list[Path] = field(default_factory=list)  # local edits moved aside instead of overwritten
    changed_only: bool = False
    unchanged: int = 0  # files the workspace holds that were not copied because they did not change since up

    @property
    def copy_dir(self) -> Path:
        return self.dest / COPY_DIR

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "dest": str(self.dest),
            "workspace": str(self.copy_dir),
            "manifest": str(self.dest / MANIFEST_NAME),
            "files": [asdict(f) for f in self.files],
            "bytes": self.bytes,
            "skipped": [asdict(s) for s in self.skipped],
            "kept_local": [str(p) for p in self.kept_local],
            "changed_only": self.changed_only,
            "unchanged": self.unchanged,
        }


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(MB), b""):
            digest.update(block)
    return digest.hexdigest()


class _Unpacker:
    """Writes the wanted files of tar streams under ``copy_dir``; a file takes its place only once its sha256
    matches the manifest, so an interrupted or corrupted copy never looks like a good one."""

    def __init__(
        self, copy_dir: Path, previous: dict[str, str], progress: Progress | None, total: int, root: Path | None = None
    ) -> None:
        self.copy_dir = copy_dir
        self.root = root or copy_dir  # no link may lie between it and a file written (see files.without_links)
        self.previous = previous  # sha256 of each path as the last pull left it
        self.progress = progress
        self.total = total
        self.wanted: dict[str, FileEntry] = {}
        self.done: dict[str, FileEntry] = {}
        self.kept: list[Path] = []
        self.bytes_done = 0

    def unpack(self, chunks: Iterable[bytes], base: PurePosixPath) -> None:
        """One ``get_archive`` stream of a path whose parent, relative to /workspace, is ``base``."""
        stream = io.BufferedReader(_ChunkReader(chunks), MB)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                rel = _safe_member_path(member.name)
                if rel is None:
                    raise LabctlError(
                        f"The lab container sent the unsafe path {member.name!r}; nothing was written outside.",
                        hint="Check what runs in the lab container ('labctl status').",
                    )
                path = (base / rel).as_posix() if base.parts else rel.as_posix()
                if not member.isfile() or path not in self.wanted or path in self.done:
                    continue  # folders are made as needed; links, devices and files not asked for are never made
                source = tar.extractfile(member)
                if source is not None:
                    self._write(path, source, executable=bool(member.mode & 0o111))

    def _target(self, path: str) -> Path:
        """The local path of ``path``, its folders made; refuses a link on the way, or a file or folder in it."""
        target = without_links(self.root, self.copy_dir / path)
        target.parent.mkdir(parents=True, exist_ok=True)  # a file in the way: an OSError that pull() explains
        if target.is_dir():
            raise LabctlError(f"{target} is a folder where the file {path} goes.", hint="Move it away and pull again.")
        return target

    def _write(self, path: str, source: IO[bytes], *, executable: bool) -> None:
        entry = self.wanted[path]
        target = self._target(path)
        part = target.with_name(f".{target.name}.labctl-part")
        part.unlink(missing_ok=True)
        digest = hashlib.sha256()
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as out:
            for block in iter(lambda: source.read(MB), b""):
                digest.update(block)
                out.write(block)
                self.bytes_done += len(block)
                if self.progress is not None:
                    self.progress(self.bytes_done, self.total)
        if digest.hexdigest() != entry.sha256:
            part.unlink()  # changed since the manifest was made (still being saved): tried again once
            return
        part.chmod(0o755 if executable else 0o644)
        self._keep_local_edit(target, path, entry.sha256)
        os.replace(part, target)
        os.utime(target, (entry.mtime, entry.mtime))
        self.done[path] = entry

    def _keep_local_edit(self, target: Path, path: str, incoming: str) -> None:
        """A local file that differs from both the last pull and the incoming one is the user's: move it aside."""
        if target.is_symlink() or not target.is_file():
            return
        local = _file_sha256(target)
        if local in (incoming, self.previous.get(path)):
            return
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        aside = target.with_name(f"{target.name}.local-{stamp}")
        os.replace(target, aside)
        self.kept.append(aside)


def _fetch_units(container: Container, unpacker: _Unpacker, units: list[str]) -> None:
    import docker.errors

    for unit in units:
        try:
            chunks, _ = container.get_archive(str(WORKSPACE / unit))
        except docker.errors.NotFound:
            continue  # removed since the manifest was made: the retry sees it gone
        unpacker.unpack(chunks, PurePosixPath(unit).parent if "/" in unit else PurePosixPath())


def _previous_copy(dest: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((dest / MANIFEST_NAME).read_text())
        return {str(f["path"]): dict(f) for f in data.get("files", [])}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _check_named(container: Container, manifest: Manifest, paths: list[str]) -> None:
    known = [*manifest.files, *(s.path for s in manifest.skipped)]
    for path in paths:
        listed = any(k == path or k.startswith(f"{path}/") for k in known)
        if path and not listed and _exec(container, ["test", "-e", str(WORKSPACE / path)])[0] != 0:
            raise NotFound(
                f"{WORKSPACE / path} does not exist in the lab container.",
                hint="Jupyter's file browser ('labctl open') shows what the workspace holds.",
            )


def pull(
    container: Container,
    dest: Path,
    *,
    root: Path | None = None,
    paths: list[str] | None = None,
    changed_only: bool = False,
    max_size: int = DEFAULT_MAX_FILE_MB * MB,
    progress: Progress | None = None,
) -> PullResult:
    """Copy the workspace (or ``paths`` in it; only what changed since ``up`` with ``changed_only``) to
    ``dest/workspace``, each file verified, and record it in ``dest/MANIFEST.json`` and ``dest/SHA256SUMS``;
    refused, with nothing written, when a link lies on the way from ``root`` (default: ``dest``) to any of them."""
    try:
        return _pull(container, dest, root or dest, paths, changed_only, max_size, progress)
    except OSError as exc:
        if exc.filename is None:
            raise  # not this computer's disk: a connection error, reported as such by the caller
        raise LabctlError(
            f"Could not write the copy to {dest} ({exc.strerror}: {exc.filename}).",
            hint="Make sure that is a folder you can write to, with room for the files, or choose another with --to.",
        ) from None


def _pull(
    container: Container,
    dest: Path,
    root: Path,
    paths: list[str] | None,
    changed_only: bool,
    max_size: int,
    progress: Progress | None,
) -> PullResult:
    named = [workspace_path(p) for p in paths or []]
    manifest = compute_manifest(container, max_size=max_size, under=[p for p in named if p] or None)
    _check_named(container, manifest, named)
    selected = changed_since(manifest, load_baseline(container)) if changed_only else list(manifest.files.values())
    previous = _previous_copy(dest)
    unpacker = _Unpacker(dest / COPY_DIR, {p: str(f["sha256"]) for p, f in previous.items()}, progress, 0, root)
    unpacker.wanted = {f.path: f for f in selected}
    unpacker.total = sum(f.size for f in selected)
    for path in [dest / MANIFEST_NAME, dest / SUMS_NAME, *(unpacker.copy_dir / p for p in unpacker.wanted)]:
        without_links(root, path)  # all of them before the first byte is written
    if selected:
        (dest / COPY_DIR).mkdir(parents=True, exist_ok=True)
        _fetch_units(container, unpacker, transfer_units(unpacker.wanted, manifest))
    gone, failed = _retry_missing(container, unpacker)
    skipped = [*manifest.skipped, *gone]
    result = PullResult(
        dest, sorted(unpacker.done.values(), key=lambda f: f.path), skipped, unpacker.kept, changed_only
    )
    result.unchanged = len(manifest.files) - len(selected)
    if selected or not (dest / MANIFEST_NAME).exists():
        dest.mkdir(parents=True, exist_ok=True)
        write_records(dest, result, previous, source=container.name)
    if failed:
        raise LabctlError(
            f"{len(failed)} file(s) kept changing while they were copied: {', '.join(failed[:5])}.",
            hint="Let the program writing them finish (or save and close the notebook), then run the same command "
            f"again; the {len(result.files)} file(s) already copied are verified and kept.",
        )
    return result


def _retry_missing(container: Container, unpacker: _Unpacker) -> tuple[list[Skipped], list[str]]:
    """Files that changed or vanished during the copy, fetched once more one by one: (gone, still failing)."""
    missing = sorted(set(unpacker.wanted) - set(unpacker.done))
    if not missing:
        return [], []
    fresh = compute_manifest(container, max_size=0, under=missing, exclude=False)
    gone = [Skipped(p, unpacker.wanted[p].size, "deleted during the copy") for p in missing if p not in fresh.files]
    again = [p for p in missing if p in fresh.files]
    for path in again:
        unpacker.wanted[path] = fresh.files[path]
    _fetch_units(container, unpacker, again)
    return gone, [p for p in again if p not in unpacker.done]


def _sums_line(sha: str, path: str) -> str:
    """A ``sha256sum -c`` line; names with a backslash or newline are escaped the way GNU coreutils does."""
    name = f"{COPY_DIR}/{path}"
    if "\\" in name or "\n" in name:
        return f"\\{sha}  {name.replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + 'n')}\n"
    return f"{sha}  {name}\n"


def write_records(dest: Path, result: PullResult, previous: dict[str, dict[str, Any]], *, source: str) -> None:
    """MANIFEST.json and SHA256SUMS beside the copy: earlier pulls' files stay listed, this pull's replace them."""
    files = dict(previous)
    for entry in result.files:
        files[entry.path] = asdict(entry)
    manifest = {
        "source": f"{source}:{WORKSPACE}",
        "pulled_at": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "changed_only": result.changed_only,
        "copied_now": [f.path for f in result.files],
        "files": [files[p] for p in sorted(files)],
        "skipped": [asdict(s) for s in result.skipped],
    }
    write_private(dest / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    write_private(dest / SUMS_NAME, "".join(_sums_line(str(files[p]["sha256"]), p) for p in sorted(files)))


# ---------------------------------------------------------------------------------------------- push


@dataclass
class PushResult:
    dest: str  # the folder in the container that received the files
    files: dict[str, str]  # workspace path -> sha256, each checked in the container after the copy
    skipped: list[str] = field(default_factory=list)  # local links and caches that were not sent
    bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"dest": self.dest, "files": self.files, "skipped": self.skipped, "bytes": self.bytes}


class _HashingReader:
    """Hands a file to ``tarfile`` and hashes exactly the bytes that go into the archive."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data


class _CountingReader:
    """The packed archive as ``put_archive`` streams it, reporting progress as the engine takes it."""

    def __init__(self, handle: IO[bytes], total: int, progress: Progress | None) -> None:
        self.handle = handle
        self.total = total
        self.progress = progress
        self.done = 0

    def __len__(self) -> int:
        return self.total

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.done += len(data)
        if self.progress is not None and data:
            self.progress(self.done, self.total)
        return data


def _local_files(source: Path, skipped: list[str]) -> Iterator[tuple[Path, str]]:
    """(local file, name in the archive) below ``source``; links and caches are noted in ``skipped``."""
    if source.is_symlink():
        skipped.append(str(source))
        return
    if source.is_file():
        yield source, source.name
        return
    for folder, dirs, names in os.walk(source):
        here = Path(folder)
        for name in sorted(dirs):
            if name in EXCLUDED_DIRS or (here / name).is_symlink():
                skipped.append(str(here / name))
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS and not (here / d).is_symlink())
        for name in sorted(names):
            path = here / name
            if path.is_symlink() or not path.is_file():
                skipped.append(str(path))
                continue
            yield path, (Path(source.name) / path.relative_to(source)).as_posix()


def _pack(sources: list[Path], spool: IO[bytes], skipped: list[str]) -> dict[str, tuple[str, int]]:
    """Write the sources as a tar to ``spool``; return {name in the archive: (sha256, size)}."""
    sent: dict[str, tuple[str, int]] = {}
    with tarfile.open(fileobj=spool, mode="w") as tar:
        for source in sources:
            for path, name in _local_files(source, skipped):
                info = tar.gettarinfo(str(path), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                with open(path, "rb") as handle:
                    reader = _HashingReader(handle)
                    try:
                        tar.addfile(info, reader)
                    except OSError:
                        raise LabctlError(f"{path} changed while it was being packed.", hint="Push it again.") from None
                sent[name] = (reader.digest.hexdigest(), info.size)
    return sent


def push(container: Container, sources: list[Path], dest: str = "", *, progress: Progress | None = None) -> PushResult:
    """Copy local files and folders into /workspace/``dest`` and check each one's sha256 in the container."""
    import docker.errors

    folder = workspace_path(dest)
    missing = [str(s) for s in sources if not s.exists() and not s.is_symlink()]
    if missing:
        raise NotFound(f"{', '.join(missing)} {'does' if len(missing) == 1 else 'do'} not exist here.")
    names = [s.resolve().name if s.name in ("", ".", "..") else s.name for s in sources]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(
            f"Two of the paths have the same name ({', '.join(twice)}).", hint="Push them one at a time with --to."
        )
    sources = [s.resolve() if s.name in ("", ".", "..") else s for s in sources]
    remote = str(WORKSPACE / folder) if folder else str(WORKSPACE)
    skipped: list[str] = []
    with tempfile.SpooledTemporaryFile(max_size=32 * MB) as spool:
        sent = _pack(sources, spool, skipped)
        total = spool.tell()
        spool.seek(0)
        code, _, err = _exec(container, ["mkdir", "-p", "--", remote])
        if code != 0:
            raise LabctlError(f"Could not make {remote} in the lab container: {err.decode(errors='replace').strip()}")
        try:
            container.put_archive(remote, _CountingReader(spool, total, progress))
        except docker.errors.APIError as exc:
            raise LabctlError(f"Copying into {remote} failed: {exc.explanation or exc}") from None
    expected = {f"{folder}/{name}" if folder else name: value for name, value in sent.items()}
    check = compute_manifest(
        container, max_size=0, under=[f"{folder}/{n}" if folder else n for n in names], exclude=False
    )
    bad = [p for p, (sha, _) in expected.items() if p not in check.files or check.files[p].sha256 != sha]
    if bad:
        raise LabctlError(
            f"{len(bad)} pushed file(s) do not match in the lab container: {', '.join(bad[:5])}.",
            hint="Push them again; if this repeats, check the free space of the lab's disk.",
        )
    return PushResult(remote, {p: sha for p, (sha, _) in expected.items()}, skipped, sum(s for _, s in sent.values()))


# ---------------------------------------------------------------------------------------------- progress


def human_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


class ProgressLines:
    """A ``Progress`` callback that says how a large copy goes, one line every few seconds (and the last one).

    Small copies stay silent: below ``min_total`` bytes there is nothing worth watching.
    """

    def __init__(
        self,
        say: Callable[[str], None],
        verb: str = "Copied",
        *,
        min_total: int = 16 * MB,
        every_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.say = say
        self.verb = verb
        self.min_total = min_total
        self.every_s = every_s
        self.clock = clock
        self.start = clock()
        self.last = self.start

    def __call__(self, done: int, total: int) -> None:
        if total < self.min_total:
            return
        now = self.clock()
        if now - self.last < self.every_s and done < total:
            return
        self.last = now
        rate = done / (now - self.start) if now > self.start else 0.0
        left = f", about {(total - done) / rate:.0f}s left" if rate > 0 and done < total else ""
        self.say(
            f"  {self.verb} {human_bytes(done)} of {human_bytes(total)} ({done / total:.0%}, "
            f"{human_bytes(rate)}/s{left})"
        )
