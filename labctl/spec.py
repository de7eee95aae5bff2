"""What the user asks for: settings in one order everywhere (flags, LABCTL_* variables, ``labctl.toml`` here, the user
config file, defaults) so that ``labctl config`` can say where each came from, and `up`'s intent, checked up front."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labctl import validate
from labctl.errors import UsageError
from labctl.files import read_json_object, sha256_of, write_private
from labctl.keys import check_fingerprint, check_key_pair, check_private_key
from labctl.state import DEFAULT_NAME, user_dir, validate_lab_name
from labctl.ui import Outcome

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

# key (also the TOML key and, upper-cased, LABCTL_KEY) -> (default, check of a variable's or file's value, what it sets)
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
TRUST_FILE = "trusted-projects.json"  # beside the user config file
# Every setting but the name decides what runs as root on the machine, who reaches it, what is billed, where, how
# long, or where files are written here. A labctl.toml lies wherever labctl runs (a cloned repository, a shared
# folder), so it sets these only once trusted as it is now ('labctl config --trust'); untrusted, `name` alone.
GUARDED = set(SETTINGS) - {"name"}
_TOML_TYPES = {"bool": "boolean", "int": "integer", "float": "float", "list": "array", "dict": "table"}


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


def _trusted() -> dict[str, str]:
    """Trust is for a file's exact contents (its SHA-256): an edit (a pull, a colleague's commit) revokes it."""
    return {str(k): str(v) for k, v in read_json_object(user_config_path().with_name(TRUST_FILE)).items()}


def trust_project(cwd: Path | None = None) -> Outcome:
    path = (cwd or Path.cwd()) / PROJECT_FILE
    if not path.is_file():
        raise UsageError(f"There is no {PROJECT_FILE} in {path.parent}.", hint="Run this in the project's directory.")
    table, where = _read_toml(path), str(path.resolve())
    trusted = {**_trusted(), where: sha256_of(path)}
    write_private(user_config_path().with_name(TRUST_FILE), json.dumps(trusted, indent=2))
    guarded = sorted(set(table) & GUARDED)
    said = f"; it sets {', '.join(guarded)}" if guarded else ""
    return Outcome({"trusted": where}, f"Trusted {path} as it is now{said}. Any edit revokes it.")


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
        trusted = bool(project) and _trusted().get(str(self._project.resolve())) == sha256_of(self._project)
        self._project_trusted = trusted

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
        """Flags are checked where they are read, and an untrusted project file's guarded setting by ``lookup``."""
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


MAX_NODES = 16  # machines in one lab: torchrun scales further, but a lab this size is a cluster, not a lab
_HOST = re.compile(
    r"^(?:(?P<user>[A-Za-z_][A-Za-z0-9_.-]*)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(?P<port>\d+))?$"
)
_OWN_HOST_KEY = "labctl makes an Azure VM's host key itself"
_SHUTDOWN_BILLS = "on Azure the idle stop deallocates the VM; an OS shutdown would keep billing"


@dataclass(frozen=True)
class HostAddress:
    user: str | None
    host: str
    port: int = 22

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.host}:{self.port}"


def parse_host(text: str) -> HostAddress:
    """``user@host[:port]`` (IPv6 in brackets), as ssh users write it."""
    match = _HOST.match(text.strip())
    port = int(match.group("port")) if match and match.group("port") else 22
    if not match or not 0 < port < 65536:
        raise UsageError(
            f"'{text}' is not a host labctl can reach.",
            hint="Write it as user@host or user@host:port, for example azureuser@203.0.113.7:22.",
        )
    return HostAddress(match.group("user"), match.group("host").strip("[]"), port)


@dataclass
class LabSpec:
    """Empty or None is "not given", so that variables and config files still apply; ``validate`` fills defaults."""

    name: str = ""  # default: DEFAULT_NAME
    target: str = ""  # default: ssh when a host is given, else azure
    host: HostAddress | None = None  # --target ssh: the (head) machine
    workers: list[HostAddress] = field(default_factory=list)  # --target ssh: the other machines (--host again)
    nodes: int | None = None  # machines in the lab (--nodes); None: one per --host, else as the lab has (1 if new)
    gpu: bool = False
    sizes: list[str] = field(default_factory=list)
    region: str | None = None
    image: str | None = None
    subscription: str | None = None
    allow_ip: str | None = None
    ssh_key: Path | None = None
    shutdown_at: str | None = None  # HH:MM; None after `validate` only with no_shutdown
    no_shutdown: bool = False
    spot: bool = False
    yes: bool = False  # the user confirmed in advance (--yes); never the pinning of an unknown host key
    host_key_fingerprint: str | None = None  # SHA256:... of the SSH host's key, read on the machine itself
    idle_stop: float | None = None  # minutes idle before the lab stops; 0: off; None: the target's default
    idle_explicit: bool = False  # idle_stop was asked for (flag, variable, config), not a default
    idle_action: str = "stop"  # stop (deallocate on Azure, the container elsewhere) or shutdown (an SSH host)
    budget: float | None = None  # USD since creation, after which the machine stops itself
    requirements: Path | None = None  # pip's requirements file, read by ``validate`` into requirements_text
    requirements_text: str | None = None  # '' (an empty file): no packages; None: those the lab has

    def _check_nodes(self) -> None:
        hosts = 1 + len(self.workers)
        # Not asked for: on ssh the hosts given; elsewhere one for a new lab, what its record says for an existing one.
        if self.nodes is None and self.target == "ssh":
            self.nodes = hosts
        if self.nodes is None:
            return
        if not 1 <= self.nodes <= MAX_NODES:
            raise UsageError(
                f"--nodes {self.nodes} is not a number of machines labctl makes.",
                hint=f"Use 1 to {MAX_NODES} (1: one machine, the default).",
            )
        if self.target == "local" and self.nodes > 1:
            raise UsageError(
                f"--nodes {self.nodes} needs several machines; --target local is this computer only.",
                hint="Use --target azure --nodes N, or --target ssh with one --host per machine.",
            )
        if self.target == "ssh" and self.nodes != hosts:
            raise UsageError(
                f"--nodes {self.nodes} with {hosts} --host value{'s' if hosts != 1 else ''}: on --target ssh the "
                "machines are the hosts given.",
                hint="Repeat --host once per machine (the first is the head node), and drop --nodes.",
            )
        seen = {(h.host, h.port) for h in self.workers}
        if len(seen) != len(self.workers) or (self.host is not None and (self.host.host, self.host.port) in seen):
            raise UsageError("The same machine is given twice with --host.", hint="Give each machine once.")
        if self.host_key_fingerprint is not None and self.workers:
            raise UsageError(
                "--host-key-fingerprint pins one machine's key, and several --host values are given.",
                hint="Add each machine's key to ~/.ssh/known_hosts first (or confirm each when asked).",
            )

    def _check_flags_fit_target(self) -> None:
        """A flag only one kind of target reads is refused elsewhere, never ignored."""
        given = {  # flag: the one kind of target that reads it, whether it was given, and why where it is not plain
            "--host": ("ssh", self.host is not None or bool(self.workers), ""),
            "--host-key-fingerprint": ("ssh", self.host_key_fingerprint is not None, _OWN_HOST_KEY),
            "--idle-action shutdown": ("ssh", self.idle_action == "shutdown", _SHUTDOWN_BILLS),
            "--size": ("azure", bool(self.sizes), ""),
            "--region": ("azure", self.region is not None, ""),
            "--subscription": ("azure", self.subscription is not None, ""),
            "--allow-ip": ("azure", self.allow_ip is not None, ""),
            "--spot": ("azure", self.spot, ""),
            "--budget": ("azure", self.budget is not None, ""),
        }
        for target in ("ssh", "azure"):
            used = [flag for flag, (reader, on, _) in given.items() if on and reader == target]
            if used and target != self.target:
                whys = [given[f][2] for f in used if given[f][2] and self.target == "azure"]
                why = f" ({'; '.join(whys)})" if whys else ""
                raise UsageError(
                    f"{', '.join(used)} {'applies' if len(used) == 1 else 'apply'} only to --target {target}, "
                    f"not to --target {self.target}{why}.",
                    hint=f"Drop {'it' if len(used) == 1 else 'them'}"
                    + ("." if why else f", or use --target {target}."),
                )

    def validate(self) -> LabSpec:
        if self.no_shutdown and self.shutdown_at:
            raise UsageError("--shutdown-at and --no-shutdown contradict each other.", hint="Keep one of them.")
        self.target = validate.check_target(self.target or ("ssh" if self.host is not None else "azure"))
        self.shutdown_at = None if self.no_shutdown else (self.shutdown_at or "19:00")
        self.name = validate_lab_name(self.name or DEFAULT_NAME)
        if self.target == "ssh" and self.host is None:
            raise UsageError("--target ssh needs --host user@host[:port].", hint="Name the machine to use.")
        self._check_flags_fit_target()
        self._check_nodes()
        if self.host_key_fingerprint is not None:
            self.host_key_fingerprint = check_fingerprint(self.host_key_fingerprint)
        from labctl.pricing import choose_sizes

        # Azure's alone are None on other targets (_check_flags_fit_target refused them).
        checks = [(self.subscription, validate.check_subscription), (self.region, validate.check_region)]
        checks += [(self.allow_ip, validate.check_allow_ip), (self.shutdown_at, validate.check_shutdown_at)]
        for value, check in checks:
            if value is not None:
                check(value)
        choose_sizes(self.sizes, self.gpu)  # a size that is no size, or a CPU size with --gpu
        if self.requirements is not None:
            self.requirements_text = validate.read_requirements(self.requirements)
        if self.ssh_key is not None:
            check_key_pair(self.ssh_key.expanduser(), "--ssh-key", need_pub=self.target == "azure")
        return self
