"""Image references reach root (cloud-init, the engine): only Docker's grammar passes, nothing rides along."""

from __future__ import annotations

import re

from labctl.errors import UsageError

# The grammar of github.com/distribution/reference (reference.go), written out piece by piece.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"(?P<name>{_NAME})(?::{_TAG})?(?:@{_DIGEST})?", re.ASCII)
NAME_MAX = 255


def is_image_ref(value: str) -> bool:
    match = _REFERENCE.fullmatch(value)
    return match is not None and len(match.group("name")) <= NAME_MAX


def check_image_ref(value: object, what: str) -> str:
    text = value if isinstance(value, str) else ""
    if not is_image_ref(text):
        raise UsageError(
            f"{what} is {value!r}, which is not a container image reference.",
            hint="Write it as [registry/]repository[:tag][@sha256:digest] in lower case, for example "
            "pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime or myregistry.azurecr.io/team/lab:1.0.",
        )
    return text
