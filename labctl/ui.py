"""How workflows talk to the person at the terminal without knowing about the CLI: a ``Reporter`` (rich for people,
plain on stderr for ``--json`` so that stdout stays machine-readable), and ``LiveOutput`` for a run's own output."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.text import Text

    from labctl.errors import LabctlError


class PlainReporter:
    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False, json_output: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.json_output = json_output  # stdout carries the command's JSON: nothing else may be printed there

    def info(self, message: str) -> None:
        if not self.quiet:
            print(message, file=self.stream, flush=True)

    _write = info  # the steps' lines, whatever a subclass makes of info

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=self.stream, flush=True)

    # A step's lines: when it begins, ends and fails ({s}: the seconds it took).
    STEP_LINES = ("- {label} ...", "+ {label} ({s:.1f}s)", "x {label} (failed after {s:.1f}s)")

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        begins, ends, fails = self.STEP_LINES
        start = time.monotonic()
        self._write(begins.format(label=label))
        try:
            yield
        except BaseException:
            self._write(fails.format(label=label, s=time.monotonic() - start))
            raise
        self._write(ends.format(label=label, s=time.monotonic() - start))

    @contextmanager
    def status(self, label: str) -> Iterator[bool]:
        """A spinner that leaves nothing behind; False: none here, where no one watches it turn."""
        yield False


Reporter = PlainReporter


class RichReporter(PlainReporter):
    STEP_LINES = ("", "[green]✓[/green] {label} [dim]({s:.1f}s)[/dim]", "[red]✗[/red] {label} [dim]({s:.1f}s)[/dim]")

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)

    def info(self, message: str) -> None:
        self.console.print(message, markup=False)

    def _write(self, text: str) -> None:
        if text:
            self.console.print(text)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {message}")

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        with self.console.status(label), super().step(label):
            yield

    @contextmanager
    def status(self, label: str) -> Iterator[bool]:
        with self.console.status(_Elapsed(label)):
            yield True


class _Elapsed:
    def __init__(self, label: str) -> None:
        self.label = label
        self.start = time.monotonic()

    def __rich__(self) -> Text:
        from rich.text import Text

        return Text.assemble(self.label, (f" ({time.monotonic() - self.start:.0f}s)", "dim"))


def phase_of(line: str) -> str | None:
    """What a line ending in "..." announces ("drawing the plots ..."): the lab prints one before each silent step."""
    text = line.rpartition("\r")[2].replace("\x1b[K", "").strip()
    return (text.rstrip(".\u2026 ") or None) if text.endswith(("...", "\u2026")) else None


class LiveOutput(AbstractContextManager["LiveOutput"]):
    """A spinner while a run is silent: before its first output, and after a line announcing a step (shown in it)."""

    def __init__(self, ui: Reporter, stream: TextIO, first: str | None = None) -> None:
        self.ui = ui
        self.stream = stream
        self._spinner = ExitStack()
        self._held = ""  # the announcing line, while the spinner shows it
        if first:
            self._spinner.enter_context(ui.status(first))

    def write(self, text: str) -> int:
        if not text:
            return 0
        self.stop()
        cut = text.rfind("\n", 0, -1) + 1 if text.endswith("\n") else len(text)  # the last whole line apart
        self._put(text[:cut])
        last, phase = text[cut:], phase_of(text[cut:])
        if phase is not None and self._spinner.enter_context(self.ui.status(phase)) and self.isatty():
            self._held = last
        else:
            self._put(last)
        return len(text)

    def stop(self) -> None:
        self._spinner.close()
        held, self._held = self._held, ""
        self._put(held)

    def _put(self, text: str) -> None:
        if text:
            self.stream.write(text)
            self.stream.flush()

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return bool(getattr(self.stream, "isatty", None) and self.stream.isatty())

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class NodeReporter(PlainReporter):
    """One machine's lines among several, under its name; steps as two lines (the nodes' steps overlap)."""

    STEP_LINES = ("{label} ...", "{label}: done ({s:.1f}s)", "{label}: failed after {s:.1f}s")

    def __init__(self, ui: Reporter, prefix: str) -> None:
        self.ui = ui
        self.prefix = prefix

    def info(self, message: str) -> None:
        self.ui.info(f"{self.prefix} {message}")

    _write = info

    def warn(self, message: str) -> None:
        self.ui.warn(f"{self.prefix} {message}")


def agreed(question: str, refusal: LabctlError | None = None) -> bool:
    """A [y/N] question at a terminal (else ``refusal`` is raised); Ctrl-D is a no, not a connection that broke off."""
    if refusal is not None and not sys.stdin.isatty():
        raise refusal
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def clock(seconds: float) -> str:
    """The one duration format: M:SS, or H:MM:SS from an hour on (as the lab's progress lines)."""
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def table_text(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], right: Collection[str] = ()) -> str:
    """Plain text, as wide as its contents so that no cell wraps; the ``right`` columns are numbers."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left")
    for row in rows:
        table.add_row(*row)
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None, force_terminal=False, highlight=False).print(table)
    return buffer.getvalue().rstrip()


@dataclass
class Outcome:
    data: dict[str, object]
    text: str = ""
    exit_code: int = 0
