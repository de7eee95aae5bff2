"""The user's own work in the lab container's /workspace: what changed since `up`, and copies both ways, each file
checked against the sha256 that ``templates/workspace_manifest.py`` computes in the container."""

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
from typing import IO, Any

from labctl.container import EXCLUDED_DIRS, NOTEBOOK, LabContainer, archive_entries, tar_of
from labctl.errors import LabctlError, NotFound, UsageError
from labctl.files import lab_dir, sha256_of, template, without_links, write_private

WORKSPACE = PurePosixPath("/workspace")
LABCTL_DIR = WORKSPACE / ".labctl"  # labctl's own: this tool, and what runs ship (tools/, lab/, data/, once a version)
TOOL = LABCTL_DIR / "workspace_manifest.py"
BASELINE = LABCTL_DIR / "baseline-manifest.json"  # on the workspace volume, so it outlives a replaced container
SEED_MARKER = ".labctl-seeded"  # made when the notebook is first put in; its mtime is when `up` seeded the workspace
EXCLUDED_TOP = (LABCTL_DIR.name, "runs", SEED_MARKER)  # labctl's own; runs are fetched with 'labctl fetch'
DEFAULT_MAX_FILE_MB = 200
MB = 1 << 20
MANIFEST_NAME = "MANIFEST.json"
SUMS_NAME = "SHA256SUMS"
COPY_DIR = "workspace"

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


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
    reason: str  # too large | excluded | link | special | deleted during the copy


@dataclass
class Manifest:
    files: dict[str, FileEntry]
    skipped: list[Skipped] = field(default_factory=list)
    marker_mtime: float | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        skipped = [Skipped(**s) for s in data.get("skipped", [])]
        return cls({f["path"]: FileEntry(**f) for f in data["files"]}, skipped, data.get("marker_mtime"))

    def known(self) -> list[str]:
        return [*self.files, *(s.path for s in self.skipped)]


def workspace_path(text: str, *, allow_root: bool = True) -> str:
    """Relative to /workspace, '' for the whole."""
    if "\0" in text:
        raise UsageError("A path cannot contain a NUL character.")
    path = PurePosixPath(text)
    if path.is_absolute() and not path.is_relative_to(WORKSPACE):
        raise UsageError(
            f"{text} is outside the lab's workspace.", hint=f"Name a path in {WORKSPACE} or relative to it."
        )
    parts = path.relative_to(WORKSPACE).parts if path.is_absolute() else path.parts  # pathlib drops '.'
    if ".." in parts:
        raise UsageError(f"{text} leaves the lab's workspace ('..').", hint="Name a path inside it.")
    if not parts and not allow_root:
        raise UsageError("Name a folder inside the workspace, or leave --to out for the workspace itself.")
    if parts and parts[0] == LABCTL_DIR.name:
        raise UsageError(f"{text} is labctl's own folder in the workspace.", hint="Name another path.")
    return "/".join(parts)


def _run_tool(box: LabContainer, args: list[str], *, exclude: bool = True) -> bytes:
    """Installed every time, so never stale; run with the first Python the image has."""
    box.put(str(LABCTL_DIR), {TOOL.name: template(TOOL.name).read_bytes()})
    args = [f"--root={WORKSPACE}", f"--marker={SEED_MARKER}", *args]
    if exclude:  # caches anywhere, labctl's own files at the top
        args += [*(f"--exclude-dir={d}" for d in EXCLUDED_DIRS), *(f"--exclude-top={t}" for t in EXCLUDED_TOP)]
    for python in ("python3", "python"):
        done = box.exec([python, str(TOOL), *args], check=False)
        if done.exit_code in (126, 127) and not done.output:
            continue  # this interpreter name does not exist in the image
        if done.exit_code != 0:
            raise LabctlError(
                f"Listing the workspace in the lab container failed (exit {done.exit_code}): "
                f"{done.errors.decode(errors='replace').strip()[-400:]}",
                hint="Check the lab with 'labctl status'; 'labctl up' repairs a broken container.",
            )
        return done.output
    raise LabctlError("The lab container has no python3 or python.", hint="Use an image with Python installed.")


def compute_manifest(
    box: LabContainer, *, max_size: int = DEFAULT_MAX_FILE_MB * MB, under: list[str] | None = None, exclude: bool = True
) -> Manifest:
    args = ["--max-size", str(max_size), *(f"--under={p}" for p in under or [])]
    return Manifest.from_json(json.loads(_run_tool(box, args, exclude=exclude)))


def seed_workspace(box: LabContainer, notebook: Path | None = None) -> bool:
    """First start only: the notebook, unless the user has one there, and the baseline (labctl's, not the user's)."""
    marker = f"{WORKSPACE}/{SEED_MARKER}"
    if box.exists(marker):
        return False
    notebook = notebook or lab_dir() / NOTEBOOK
    copied = notebook.is_file() and not box.exists(f"{WORKSPACE}/{notebook.name}")
    if copied:
        box.put(str(WORKSPACE), {notebook.name: notebook})
    box.exec(["touch", marker])
    _run_tool(box, ["--max-size", "0", f"--write={BASELINE}"])  # whatever their size: `down` copies what changed
    return copied


def load_baseline(box: LabContainer) -> Manifest | None:
    done = box.exec(["cat", str(BASELINE)], check=False)
    try:
        return Manifest.from_json(json.loads(done.output)) if done.exit_code == 0 else None
    except (ValueError, KeyError, TypeError):
        return None  # a damaged baseline: fall back to the seed marker rather than fail a `down`


def changed_since(current: Manifest, baseline: Manifest | None) -> list[FileEntry]:
    if baseline is not None:
        return [f for p, f in current.files.items() if p not in baseline.files or baseline.files[p].sha256 != f.sha256]
    if current.marker_mtime is not None:
        return [f for f in current.files.values() if f.mtime > current.marker_mtime]
    return list(current.files.values())


def transfer_units(selected: Iterable[str], manifest: Manifest) -> list[str]:
    """The fewest paths to ask ``get_archive`` for: a folder only when nothing unwanted lies in it."""
    wanted = set(selected)
    blocked = {str(p) for path in manifest.known() if path not in wanted for p in PurePosixPath(path).parents}
    units = set()
    for path in wanted:
        unit = path
        for parent in PurePosixPath(path).parents:
            if str(parent) == "." or str(parent) in blocked:
                break
            unit = str(parent)
        units.add(unit)
    return sorted(units)


@dataclass
class PullResult:
    dest: Path  # holds workspace/, MANIFEST.json and SHA256SUMS
    files: list[FileEntry]  # copied and verified this time
    skipped: list[Skipped]  # left in the container, with the reason
    kept_local: list[Path] = field(default_factory=list)  # local edits moved aside instead of overwritten
    changed_only: bool = False
    unchanged: int = 0  # files the workspace holds that were not copied because they did not change since up
    already_here: list[FileEntry] = field(default_factory=list)  # an earlier, interrupted copy left them intact

    @property
    def copy_dir(self) -> Path:
        return self.dest / COPY_DIR

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(dest=str(self.dest), kept_local=[str(p) for p in self.kept_local], bytes=self.bytes)
        return {**data, "workspace": str(self.copy_dir), "manifest": str(self.dest / MANIFEST_NAME)}


@dataclass
class _Unpacker:
    """A file takes its place only once its sha256 matches, so a cut or corrupted copy never looks like a good one."""

    copy_dir: Path
    wanted: dict[str, FileEntry]
    previous: dict[str, str] = field(default_factory=dict)  # sha256 of each path as the last pull left it
    progress: Progress | None = None
    root: Path | None = None  # no link may lie between it (default: copy_dir) and a file written
    done: dict[str, FileEntry] = field(default_factory=dict)
    kept: list[Path] = field(default_factory=list)
    bytes_done: int = 0

    def __post_init__(self) -> None:
        self.total = sum(f.size for f in self.wanted.values())

    def unpack(self, chunks: Iterable[bytes], unit: str) -> None:
        base, top = PurePosixPath(unit).parent, PurePosixPath(unit).name
        for tar, member in archive_entries(chunks, top, links=False):
            path = str(base / member.name)
            if member.isfile() and path in self.wanted and path not in self.done:
                source = tar.extractfile(member)  # folders are made as needed
                if source is not None:
                    self._write(path, source, executable=bool(member.mode & 0o111))

    def _write(self, path: str, source: IO[bytes], *, executable: bool) -> None:
        entry = self.wanted[path]
        target = without_links(self.root or self.copy_dir, self.copy_dir / path)
        target.parent.mkdir(parents=True, exist_ok=True)  # a file in the way: an OSError that pull() explains
        if target.is_dir():
            raise LabctlError(f"{target} is a folder where the file {path} goes.", hint="Move it away and pull again.")
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
        if target.is_file() and sha256_of(target) not in (entry.sha256, self.previous.get(path)):
            aside = target.with_name(f"{target.name}.local-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}")
            os.replace(target, aside)  # a local edit, unlike both the last pull and this one: the user's, kept
            self.kept.append(aside)
        os.replace(part, target)
        os.utime(target, (entry.mtime, entry.mtime))
        self.done[path] = entry

    def fetch(self, box: LabContainer, units: list[str]) -> None:
        for unit in units:
            try:
                self.unpack(box.archive(str(WORKSPACE / unit)), unit)
            except NotFound:
                continue  # removed since the manifest was made: the retry sees it gone


def _intact(path: Path, entry: FileEntry) -> bool:
    """Already copied: a pull or `down` cut short and run again resumes, file by file."""
    same_size = path.is_file() and not path.is_symlink() and path.stat().st_size == entry.size
    return same_size and sha256_of(path) == entry.sha256


def pull(
    box: LabContainer,
    dest: Path,
    *,
    root: Path | None = None,
    paths: list[str] | None = None,
    changed_only: bool = False,
    max_size: int = DEFAULT_MAX_FILE_MB * MB,
    progress: Progress | None = None,
) -> PullResult:
    """Nothing is written when a link lies on the way from ``root`` (default: ``dest``) to any file."""
    root = root or dest
    try:
        named = [workspace_path(p) for p in paths or []]
        manifest = compute_manifest(box, max_size=max_size, under=[p for p in named if p] or None)
        for path in named:
            listed = any(k == path or k.startswith(f"{path}/") for k in manifest.known())
            if path and not listed and not box.exists(str(WORKSPACE / path)):
                raise NotFound(
                    f"{WORKSPACE / path} does not exist in the lab container.",
                    hint="Jupyter's file browser ('labctl open') shows what the workspace holds.",
                )
        selected = changed_since(manifest, load_baseline(box)) if changed_only else list(manifest.files.values())
        for local in [dest / MANIFEST_NAME, dest / SUMS_NAME, *(dest / COPY_DIR / f.path for f in selected)]:
            without_links(root, local)  # all of them before the first byte is written
        here = [f for f in selected if _intact(dest / COPY_DIR / f.path, f)]
        previous = _previous_copy(dest)
        wanted = {f.path: f for f in selected if f not in here}
        sums = {p: str(f["sha256"]) for p, f in previous.items()}
        unpacker = _Unpacker(dest / COPY_DIR, wanted, sums, progress, root)
        unpacker.fetch(box, transfer_units(wanted, manifest))
        gone, failed = _retry_missing(box, unpacker)
        copied = sorted(unpacker.done.values(), key=lambda f: f.path)
        unchanged = len(manifest.files) - len(selected)
        result = PullResult(dest, copied, [*manifest.skipped, *gone], unpacker.kept, changed_only, unchanged, here)
        if selected or not (dest / MANIFEST_NAME).exists():
            dest.mkdir(parents=True, exist_ok=True)
            write_records(dest, result, previous, source=box.name)
        if failed:
            raise LabctlError(
                f"{len(failed)} file(s) kept changing while they were copied: {', '.join(failed[:5])}.",
                hint="Let the program writing them finish (or save and close the notebook), then run the same command "
                f"again; the {len(result.files)} file(s) already copied are verified and kept.",
            )
        return result
    except OSError as exc:
        if exc.filename is None:
            raise  # not this computer's disk: a connection error, reported as such by the caller
        raise LabctlError(
            f"Could not write the copy to {dest} ({exc.strerror}: {exc.filename}).",
            hint="Make sure that is a folder you can write to, with room for the files, or choose another with --to.",
        ) from None


def _previous_copy(dest: Path) -> dict[str, dict[str, Any]]:
    try:
        return {str(f["path"]): dict(f) for f in json.loads((dest / MANIFEST_NAME).read_text()).get("files", [])}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _retry_missing(box: LabContainer, unpacker: _Unpacker) -> tuple[list[Skipped], list[str]]:
    """Files that changed or vanished during the copy, fetched once more one by one: (gone, still failing)."""
    missing = sorted(set(unpacker.wanted) - set(unpacker.done))
    if not missing:
        return [], []
    fresh = compute_manifest(box, max_size=0, under=missing, exclude=False)
    gone = [Skipped(p, unpacker.wanted[p].size, "deleted during the copy") for p in missing if p not in fresh.files]
    again = [p for p in missing if p in fresh.files]
    unpacker.wanted.update((p, fresh.files[p]) for p in again)
    unpacker.total += sum(fresh.files[p].size for p in again)  # fetched a second time: progress stays below 100%
    unpacker.fetch(box, again)
    return gone, [p for p in again if p not in unpacker.done]


def _sums_line(sha: str, path: str) -> str:
    """A ``sha256sum -c`` line; names with a backslash or newline are escaped the way GNU coreutils does."""
    name = f"{COPY_DIR}/{path}"
    if "\\" in name or "\n" in name:
        return f"\\{sha}  {name.replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + 'n')}\n"
    return f"{sha}  {name}\n"


def write_records(dest: Path, result: PullResult, previous: dict[str, dict[str, Any]], *, source: str) -> None:
    """Earlier pulls' files stay listed, this pull's replace them."""
    files = {**previous, **{f.path: asdict(f) for f in [*result.already_here, *result.files]}}
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


@dataclass
class PushResult:
    dest: str  # the folder in the container that received the files
    files: dict[str, str]  # workspace path -> sha256, each checked in the container after the copy
    skipped: list[str] = field(default_factory=list)  # local links and caches that were not sent
    bytes: int = 0


def _counted(spool: IO[bytes], total: int, progress: Progress | None) -> Iterator[bytes]:
    for block in iter(lambda: spool.read(MB), b""):
        if progress is not None:
            progress(spool.tell(), total)
        yield block


def push(box: LabContainer, sources: list[Path], dest: str = "", *, progress: Progress | None = None) -> PushResult:
    import docker.errors

    folder = workspace_path(dest)
    missing = [str(s) for s in sources if not s.exists() and not s.is_symlink()]
    if missing:
        raise NotFound(f"{', '.join(missing)} {'does' if len(missing) == 1 else 'do'} not exist here.")
    sources = [s.resolve() if s.name in ("", ".", "..") else s for s in sources]
    names = [s.name for s in sources]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(
            f"Two of the paths have the same name ({', '.join(twice)}).", hint="Push them one at a time with --to."
        )
    remote = str(WORKSPACE / folder)
    skipped: list[str] = []
    with tempfile.SpooledTemporaryFile(max_size=32 * MB) as spool:
        tar_of({source.name: source for source in sources}, spool, skipped)
        spool.seek(0)
        with tarfile.open(fileobj=spool) as tar:  # what was archived: {name: (sha256, size)}
            sent = {m.name: (sha256_of(tar.extractfile(m) or io.BytesIO()), m.size) for m in tar if m.isfile()}
        total = spool.seek(0, io.SEEK_END)
        spool.seek(0)
        box.exec(["mkdir", "-p", "--", remote])
        try:
            box.container.put_archive(remote, _counted(spool, total, progress))
        except docker.errors.APIError as exc:
            raise LabctlError(f"Copying into {remote} failed: {exc.explanation or exc}") from None
    expected = {f"{folder}/{name}".lstrip("/"): value for name, value in sent.items()}
    check = compute_manifest(box, max_size=0, under=[f"{folder}/{n}".lstrip("/") for n in names], exclude=False)
    bad = [p for p, (sha, _) in expected.items() if p not in check.files or check.files[p].sha256 != sha]
    if bad:
        raise LabctlError(
            f"{len(bad)} pushed file(s) do not match in the lab container: {', '.join(bad[:5])}.",
            hint="Push them again; if this repeats, check the free space of the lab's disk.",
        )
    return PushResult(remote, {p: sha for p, (sha, _) in expected.items()}, skipped, sum(s for _, s in sent.values()))


def human_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def progress_lines(
    say: Callable[[str], None],
    verb: str = "Copied",
    *,
    min_total: int = 16 * MB,
    every_s: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
) -> Progress:
    """One line every few seconds (and the last one); silent below ``min_total`` bytes."""
    start = last = clock()

    def show(done: int, total: int) -> None:
        nonlocal last
        now = clock()
        if total < min_total or (now - last < every_s and done < total):
            return
        last = now
        rate = done / (now - start) if now > start else 0.0
        left = f", about {(total - done) / rate:.0f}s left" if rate > 0 and done < total else ""
        say(f"  {verb} {human_bytes(done)} of {human_bytes(total)} ({done / total:.0%}, {human_bytes(rate)}/s{left})")

    return show
