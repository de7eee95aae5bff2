"""Settings, resolved in one order everywhere (flags, LABCTL_* variables, ``labctl.toml`` in the current directory,
the user config file, defaults), so that ``labctl config`` can say where each value came from."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labctl import validate
from labctl.errors import UsageError
from labctl.keys import check_private_key
from labctl.state import user_dir, validate_lab_name
from labctl.ui import Outcome

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

# key -> (default, what a value from a variable or file must pass, what it decides). Keys are also the TOML keys
# and, upper-cased, the LABCTL_* variable names.
SETTINGS: dict[str, tuple[Any, Callable[[str, str], object] | None, str]] = {
    "name": ("lab", validate_lab_name, "the lab's name when 'up' is given none"),
    "target": ("azure", validate.check_target, "where the lab is made (on Azure, billed to you)"),
    "region": ("eastus", validate.check_region, "the Azure region the lab is made and billed in"),
    "size": (None, validate.check_size_name, "the VM size you pay for by the hour"),
    "subscription": (None, validate.check_subscription, "the Azure subscription that is billed"),
    "allow_ip": (None, validate.check_allow_ip, "who may reach the machine over SSH"),
    "ssh_key": (None, lambda v, w: check_private_key(Path(v).expanduser(), w), "the key that logs in to the machine"),
    "shutdown_at": ("19:00", validate.check_shutdown_at, "when the VM shuts itself down each day"),
    "image": (None, validate.check_image_ref, "the container image that runs your lab"),
    "base_image": (None, validate.check_image_ref, "the image the lab image is built from, run as root on the machine"),
    "results_dir": ("labctl-results", validate.check_directory, "where labctl writes files on this computer"),
    "idle_stop": (None, None, "how long an idle VM keeps running, and costing"),
    "budget": (None, None, "the spend after which the lab stops itself"),
}
ENV_PREFIX = "LABCTL_"
PROJECT_FILE = "labctl.toml"
# Every setting but the name decides what runs as root on the machine, who can reach it, what is billed, where, for
# how long, or where files are written here. A labctl.toml lies in whatever directory labctl runs from (a cloned
# repository, a shared folder), so it may set these only once the user has trusted that file as it is now
# ('labctl config --trust'); flags, variables and the user's own file may. It sets `name` alone.
GUARDED = set(SETTINGS) - {"name"}


def user_config_path() -> Path:
    return Path(os.environ.get("LABCTL_CONFIG") or user_dir("config") / "config.toml")


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
    for key, value in table.items():  # every setting is text: TOML has no null, so "unset" is a missing key
        if not isinstance(value, str):
            text = str(value).lower() if isinstance(value, bool) else repr(value)
            kind = _TOML_TYPES.get(type(value).__name__, "date/time")
            raise UsageError(
                f"The config file {path} sets {key} to {text}, a TOML {kind}, but {key} must be a string.",
                hint=f'Write it as a quoted string ({key} = "...") or remove the line.',
            )
    return table


_TOML_TYPES = {"bool": "boolean", "int": "integer", "float": "float", "list": "array", "dict": "table"}


def _trusted() -> dict[str, str]:
    """Trust is for a file's exact contents (its SHA-256): an edit (a pull, a colleague's commit) revokes it."""
    try:
        data = json.loads(_trust_file().read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _trust_file() -> Path:
    return user_config_path().with_name("trusted-projects.json")


def trust_project(cwd: Path | None = None) -> Outcome:
    from labctl.files import write_private

    path = (cwd or Path.cwd()) / PROJECT_FILE
    if not path.is_file():
        raise UsageError(f"There is no {PROJECT_FILE} in {path.parent}.", hint="Run this in the project's directory.")
    table = _read_toml(path)
    trusted = _trusted()
    trusted[str(path.resolve())] = _digest(path)
    write_private(_trust_file(), json.dumps(trusted, indent=2))
    guarded = sorted(set(table) & GUARDED)
    said = f"; it sets {', '.join(guarded)}" if guarded else ""
    return Outcome({"trusted": str(path.resolve())}, f"Trusted {path} as it is now{said}. Any edit revokes it.")


@dataclass(frozen=True)
class Setting:
    key: str
    value: Any
    source: str
    trusted: bool = True


class Settings:
    def __init__(self, cwd: Path | None = None) -> None:
        self._project = (cwd or Path.cwd()) / PROJECT_FILE
        project = _read_toml(self._project)
        self._files = [(str(self._project), project), (str(user_config_path()), _read_toml(user_config_path()))]
        self._project_trusted = bool(project) and _trusted().get(str(self._project.resolve())) == _digest(self._project)

    def lookup(self, key: str, flag: Any = None) -> Setting:
        """Refused when an untrusted project file decides a guarded one."""
        setting = self._find(key, flag)
        if not setting.trusted:
            flag_name = "--" + key.replace("_", "-")
            raise UsageError(
                f"{setting.source} sets {key} = {setting.value!r}, which decides {SETTINGS[key][2]}, and labctl does "
                "not take that from a project file it has not been told to trust.",
                hint=f"Read the file; if you trust it as it is, run 'labctl config --trust' in {self._project.parent}. "
                f"Otherwise pass {flag_name} or set {ENV_PREFIX}{key.upper()} yourself, or remove the line.",
            )
        return setting

    def get(self, key: str, flag: Any = None) -> Any:
        return self.lookup(key, flag).value

    def _find(self, key: str, flag: Any = None) -> Setting:
        if flag is not None:
            return Setting(key, flag, "flag")
        env_name = ENV_PREFIX + key.upper()
        if os.environ.get(env_name):
            return Setting(key, os.environ[env_name], f"environment ({env_name})")
        for path, table in self._files:
            if key in table:
                trusted = key not in GUARDED or path != str(self._project) or self._project_trusted
                return Setting(key, table[key], path, trusted)
        return Setting(key, SETTINGS[key][0], "default")

    def check(self) -> None:
        """Every variable labctl reads, and every setting from a variable or file. Flags are checked where they are
        read, and an untrusted project file's guarded setting by ``lookup``."""
        for name, check_variable in validate.ENV_CHECKS.items():
            if os.environ.get(name):
                check_variable(os.environ[name], name)
        for key, (_, check, _) in SETTINGS.items():
            setting, env = self._find(key), ENV_PREFIX + key.upper()
            if check and setting.source != "default" and setting.trusted:
                check(str(setting.value), env if setting.source.endswith(f"({env})") else f"{key} in {setting.source}")

    def all(self) -> list[Setting]:
        return [self._find(key) for key in SETTINGS]


def show_config() -> Outcome:
    settings = Settings().all()
    data: dict[str, object] = {
        s.key: {"value": s.value, "source": s.source, **({} if s.trusted else {"trusted": False})} for s in settings
    }
    width = max(len(s.key) for s in settings)
    lines = [
        f"{s.key:<{width}}  {s.value if s.value is not None else '-'!s:<24}  ({s.source}"
        + ("" if s.trusted else ", not trusted: 'labctl config --trust' accepts it")
        + ")"
        for s in settings
    ]
    return Outcome(data, "\n".join(lines))
