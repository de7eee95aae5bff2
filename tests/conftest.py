"""Shared fixtures: every test runs in a clean environment of its own, never the user's.

The caller's home, Azure login, labctl settings and proxies would otherwise decide what a test sees: a test that
passes for one person would fail for another, or read a real login. Session fixtures (the Docker engine, the test
images) are set up before these and keep the caller's environment, which building images from the network needs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_CALLER_PREFIXES = ("AZURE_", "IDENTITY_", "MSI_", "LABCTL_")
_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")
_XDG_HOMES = {
    "XDG_CONFIG_HOME": ".config",
    "XDG_CACHE_HOME": ".cache",
    "XDG_DATA_HOME": ".local/share",
    "XDG_STATE_HOME": ".local/state",
}

# Read before any fixture runs: a variable that a fixture or the suite's own support code sets later (the test
# base image's tag in LABCTL_BASE_IMAGE) is the suite's, not the caller's, and stays.
CALLER = {
    name: value for name, value in os.environ.items() if name.startswith(_CALLER_PREFIXES) or name.upper() in _PROXIES
}


def clean_environment_in(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home of its own (with its XDG folders), and no Azure, identity, labctl or proxy variable of the person
    running the tests; also for a module's shared lab, which is made before any test's own fixtures."""
    for name, value in CALLER.items():
        if os.environ.get(name) == value:
            monkeypatch.delenv(name)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for name, folder in _XDG_HOMES.items():
        monkeypatch.setenv(name, str(home / folder))
    monkeypatch.setenv("LABCTL_STATE_DIR", str(tmp_path_factory.mktemp("labctl-state")))
    # `down` and `fetch` copy results and the workspace here: never into the directory the tests run from.
    monkeypatch.setenv("LABCTL_RESULTS_DIR", str(tmp_path_factory.mktemp("labctl-results")))
    return home


@pytest.fixture(autouse=True)
def isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's labctl state directory, in a clean environment of its own."""
    clean_environment_in(monkeypatch, tmp_path_factory)
    return Path(os.environ["LABCTL_STATE_DIR"])
