"""``Host labctl-<lab>`` entries, so ``ssh``, VS Code Remote-SSH, rsync and scp reach a lab with its pinned key.

They live in ``~/.ssh/labctl/`` (0600, one known_hosts per lab); ``~/.ssh/config`` gets one ``Include`` line, once
the user agreed."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from labctl.errors import NotReady, UsageError
from labctl.files import make_private_dir, write_private
from labctl.hostkeys import normalize
from labctl.state import LabRecord, validate_lab_name

ALIAS_PREFIX = "labctl-"
_BEGIN = "# labctl: begin "
_END = "# labctl: end "
HEADER = (
    "# Written by labctl: one block per lab, replaced by 'labctl ssh-config' and removed by 'labctl down'.\n"
    "# Edits inside a block are lost when labctl rewrites it.\n"
)


class Paths:
    def __init__(self, home: Path | None = None) -> None:
        self.home = home or Path.home()
        self.ssh_dir = self.home / ".ssh"
        self.user_config = self.ssh_dir / "config"
        self.labctl_dir = self.ssh_dir / "labctl"
        self.config = self.labctl_dir / "config"
        self.declined_marker = self.labctl_dir / "include-declined"

    def known_hosts(self, lab: str) -> Path:
        return self.labctl_dir / f"{validate_lab_name(lab)}.known_hosts"


@dataclass(frozen=True)
class HostEntry:
    lab: str
    host: str
    port: int
    user: str
    identity_file: Path
    host_key: str  # the pinned public key, "ssh-ed25519 AAAA..."
    jupyter_port: int  # on the machine's loopback
    local_port: int  # on this computer's loopback

    @property
    def alias(self) -> str:
        return host_alias(self.lab)

    def __post_init__(self) -> None:
        """A value that could change what ``ssh`` does is refused here, so no entry holds one."""
        validate_lab_name(self.lab)
        check_host(self.host)
        _safe(
            self.user,
            "The user name",
            r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}",
            "Use letters, digits, '.', '_' and '-', starting with a letter, digit or '_'.",
        )
        for what, port in (("port", self.port), ("Jupyter port", self.jupyter_port), ("local port", self.local_port)):
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise UsageError(f"The {what} {port!r} is not a TCP port.", hint="Use a number from 1 to 65535.")
        check_path(self.identity_file, "The SSH key path")
        normalize(self.host_key)


def entry_for(record: LabRecord, local_port: int | None = None) -> HostEntry:
    """The entry for a lab's record; the Jupyter forward uses the same port here as on the machine by default."""
    head = record.nodes[0]
    if not head.host:
        raise UsageError(
            f"Lab '{record.name}' runs on this computer; there is no machine to reach over SSH.",
            hint=f"For a shell in the lab container: docker exec -it {ALIAS_PREFIX}{record.name} bash",
        )
    if not record.ssh_key_path or not head.host_key or not head.user:
        raise NotReady(
            f"Lab '{record.name}' does not record how to reach its machine yet.",
            hint="Run 'labctl up' for it again to finish creating it.",
        )
    return HostEntry(
        lab=record.name,
        host=head.host,
        port=head.port,
        user=head.user,
        identity_file=Path(record.ssh_key_path).expanduser().absolute(),
        host_key=head.host_key,
        jupyter_port=record.jupyter_port,
        local_port=local_port or record.jupyter_port,
    )


def host_alias(lab: str) -> str:
    return ALIAS_PREFIX + validate_lab_name(lab)


def _safe(value: str, what: str, pattern: str, hint: str) -> str:
    """Refused, not escaped: a newline, quote or ``%``/``${`` token in a config line would change what ssh does."""
    if not re.fullmatch(pattern, value, re.ASCII):
        raise UsageError(f"{what} {value!r} cannot go into an SSH config entry.", hint=hint)
    return value


def check_host(host: str) -> str:
    return _safe(
        host,
        "The host name",
        r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|(?=.*:)[0-9A-Fa-f:.]{2,45}",
        "Use a DNS name or an IP address (letters, digits, '.', '-' and ':' only).",
    )


def check_path(path: Path, what: str) -> Path:
    # No quotes, backslashes, '%' or '$' (ssh expands '%x' and '${X}' in paths), no '#', nothing below a space and
    # no leading '~'; a space is fine inside quotes.
    text = path.as_posix()
    if not (path.is_absolute() and re.fullmatch(r"[A-Za-z0-9._/+@=,:-][A-Za-z0-9._/+@=,:~ -]*", text, re.ASCII)):
        raise UsageError(
            f"{what} {text!r} cannot go into an SSH config entry.",
            hint="It must be an absolute path without quotes, backslashes, '%', '$', '#' or control characters; "
            "move the file to such a path.",
        )
    return path


def _value(text: str) -> str:
    return f'"{text}"' if " " in text else text


def render_block(entry: HostEntry, known_hosts: Path) -> str:
    check_path(known_hosts, "The known_hosts path")
    lines = [
        f"{_BEGIN}{entry.lab}",
        f"Host {entry.alias}",
        f"    HostName {entry.host}",
        f"    Port {entry.port}",
        f"    User {entry.user}",
        f"    IdentityFile {_value(entry.identity_file.as_posix())}",
        "    IdentitiesOnly yes",
        f"    HostKeyAlias {entry.alias}",
        f"    UserKnownHostsFile {_value(known_hosts.as_posix())}",
        f"    GlobalKnownHostsFile {_value(known_hosts.as_posix())}",
        "    StrictHostKeyChecking yes",
        "    UpdateHostKeys no",
        "    CheckHostIP no",
        f"    LocalForward 127.0.0.1:{entry.local_port} 127.0.0.1:{entry.jupyter_port}",
        f"{_END}{entry.lab}",
    ]
    return "\n".join(lines) + "\n"


def _split_blocks(text: str) -> tuple[list[str], dict[str, str]]:
    """(lines outside any block, {lab: block}); a block cut short stays outside as it is, with what follows it."""
    outside: list[str] = []
    blocks: dict[str, str] = {}
    current: str | None = None
    body: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.startswith(_BEGIN):
            outside += body
            current, body = line[len(_BEGIN) :].strip(), [line]
        elif current is not None:
            body.append(line)
            if line.strip() == f"{_END}{current}":
                blocks[current] = "".join(body)
                current, body = None, []
        else:
            outside.append(line)
    return outside + body, blocks


def write_entry(entry: HostEntry, paths: Paths | None = None) -> Path:
    """Write (or replace) the lab's block and its pinned host key; return labctl's config file."""
    paths = paths or Paths()
    make_private_dir(paths.ssh_dir)
    make_private_dir(paths.labctl_dir)
    known = paths.known_hosts(entry.lab)
    write_private(known, f"{entry.alias} {normalize(entry.host_key)}\n")
    block = render_block(entry, known)
    outside, blocks = _read(paths)
    blocks[entry.lab] = block
    write_private(paths.config, _join(outside, blocks))
    return paths.config


def remove_entry(lab: str, paths: Paths | None = None) -> bool:
    """True if there was a block."""
    paths = paths or Paths()
    validate_lab_name(lab)
    paths.known_hosts(lab).unlink(missing_ok=True)
    outside, blocks = _read(paths)
    if blocks.pop(lab, None) is None:
        return False
    write_private(paths.config, _join(outside, blocks))
    return True


def entries(paths: Paths | None = None) -> list[str]:
    return list(_read(paths or Paths())[1])


def _read(paths: Paths) -> tuple[list[str], dict[str, str]]:
    return _split_blocks(paths.config.read_text() if paths.config.is_file() else HEADER)


def _join(outside: list[str], blocks: dict[str, str]) -> str:
    head = "".join(outside)
    if head and not head.endswith("\n"):
        head += "\n"
    return head + "".join(f"\n{block}" for block in blocks.values())


# ---------------------------------------------------------------------------------------------- Include


class IncludeState(str, Enum):
    PRESENT = "present"  # ~/.ssh/config already includes labctl's file before any Host or Match
    ADDED = "added"
    DECLINED = "declined"  # the user said no (now or earlier); `ssh -F FILE` still works
    NOT_ASKED = "not asked"  # no one could be asked (no terminal): nothing written, asked again next time


def _includes_at_top(text: str, paths: Paths) -> bool:
    """An Include of labctl's file before the first Host or Match, where it applies to all."""
    wanted = {paths.config.as_posix(), f'"{paths.config.as_posix()}"', "~/.ssh/labctl/config"}
    if paths.home == Path.home():
        wanted.add('"~/.ssh/labctl/config"')
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.replace("=", " ", 1).partition(" ")
        if keyword.lower() in ("host", "match"):
            return False
        if keyword.lower() == "include" and any(arg in wanted for arg in rest.split()):
            return True
    return False


def ensure_include(
    confirm: Callable[[str], bool | None], paths: Paths | None = None, *, ask_again: bool = False
) -> IncludeState:
    """The Include line at the top of ``~/.ssh/config`` once ``confirm`` agreed (None: no one could answer); a "no"
    is kept unless ``ask_again``. A symlinked config (dotfiles) is edited where it points, keeping its mode."""
    paths = paths or Paths()
    target = paths.user_config.resolve() if paths.user_config.is_symlink() else paths.user_config
    text = target.read_text() if target.is_file() else ""
    if _includes_at_top(text, paths):
        return IncludeState.PRESENT
    if paths.declined_marker.exists() and not ask_again:
        return IncludeState.DECLINED
    check_path(paths.config, "labctl's SSH config path")
    line = f"Include {_value(paths.config.as_posix())}"
    question = (
        f"Add the line '{line}' at the top of {paths.user_config}, so that 'ssh {ALIAS_PREFIX}<lab>' works everywhere?"
    )
    make_private_dir(paths.ssh_dir)
    make_private_dir(paths.labctl_dir)
    answer = confirm(question)
    if answer is None:
        return IncludeState.NOT_ASKED
    if not answer:
        write_private(paths.declined_marker, "The user declined the Include line; 'labctl ssh-config' asks again.\n")
        return IncludeState.DECLINED
    paths.declined_marker.unlink(missing_ok=True)
    mode = target.stat().st_mode & 0o777 if target.is_file() else 0o600
    note = "# Added by labctl: its labs' entries (remove this line to stop using them).\n"
    write_private(target, f"{note}{line}\n\n{text}" if text else f"{note}{line}\n", mode)
    return IncludeState.ADDED
