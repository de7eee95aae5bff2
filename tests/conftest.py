"""Shared fixtures: every test gets its own labctl state and results directories, never the user's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("labctl-state")
    monkeypatch.setenv("LABCTL_STATE_DIR", str(state))
    # `down` and `fetch` copy results and the workspace here: never into the directory the tests run from.
    monkeypatch.setenv("LABCTL_RESULTS_DIR", str(tmp_path_factory.mktemp("labctl-results")))
    yield state
