"""The workspace manifest, computed inside the lab container: every file's path, size, mtime and sha256.

labctl copies this file into the container and runs it as ``python3 workspace_manifest.py ARGS`` (an argument
list, never a shell string), so it uses the standard library only and runs on any Python 3.8 or newer. It
prints one JSON object (or writes it atomically with ``--write``):

    {"version": 1, "root": "/workspace", "max_size": N, "marker_mtime": float | null,
     "files": [{"path": "a/b.ipynb", "size": 123, "mtime": 1.5, "sha256": "..."}],
     "skipped": [{"path": "data/big.bin", "size": 9e9, "reason": "too large" | "excluded" | "link" | "special"}]}

Symbolic links are never followed: a link is listed as skipped, so nothing outside the root is ever read.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import stat
import sys
import tempfile
from typing import Any

VERSION = 1
_BLOCK = 1 << 20


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


class Walker:
    def __init__(self, root: str, max_size: int, exclude_dirs: set[str], exclude_top: set[str]) -> None:
        self.root = root
        self.max_size = max_size
        self.exclude_dirs = exclude_dirs
        self.exclude_top = exclude_top
        self.files: list[dict[str, Any]] = []
        self.skipped: list[dict[str, Any]] = []

    def _skip(self, rel: str, size: int, reason: str) -> None:
        self.skipped.append({"path": rel, "size": size, "reason": reason})

    def visit(self, rel: str, named: bool = False) -> None:
        """One path relative to the root: a file is listed, a directory walked, anything else skipped.

        A path the user ``named`` (an ``--under``) is taken whatever its name or size; what lies below it is not.
        """
        full = os.path.join(self.root, rel) if rel else self.root
        try:
            info = os.lstat(full)
        except FileNotFoundError:
            return
        name = os.path.basename(rel)
        if stat.S_ISLNK(info.st_mode):
            self._skip(rel, 0, "link")
        elif stat.S_ISDIR(info.st_mode):
            top = "/" not in rel
            if rel and not named and (name in self.exclude_dirs or (top and name in self.exclude_top)):
                self._skip(rel, 0, "excluded")
                return
            for child in sorted(os.listdir(full)):
                self.visit(f"{rel}/{child}" if rel else child)
        elif not stat.S_ISREG(info.st_mode):
            self._skip(rel, 0, "special")
        elif not named and "/" not in rel and name in self.exclude_top:
            self._skip(rel, info.st_size, "excluded")
        elif not named and self.max_size and info.st_size > self.max_size:
            self._skip(rel, info.st_size, "too large")
        else:
            try:
                digest = _sha256(full)
            except OSError:  # gone or replaced by a link between lstat and open
                return
            self.files.append({"path": rel, "size": info.st_size, "mtime": info.st_mtime, "sha256": digest})


def build(args: argparse.Namespace) -> dict[str, Any]:
    root = os.path.abspath(args.root)
    walker = Walker(
        root,
        args.max_size,
        set() if args.no_exclude else set(args.exclude_dir),
        set() if args.no_exclude else set(args.exclude_top),
    )
    for under in args.under or [""]:
        parts = [p for p in under.split("/") if p and p != "."]
        if ".." in parts:
            raise SystemExit(f"refusing a path with '..': {under}")
        walker.visit("/".join(parts), named=bool(parts))
    marker_mtime = None
    if args.marker:
        with contextlib.suppress(FileNotFoundError):
            marker_mtime = os.lstat(os.path.join(root, args.marker)).st_mtime
    return {
        "version": VERSION,
        "root": root,
        "max_size": args.max_size,
        "marker_mtime": marker_mtime,
        "files": walker.files,
        "skipped": walker.skipped,
    }


def _write(path: str, text: str) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".manifest.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="List a directory's files with their sha256, as JSON.")
    parser.add_argument("--root", required=True)
    parser.add_argument("--max-size", type=int, default=0, help="skip files larger than this (0: no limit)")
    parser.add_argument("--exclude-dir", action="append", default=[], help="a directory name skipped anywhere")
    parser.add_argument("--exclude-top", action="append", default=[], help="a name skipped at the root only")
    parser.add_argument("--no-exclude", action="store_true", help="ignore --exclude-dir and --exclude-top")
    parser.add_argument("--under", action="append", help="only this path below the root (repeatable)")
    parser.add_argument("--marker", help="a file below the root whose mtime to report")
    parser.add_argument("--write", help="write the JSON to this file instead of printing it")
    args = parser.parse_args(argv)
    text = json.dumps(build(args))
    if args.write:
        _write(args.write, text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
