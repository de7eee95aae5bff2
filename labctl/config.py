"""Settings, resolved in one order everywhere: flags, then LABCTL_* variables, then ``labctl.toml`` in the
current directory (project), then the user config file, then built-in defaults.

One resolver keeps every command consistent and lets ``labctl config`` say where each value came from.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labctl.errors import UsageError
from labctl.ui import Outcome

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

# key -> (default, help). Keys are also the TOML keys and, upper-cased, the LABCTL_* variable names.
SETTINGS: dict[str, tuple[Any, str]] = {
    "name": ("lab", "default lab name for 'up'"),
    "target": ("azure", "azure, ssh or local"),
    "region": ("eastus", "Azure region, or 'auto'"),
    "size": (None, "Azure VM size (default: Standard_D4s_v5, or Standard_NC4as_T4_v3 with --gpu)"),
    "subscription": (None, "Azure subscription id"),
    "allow_ip": (None, "CIDR allowed to reach SSH (default: your public IP)"),
    "ssh_key": (None, "your private SSH key (default: a key pair made for each lab)"),
    "shutdown_at": ("19:00", "daily auto-shutdown time, HH:MM local"),
    "image": (None, "container image to use as is instead of building the lab image"),
    "base_image": (None, "base image the lab image is built FROM (default: a pinned pytorch/pytorch tag)"),
    "results_dir": ("labctl-results", "where run-lab puts fetched results"),
}
# The type a value in a config file must have. Every setting today is text (TOML has no null, so "unset"
# is spelled by leaving the key out); checking here turns `shutdown_at = 1900` into a clear error instead
# of a TypeError deep inside `up`.
SETTING_TYPES: dict[str, type] = {key: str for key in SETTINGS}
ENV_PREFIX = "LABCTL_"
PROJECT_FILE = "labctl.toml"


def user_config_path() -> Path:
    env = os.environ.get("LABCTL_CONFIG")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir("labctl", appauthor=False)) / "config.toml"


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"The config file {path} could not be read: {exc}.", hint="Fix or remove it.") from None
    table = data.get("labctl", data)
    if not isinstance(table, dict):
        raise UsageError(f"The config file {path} has no [labctl] table.", hint="Put settings under [labctl].")
    unknown = sorted(set(table) - set(SETTINGS))
    if unknown:
        raise UsageError(
            f"The config file {path} has unknown settings: {', '.join(unknown)}.",
            hint=f"Known settings: {', '.join(SETTINGS)}.",
        )
    for key, value in table.items():
        expected = SETTING_TYPES[key]
        if not isinstance(value, expected):
            raise UsageError(
                f"The config file {path} sets {key} to {value!r}, a TOML {_toml_type(value)}, "
                f"but {key} must be a {_toml_type_name(expected)}.",
                hint=f'Write it as a quoted string ({key} = "...") or remove the line.',
            )
    return {str(k): v for k, v in table.items()}


def _toml_type_name(kind: type) -> str:
    """Name a Python type the way a TOML author would, since that is the file the user has to edit."""
    return {
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "float",
        list: "array",
        dict: "table",
    }.get(kind, kind.__name__)


def _toml_type(value: object) -> str:
    for kind in (bool, str, int, float, list, dict):  # bool before int: True is an int in Python
        if isinstance(value, kind):
            return _toml_type_name(kind)
    return "date/time" if hasattr(value, "isoformat") else type(value).__name__


@dataclass(frozen=True)
class Setting:
    key: str
    value: Any
    source: str


class Settings:
    """The resolved settings; ``get(key, flag)`` honours a flag given on the command line first."""

    def __init__(self, cwd: Path | None = None) -> None:
        cwd = cwd or Path.cwd()
        self._files: list[tuple[str, dict[str, Any]]] = [
            (str(cwd / PROJECT_FILE), _read_toml(cwd / PROJECT_FILE)),
            (str(user_config_path()), _read_toml(user_config_path())),
        ]

    def lookup(self, key: str, flag: Any = None) -> Setting:
        if key not in SETTINGS:
            raise KeyError(key)
        if flag is not None:
            return Setting(key, flag, "flag")
        env_name = ENV_PREFIX + key.upper()
        if os.environ.get(env_name):
            return Setting(key, os.environ[env_name], f"environment ({env_name})")
        for path, table in self._files:
            if key in table:
                return Setting(key, table[key], path)
        return Setting(key, SETTINGS[key][0], "default")

    def get(self, key: str, flag: Any = None) -> Any:
        return self.lookup(key, flag).value

    def all(self) -> list[Setting]:
        return [self.lookup(key) for key in SETTINGS]


def show_config() -> Outcome:
    settings = Settings().all()
    data: dict[str, object] = {s.key: {"value": s.value, "source": s.source} for s in settings}
    width = max(len(s.key) for s in settings)
    lines = [f"{s.key:<{width}}  {s.value if s.value is not None else '-'!s:<24}  ({s.source})" for s in settings]
    return Outcome(data, "\n".join(lines))
