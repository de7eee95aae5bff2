"""Every file's path, size, mtime and sha256 below a root, as JSON; links are listed as skipped, never followed. Run in
the lab container, so the standard library only (Python 3.8+); labctl (``workspace.py``) names what to leave out."""

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

_BLOCK = 1 << 20


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def build(args: argparse.Namespace) -> dict[str, Any]:
    root = os.path.abspath(args.root)
    exclude_dirs, exclude_top = set(args.exclude_dir or []), set(args.exclude_top or [])
    files: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []

    def visit(rel: str, named: bool = False) -> None:
        """A path the user ``named`` (an ``--under``) is taken whatever its name or size; what lies below it is not."""
        full = os.path.join(root, rel) if rel else root
        try:
            info = os.lstat(full)
        except FileNotFoundError:
            return
        name, top = os.path.basename(rel), "/" not in rel
        if stat.S_ISLNK(info.st_mode):
            skipped.append({"path": rel, "size": 0, "reason": "link"})
        elif stat.S_ISDIR(info.st_mode):
            if rel and not named and (name in exclude_dirs or (top and name in exclude_top)):
                skipped.append({"path": rel, "size": 0, "reason": "excluded"})
                return
            for child in sorted(os.listdir(full)):
                visit(f"{rel}/{child}" if rel else child)
        elif not stat.S_ISREG(info.st_mode):
            skipped.append({"path": rel, "size": 0, "reason": "special"})
        elif not named and top and name in exclude_top:
            skipped.append({"path": rel, "size": info.st_size, "reason": "excluded"})
        elif not named and args.max_size and info.st_size > args.max_size:
            skipped.append({"path": rel, "size": info.st_size, "reason": "too large"})
        else:
            try:
                digest = _sha256(full)
            except OSError:  # gone or replaced by a link between lstat and open
                return
            files.append({"path": rel, "size": info.st_size, "mtime": info.st_mtime, "sha256": digest})

    for under in args.under or [""]:
        parts = [p for p in under.split("/") if p and p != "."]
        if ".." in parts:
            raise SystemExit(f"refusing a path with '..': {under}")
        visit("/".join(parts), named=bool(parts))
    marker_mtime = None
    with contextlib.suppress(FileNotFoundError):
        marker_mtime = os.lstat(os.path.join(root, args.marker)).st_mtime if args.marker else None
    return {"version": 1, "root": root, "marker_mtime": marker_mtime, "files": files, "skipped": skipped}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="List a directory's files with their sha256, as JSON.")
    parser.add_argument("--root", required=True)
    parser.add_argument("--max-size", type=int, default=0, help="skip files larger than this (0: no limit)")
    parser.add_argument("--exclude-dir", action="append", help="skip folders of this name anywhere (repeatable)")
    parser.add_argument("--exclude-top", action="append", help="skip this file or folder at the top (repeatable)")
    parser.add_argument("--marker", help="report this file's mtime (at the top) as marker_mtime")
    parser.add_argument("--under", action="append", help="only this path below the root (repeatable)")
    parser.add_argument("--write", help="write the JSON to this file instead of printing it")
    args = parser.parse_args(argv)
    text = json.dumps(build(args))
    if not args.write:
        sys.stdout.write(text)
        return 0
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(args.write), prefix=".manifest.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, args.write)  # atomically: a baseline half written is never read
    return 0


if __name__ == "__main__":
    sys.exit(main())
