"""Errors a user can cause or meet, each carrying the way out: the CLI prints ``message`` and ``hint`` as one
paragraph and exits with ``exit_code`` (the README's table: 1 runtime, 2 usage, 3 not ready, 130 interrupted)."""

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
    """No room or quota for this size in this region now: ``labctl.targets.base.first_that_fits`` tries the next."""


class NotFound(LabctlError):
    exit_code = 3


class NotReady(LabctlError):
    exit_code = 3
