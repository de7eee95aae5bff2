"""labctl's bundled files, private files, and copies under the user's folder. Windows has no modes: private files live
in the user's profile, which admits only the user, SYSTEM and Administrators (as OpenSSH requires)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from labctl.errors import LabctlError, UsageError

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
_PACKAGE_DIR = Path(__file__).resolve().parent


def sha256_of(source: Path | IO[bytes]) -> str:
    """Read a megabyte at a time: a run's checkpoint or a workspace file may not fit in memory."""
    digest = hashlib.sha256()
    with open(source, "rb") if isinstance(source, Path) else contextlib.nullcontext(source) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_private_dir(path: Path) -> Path:
    """A folder already there keeps its mode: not labctl's to change."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)  # the umask can only narrow 0700
    return path


def write_private(path: Path, text: str, mode: int = PRIVATE_FILE) -> None:
    """Atomically; ``mode`` keeps a file's wider one (the user's ~/.ssh/config)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if sys.platform != "win32":
            os.fchmod(fd, mode)  # mkstemp already makes it 0600; said here so it never drifts
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json_object(path: Path) -> dict[str, Any]:
    """A cache or a note labctl wrote: {} when it is gone, unreadable, not JSON or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def without_links(root: Path, path: Path) -> Path:
    """Refused unless under ``root`` with no link on the way: a cloned repository's link must not send a copy away."""
    parts = path.relative_to(root).parts if path.is_relative_to(root) else ("..",)
    if ".." in parts:
        raise UsageError(f"{path} is not inside {root}, where labctl writes; nothing was written.")
    for here in [root, *(root.joinpath(*parts[: i + 1]) for i in range(len(parts)))]:
        try:
            info = here.lstat()
        except OSError:
            continue  # not there yet
        # A symbolic link, or a Windows junction (a mount point, which ``is_symlink`` does not see).
        if stat.S_ISLNK(info.st_mode) or getattr(info, "st_reparse_tag", 0) == 0xA0000003:
            raise UsageError(
                f"{here} is a link, and labctl writes only inside {root} with no link on the way; nothing was written.",
                hint="Remove or move the link (or choose another folder), then run the command again.",
            )
    return path


def bundled(kind: str) -> Path:
    for candidate in (_PACKAGE_DIR / "_bundled" / kind, _PACKAGE_DIR.parent / kind):
        if candidate.is_dir():
            return candidate
    raise LabctlError(
        f"labctl's bundled '{kind}' files are missing from this installation.",
        hint="Reinstall labctl (pip install --force-reinstall labctl).",
    )


def lab_dir() -> Path:
    return bundled("lab")


def template(name: str) -> Path:
    path = bundled("templates") / name
    if not path.is_file():
        raise LabctlError(f"labctl's template '{name}' is missing.", hint="Reinstall labctl.")
    return path
