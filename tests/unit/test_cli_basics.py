"""The CLI's contract: help lists the commands, heavy imports stay lazy, errors carry an exit code."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
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


def test_every_command_has_an_example_and_readable_placeholders() -> None:
    import re

    from typer.testing import CliRunner

    from labctl.cli import app

    runner = CliRunner()
    commands = [info.name for info in app.registered_commands]
    assert {"pull", "push", "run", "cancel", "ssh-config"} <= set(commands)
    for command in commands:
        assert command is not None
        text = runner.invoke(app, [command, "--help"]).stdout
        assert "Example" in text, command
        assert not re.search(r"<(str|int|float|path|list\[[a-z]+\])>", text), f"{command}: {text}"
    up = runner.invoke(app, ["up", "--help"]).stdout
    assert "--allow-ip CIDR" in up and "--size SIZE" in up and "--ssh-key PATH" in up
    assert "PATH..." in runner.invoke(app, ["push", "--help"]).stdout


def test_a_connection_reset_mid_command_is_named_plainly_not_as_a_bug(capsys: pytest.CaptureFixture[str]) -> None:
    """A peer that resets the connection (a real socket, a real requests call), as a dropped SSH relay does."""
    import socket
    import struct
    import threading

    import requests
    import typer

    from labctl import cli

    server = socket.create_server(("127.0.0.1", 0))

    def reset_once() -> None:
        conn, _ = server.accept()
        conn.recv(1024)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # linger 0: an RST, not a FIN

    threading.Thread(target=reset_once, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/"

    def action(ui: object) -> cli.Outcome:
        requests.get(url, timeout=10)
        raise AssertionError("the server answered")

    with pytest.raises(typer.Exit) as exited:
        cli._run(action)
    server.close()
    err = capsys.readouterr().err
    assert exited.value.exit_code == 1
    assert "connection broke off" in err and "unexpected" not in err and "Traceback" not in err, err
    assert err.count("\n") == 1, err
