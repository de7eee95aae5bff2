"""Errors a user can cause or meet, each carrying the way out.

The CLI prints ``message`` and ``hint`` as one paragraph (a traceback only with ``--verbose``) and exits with
``exit_code``, from the README's one table for every command: 1 a runtime failure, 2 a usage error (nothing was
started), 3 not ready (the message names the command that makes it ready), 130 interrupted.
"""

from __future__ import annotations


class LabctlError(Exception):
    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def render(self) -> str:
        text = self.message.rstrip()
        if self.hint:
            sep = "" if text.endswith((".", "?", "!", ":")) else "."
            text = f"{text}{sep} {self.hint.strip()}"
        return text


class UsageError(LabctlError):
    exit_code = 2


class NoCapacity(LabctlError):
    """No room or quota for this size in this region now, whatever the provider's code for it: the fall-back to
    the next choice (``labctl.targets.base.first_that_fits``) is written once."""


class NotFound(LabctlError):
    exit_code = 3


class NotReady(LabctlError):
    exit_code = 3
