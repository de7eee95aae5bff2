"""How workflows talk to the person at the terminal without knowing about the CLI.

Workflows receive a ``Reporter`` and call ``step``/``info``/``warn``; the CLI passes a rich-backed one for
people and a quiet one (messages on stderr) for ``--json`` so that stdout stays machine-readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol, TextIO


class Reporter(Protocol):
    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def step(self, label: str) -> AbstractContextManager[None]: ...

    def line(self, text: str) -> None: ...


class PlainReporter:
    """Plain text reporter: the default for tests, pipes and ``--json`` (where it writes to stderr)."""

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet

    def _write(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def info(self, message: str) -> None:
        self._write(message)

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=self.stream, flush=True)

    def line(self, text: str) -> None:
        self._write(text)

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        start = time.monotonic()
        self._write(f"- {label} ...")
        try:
            yield
        except BaseException:
            self._write(f"x {label} (failed after {time.monotonic() - start:.1f}s)")
            raise
        self._write(f"+ {label} ({time.monotonic() - start:.1f}s)")


class RichReporter(PlainReporter):
    """Reporter for a person at a terminal: coloured steps with timings."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)

    def info(self, message: str) -> None:
        self.console.print(message, markup=False)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {message}")

    def line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        start = time.monotonic()
        with self.console.status(label):
            try:
                yield
            except BaseException:
                self.console.print(f"[red]✗[/red] {label} [dim]({time.monotonic() - start:.1f}s)[/dim]")
                raise
        self.console.print(f"[green]✓[/green] {label} [dim]({time.monotonic() - start:.1f}s)[/dim]")


class NodeReporter:
    """One machine's messages among several prepared at once: each line under the node's name, and steps as two
    lines instead of a spinner (a terminal shows one spinner at a time, and the nodes' steps overlap)."""

    def __init__(self, ui: Reporter, prefix: str) -> None:
        self.ui = ui
        self.prefix = prefix

    def info(self, message: str) -> None:
        self.ui.info(f"{self.prefix} {message}")

    def warn(self, message: str) -> None:
        self.ui.warn(f"{self.prefix} {message}")

    def line(self, text: str) -> None:
        self.ui.line(f"{self.prefix} {text}")

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        start = time.monotonic()
        self.info(f"{label} ...")
        try:
            yield
        except BaseException:
            self.info(f"{label}: failed after {time.monotonic() - start:.1f}s")
            raise
        self.info(f"{label}: done ({time.monotonic() - start:.1f}s)")


class Outcome:
    """What a workflow hands back: data for ``--json`` and text for people, plus the exit code."""

    def __init__(self, data: dict[str, object], text: str = "", exit_code: int = 0) -> None:
        self.data = data
        self.text = text
        self.exit_code = exit_code
