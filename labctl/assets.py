"""The lab and the templates: ``labctl/_bundled/`` in a wheel, the repository root in a checkout."""

from __future__ import annotations

from pathlib import Path

from labctl.errors import LabctlError

_PACKAGE_DIR = Path(__file__).resolve().parent


def bundled(kind: str) -> Path:
    """``lab`` or ``templates``."""
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
