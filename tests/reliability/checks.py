"""What every refused input must look like, whichever command, option, variable or file it came through."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from typer.testing import CliRunner, Result

from labctl.cli import app
from tests.reliability.conftest import World, lab_record

runner = CliRunner()


@dataclass(frozen=True)
class Case:
    """One bad input: the command line, what surrounds it, and what the refusal must say.

    ``words`` must all appear in the error paragraph (placeholders such as ``{k}`` are filled in from the
    world); ``lab`` puts a lab record on disk first (see ``lab_record``); ``user`` and ``project`` are the
    texts of the user config file and of ./labctl.toml.
    """

    id: str
    argv: tuple[str, ...]
    words: tuple[str, ...]
    code: int = 2
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    project: str | None = None
    lab: str | None = None
    labs: tuple[str, ...] = ()


@dataclass
class Before:
    files: set[str]
    contents: dict[str, bytes]
    requests: int
    hits: int


def prepare(world: World, case: Case) -> None:
    if case.user is not None:
        world.user_config.write_text(world.fill(case.user))
    if case.project is not None:
        (world.project / "labctl.toml").write_text(world.fill(case.project))
    if case.lab is not None:
        lab_record(world, case.lab)
    for name in case.labs:
        lab_record(world, "ready", name)


def before(world: World) -> Before:
    files = world.snapshot()
    contents = {p: _read(p) for p in files}
    return Before(files, contents, len(world.arm.requests), world.tripwire.hits)


def _read(path: str) -> bytes:
    from pathlib import Path

    p = Path(path)
    return p.read_bytes() if p.is_file() and not p.is_symlink() else b""


def invoke(world: World, argv: tuple[str, ...], env: dict[str, str]) -> Result:
    filled: dict[str, Any] = {k: world.fill(v) for k, v in env.items()}
    return runner.invoke(app, [world.fill(a) for a in argv], env=filled)


_SENTENCE = re.compile(r"[.!?:;]\s+\S")


def error_paragraph(result: Result) -> str:
    """The one 'Error:' line the CLI printed, without the prefix."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, f"expected one error paragraph, got:\n{result.output}"
    return errors[0][len("Error:") :].strip()


def assert_refused(world: World, case: Case, result: Result, was: Before) -> None:
    output = result.output
    assert "Traceback" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == case.code, f"exit {result.exit_code}, expected {case.code}:\n{output}"
    text = error_paragraph(result)
    assert not text.lower().startswith("unexpected"), text
    for word in case.words:
        assert world.fill(word) in text, f"{world.fill(word)!r} not named in: {text}"
    # The way out: a second sentence (labctl's hint) or click's pointer to --help.
    assert _SENTENCE.search(text) or "--help" in result.stderr, f"no way out given: {text}"
    assert_untouched(world, was)


def assert_untouched(world: World, was: Before) -> None:
    writes = world.arm_writes(was.requests)
    assert writes == [], f"ARM writes: {writes}"
    assert world.arm.group_names() == [] and world.arm.resource_ids() == []
    assert world.tripwire.hits == was.hits, "labctl tried to reach the lab's machine"
    now = world.snapshot()
    assert now - was.files == set(), f"new files: {sorted(now - was.files)}"
    for path, data in was.contents.items():
        assert _read(path) == data, f"{path} was changed"
