"""The CLI's contract: help lists the commands, heavy imports stay lazy, errors carry an exit code."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from labctl.cli import app

runner = CliRunner()


def test_help_lists_the_core_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("up", "open", "run-lab", "status", "down"):
        assert f" {command} " in result.output


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys; from labctl.cli import app\n"
        "heavy = [m for m in ('torch', 'azure', 'paramiko', 'docker') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.strip() == ""
