"""``Host labctl-<lab>`` entries in ``~/.ssh/labctl/`` (0600, one known_hosts per lab), so ssh, VS Code Remote-SSH,
rsync and scp reach a lab with its pinned key; ``~/.ssh/config`` gets one ``Include`` line once the user agreed."""

from __future__ import annotations

import getpass
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from labctl.errors import LabctlError, NotReady, UsageError
from labctl.files import make_private_dir, write_private
from labctl.keys import normalize
from labctl.state import LabRecord, NodeRecord, validate_lab_name

ALIAS_PREFIX = "labctl-"
HEADER = (
    "# Written by labctl: one block per lab, replaced by 'labctl ssh-config' and removed by 'labctl down'.\n"
    "# Edits inside a block are lost when labctl rewrites it.\n"
)
# A lab's block and the blank lines before it; one cut short (a begin before its end) is no block: what follows stays.
_BLOCK = re.compile(
    r"(?:^\n)*^# labctl: begin (\S+)[ \t]*\n(?:(?!# labctl: begin ).*\n)*?# labctl: end \1[ \t]*$\n?", re.M
)
_HOST = r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|(?=.*:)[0-9A-Fa-f:.]{2,45}"  # a DNS name or an IP
_USER = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}"


def config_path() -> Path:
    return Path.home() / ".ssh" / "labctl" / "config"


def known_hosts_path(lab: str) -> Path:
    return config_path().with_name(f"{validate_lab_name(lab)}.known_hosts")


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
        return ALIAS_PREFIX + self.lab

    def __post_init__(self) -> None:
        """Refused, not escaped: a newline, quote or ``%``/``${`` token in a config line would change what ssh does."""
        validate_lab_name(self.lab)
        for what, value, pattern, hint in (
            ("The host name", self.host, _HOST, "Use a DNS name or IP address (letters, digits, '.', '-', ':' only)."),
            ("The user name", self.user, _USER, "Use letters, digits, '.', '_' and '-', not starting with '.' or '-'."),
        ):
            if not re.fullmatch(pattern, value, re.ASCII):
                raise UsageError(f"{what} {value!r} cannot go into an SSH config entry.", hint=hint)
        for what, port in (("port", self.port), ("Jupyter port", self.jupyter_port), ("local port", self.local_port)):
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise UsageError(f"The {what} {port!r} is not a TCP port.", hint="Use a number from 1 to 65535.")
        check_path(self.identity_file, "The SSH key path")
        normalize(self.host_key)


def reach(record: LabRecord, node: int = 0) -> tuple[NodeRecord, str]:
    """Node ``node`` and the user to log in as, refused where a half-made lab does not record how to reach it."""
    if not 0 <= node < len(record.nodes):
        count = len(record.nodes)
        raise LabctlError(
            f"Lab '{record.name}' has {count} node{'s' if count != 1 else ''}; there is no node {node}.",
            hint="'labctl status' lists the lab's nodes.",
        )
    found = record.nodes[node]
    needed = {"host": found.host, "SSH key": record.ssh_key_path, "host key": found.host_key}
    if missing := [what for what, value in needed.items() if not value]:
        which = "its machine" if node == 0 else f"node {node} ({found.host})"
        raise NotReady(
            f"Lab '{record.name}' does not record how to reach {which} ({', '.join(missing)} missing).",
            hint="Run 'labctl up' for it again to finish creating it, or 'labctl down' to remove it.",
        )
    return found, found.user or record.nodes[0].user or getpass.getuser()


def entry_for(record: LabRecord, local_port: int | None = None) -> HostEntry:
    """The entry for a lab's record; the Jupyter forward uses the same port here as on the machine by default."""
    record.require_machines()
    if not record.nodes[0].host:
        raise UsageError(
            f"Lab '{record.name}' runs on this computer; there is no machine to reach over SSH.",
            hint=f"For a shell in the lab container: docker exec -it {ALIAS_PREFIX}{record.name} bash",
        )
    head, user = reach(record)
    assert head.host and head.host_key and record.ssh_key_path
    key, port = Path(record.ssh_key_path).expanduser().absolute(), record.jupyter_port
    return HostEntry(record.name, head.host, head.port, user, key, head.host_key, port, local_port or port)


def check_path(path: Path, what: str) -> str:
    """As a config value, quoted where it holds a space; what ssh expands ('%x', '${X}') or misreads is refused."""
    text = path.as_posix()
    # Letters of every script (a user named Jürgen); no control character or line separator, Unicode's included.
    letters = r"A-Za-z0-9._/+@=,:\u00a0-\u2027\u202a-\U0010ffff-"
    if not (path.is_absolute() and re.fullmatch(rf"[{letters}][{letters}~ ]*", text)):
        raise UsageError(
            f"{what} {text!r} cannot go into an SSH config entry.",
            hint="It must be an absolute path without quotes, backslashes, '%', '$', '#' or control characters; "
            "move the file to such a path.",
        )
    return f'"{text}"' if " " in text else text


def trust(entry: HostEntry, known_hosts: Path) -> dict[str, str]:
    """ssh's options to use the lab's key and pinned host key (put in ``known_hosts``) only: config and `labctl ssh`."""
    known = check_path(known_hosts, "The known_hosts path")
    options = {
        "IdentityFile": check_path(entry.identity_file, "The SSH key path"),
        "IdentitiesOnly": "yes",
        "HostKeyAlias": entry.alias,
        "UserKnownHostsFile": known,
        "GlobalKnownHostsFile": known,
        "StrictHostKeyChecking": "yes",
        "UpdateHostKeys": "no",
        "CheckHostIP": "no",
        # Other ways ssh accepts a host key, which a `Host *` block of the user's could turn on: DNS (SSHFP) and a
        # command's answer (OpenSSH 8.5 on; older clients ignore the option, and so do not have it).
        "VerifyHostKeyDNS": "no",
        "IgnoreUnknown": "KnownHostsCommand",
        "KnownHostsCommand": "none",
    }
    write_private(known_hosts, f"{entry.alias} {normalize(entry.host_key)}\n")
    return options


def write_entry(entry: HostEntry) -> Path:
    config, known = config_path(), known_hosts_path(entry.lab)
    check_path(known, "The known_hosts path")  # before anything is made
    make_private_dir(config.parent.parent)
    make_private_dir(config.parent)
    options = {"HostName": entry.host, "Port": str(entry.port), "User": entry.user, **trust(entry, known)}
    options["LocalForward"] = f"127.0.0.1:{entry.local_port} 127.0.0.1:{entry.jupyter_port}"
    body = "".join(f"    {key} {value}\n" for key, value in options.items())
    _rewrite(entry.lab, f"# labctl: begin {entry.lab}\nHost {entry.alias}\n{body}# labctl: end {entry.lab}\n")
    return config


def remove_entry(lab: str) -> bool:
    known_hosts_path(lab).unlink(missing_ok=True)
    return _rewrite(lab, "")


def _rewrite(lab: str, block: str) -> bool:
    """The lab's block replaced (by "": removed) in its place, every other line kept; True if it had one."""
    config = config_path()
    text = config.read_text() if config.is_file() else HEADER
    blocks = {match[1]: match[0].lstrip("\n") for match in _BLOCK.finditer(text)}
    had = lab in blocks
    blocks[lab] = block
    if had or block:
        rest = _BLOCK.sub("", text).rstrip("\n") + "\n"
        write_private(config, rest + "".join(f"\n{kept}" for kept in blocks.values() if kept))
    return had


class IncludeState(str, Enum):
    PRESENT = "present"  # ~/.ssh/config already includes labctl's file before any Host or Match
    ADDED = "added"
    DECLINED = "declined"  # the user said no (now or earlier); `ssh -F FILE` still works
    NOT_ASKED = "not asked"  # no one could be asked (no terminal): nothing written, asked again next time


def _includes_at_top(text: str) -> bool:
    """An Include of labctl's file before the first Host or Match, where it applies to all."""
    wanted = {config_path().as_posix(), "~/.ssh/labctl/config"}
    for line in text.splitlines():
        keyword, _, rest = line.strip().replace("=", " ", 1).partition(" ")
        if keyword.lower() in ("host", "match"):
            return False
        if keyword.lower() == "include" and wanted & {arg.strip('"') for arg in rest.split()}:
            return True
    return False


def ensure_include(confirm: Callable[[str], bool | None], *, ask_again: bool = False) -> IncludeState:
    """A "no" is kept unless ``ask_again``; a symlinked config (dotfiles) is edited where it points, in its mode."""
    config = config_path()
    user_config, declined = config.parent.parent / "config", config.with_name("include-declined")
    target = user_config.resolve() if user_config.is_symlink() else user_config
    text = target.read_text() if target.is_file() else ""
    if _includes_at_top(text):
        return IncludeState.PRESENT
    if declined.exists() and not ask_again:
        return IncludeState.DECLINED
    line = "Include " + check_path(config, "labctl's SSH config path")
    make_private_dir(config.parent.parent)
    make_private_dir(config.parent)
    answer = confirm(
        f"Add the line '{line}' at the top of {user_config}, so that 'ssh {ALIAS_PREFIX}<lab>' works everywhere?"
    )
    if answer is None:
        return IncludeState.NOT_ASKED
    if not answer:
        write_private(declined, "The user declined the Include line; 'labctl ssh-config' asks again.\n")
        return IncludeState.DECLINED
    declined.unlink(missing_ok=True)
    mode = target.stat().st_mode & 0o777 if target.is_file() else 0o600
    note = "# Added by labctl: its labs' entries (remove this line to stop using them).\n"
    write_private(target, f"{note}{line}\n\n{text}" if text else f"{note}{line}\n", mode)
    return IncludeState.ADDED
