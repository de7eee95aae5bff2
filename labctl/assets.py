"""Where the files that travel to the machine live: the lab and the templates.

An installed wheel carries them as ``labctl/_bundled/{lab,templates}``; a source checkout (editable install,
tests) has them at the repository root. Both are looked up so that the same code serves each case.
"""

from __future__ import annotations

from pathlib import Path

from labctl.errors import LabctlError

_PACKAGE_DIR = Path(__file__).resolve().parent


def _find(kind: str) -> Path:
    for candidate in (_PACKAGE_DIR / "_bundled" / kind, _PACKAGE_DIR.parent / kind):
        if candidate.is_dir():
            return candidate
    raise LabctlError(
        f"labctl's bundled '{kind}' files are missing from this installation.",
        hint="Reinstall labctl (pip install --force-reinstall labctl).",
    )


def lab_dir() -> Path:
    """The directory holding the notebook and the training core package."""
    return _find("lab")


def templates_dir() -> Path:
    """The directory holding the scripts and Dockerfile that run on the machine."""
    return _find("templates")


def template(name: str) -> Path:
    path = templates_dir() / name
    if not path.is_file():
        raise LabctlError(f"labctl's template '{name}' is missing.", hint="Reinstall labctl.")
    return path
