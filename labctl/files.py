"""Files only their owner may read (state, keys, trust list, known_hosts), on every system labctl runs on; and
the one check that keeps what labctl copies home under the folder the user chose.

On Linux and macOS that is mode 0600 for files and 0700 for directories. Windows has no such modes (Python's
chmod there only sets the read-only flag); labctl keeps these files under the user's profile (the
platform's user state directory, %LOCALAPPDATA%, and the temporary directory inside the profile), whose
access list admits only the user, SYSTEM and Administrators by default, which is also what OpenSSH for
Windows requires of a private key. So on Windows nothing is changed and nothing is claimed.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from pathlib import Path

from labctl.errors import UsageError

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) if missing, the owner's alone where modes exist. A folder already there
    (LABCTL_STATE_DIR pointed at an existing one, or a link) keeps its mode: labctl changes only what it made."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)  # the umask can only narrow 0700
    return path


def write_private(path: Path, text: str, mode: int = PRIVATE_FILE) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only (see the module's note on Windows).

    ``mode`` keeps a wider mode a file already had (the user's own ``~/.ssh/config`` when a line is added to it).
    """
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


def without_links(root: Path, path: Path) -> Path:
    """``path``, refused when it is not under ``root`` or a symbolic link lies on the way from ``root`` to it
    (``root`` included): a link a cloned repository carries in the results folder must not send a copy elsewhere."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        parts = ("..",)
    if ".." in parts:
        raise UsageError(f"{path} is not inside {root}, where labctl writes; nothing was written.")
    here = root
    for part in ("", *parts):
        here = here / part
        if _is_link(here):
            raise UsageError(
                f"{here} is a link, and labctl writes only inside {root} with no link on the way; nothing was written.",
                hint="Remove or move the link (or choose another folder), then run the command again.",
            )
    return path


def _is_link(path: Path) -> bool:
    """A symbolic link, or on Windows a junction (which ``is_symlink`` does not see)."""
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISLNK(info.st_mode) or getattr(info, "st_reparse_tag", 0) == 0xA0000003  # a mount point
