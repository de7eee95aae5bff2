"""The house rules that docs/ARCHITECTURE.md states, checked on the code as it is.

A function fits a screen (80 lines), and workflows never name a target: what differs between Azure, an SSH host
and this computer is a capability the target declares. Each rule is checked on a planted violation first, so a
check that can no longer fail is noticed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCREEN = 80
CODE = [*sorted((ROOT / "labctl").rglob("*.py")), *sorted((ROOT / "lab" / "cifarlab").rglob("*.py"))]
CODE += sorted((ROOT / "templates").glob("*.py"))
NAMES_A_TARGET = re.compile(
    r"AzureTarget|SSHTarget|LocalTarget|labctl\.targets\.(azure|ssh|local)|== *[\"'](azure|ssh|local)[\"']"
    r"|kind *[!=]= *[\"']"
)


def long_functions(source: str, limit: int = SCREEN) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                found.append((node.name, length))
    return found


def target_mentions(source: str) -> list[str]:
    return [line.strip() for line in source.splitlines() if NAMES_A_TARGET.search(line)]


def test_the_checks_catch_what_they_look_for() -> None:
    planted = "def f():\n" + "    x = 1\n" * SCREEN
    assert long_functions(planted) == [("f", SCREEN + 1)]
    assert long_functions("def f():\n" + "    x = 1\n" * (SCREEN - 1)) == []
    assert target_mentions('if record.target == "azure":\n    pass\n') == ['if record.target == "azure":']
    assert target_mentions("from labctl.targets.azure import AzureTarget\n")
    assert not target_mentions("target = get_target(record.target)\n")


def test_every_function_fits_a_screen() -> None:
    assert CODE, "no code found"
    offenders = [
        f"{path.relative_to(ROOT)}:{name} ({n} lines)" for path in CODE for name, n in long_functions(path.read_text())
    ]
    assert offenders == []


def test_workflows_never_name_a_target() -> None:
    workflows = sorted((ROOT / "labctl" / "workflows").glob("*.py"))
    assert workflows
    offenders = [f"{p.relative_to(ROOT)}: {line}" for p in workflows for line in target_mentions(p.read_text())]
    assert offenders == []
