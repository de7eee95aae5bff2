"""Shared fixtures: every test gets its own labctl state directory, never the user's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("labctl-state")
    monkeypatch.setenv("LABCTL_STATE_DIR", str(state))
    yield state
