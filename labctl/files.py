"""Files only their owner may read (state, keys, trust list, known_hosts), on every system labctl runs on.

On Linux and macOS that is mode 0600 for files and 0700 for directories. Windows has no such modes (Python's
chmod there only sets the read-only flag); labctl keeps these files under the user's profile (the
platform's user state directory, %LOCALAPPDATA%, and the temporary directory inside the profile), whose
access list admits only the user, SYSTEM and Administrators by default, which is also what OpenSSH for
Windows requires of a private key. So on Windows nothing is changed and nothing is claimed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) if missing, and make it the owner's alone where modes exist."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if sys.platform != "win32":
        with contextlib.suppress(OSError):  # a directory we do not own (e.g. a shared parent) stays as it is
            os.chmod(path, PRIVATE_DIR)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only (see the module's note on Windows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if sys.platform != "win32":
            os.fchmod(fd, PRIVATE_FILE)  # mkstemp already makes it 0600; said here so it never drifts
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
