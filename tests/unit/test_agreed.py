"""A [y/N] question: only a yes agrees, and the end of input is a no, never "the connection broke off"."""

from __future__ import annotations

import io

import pytest

from labctl.ui import agreed


@pytest.mark.parametrize(
    ("typed", "answer"), [("y\n", True), (" YES \n", True), ("ye\n", False), ("\n", False), ("", False)]
)
def test_only_a_yes_agrees_and_ctrl_d_is_a_no(monkeypatch: pytest.MonkeyPatch, typed: str, answer: bool) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(typed))
    assert agreed("Delete it?") is answer
