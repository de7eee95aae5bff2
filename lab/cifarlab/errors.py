"""The errors a user can fix: the command line prints their message, without a traceback, and exits with 2."""

from __future__ import annotations


class LabError(Exception):
    """A failure the user can fix; the command line prints its message (no traceback) and exits non-zero."""


class DataError(LabError):
    """A dataset that is missing or not in the expected shape; the message names the path and the layout."""
