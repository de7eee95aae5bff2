"""`labctl ssh`: the system ``ssh`` client (a real terminal) trusting only the pinned host key."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from labctl import sshconfig
from labctl.errors import LabctlError
from labctl.keys import check_lab_key
from labctl.state import LabRecord, StateStore
from labctl.ui import Outcome, Reporter, agreed


def ssh_command(record: LabRecord, known_hosts: Path, remote_command: list[str] | None = None) -> list[str]:
    """The remote command goes after ssh's own ``--`` as one quoted line, so each word arrives as it was given
    ('sh -c "exit 7"' stays three words) and none is read as an option, neither by the local client
    ('-oProxyCommand=...') nor by the remote shell; pipes and globs go through 'sh -c'."""
    entry = sshconfig.entry_for(record)  # first: a lab on this computer has no machine to start for ssh
    if record.status == "stopped":
        record.require_ready()  # says how to start it
    return [
        ssh_client(),
        *("-p", str(entry.port)),
        *(arg for key, value in sshconfig.trust(entry, known_hosts).items() for arg in ("-o", f"{key}={value}")),
        "--",
        f"{entry.user}@{entry.host}",
        *([shlex.join(remote_command)] if remote_command else []),
    ]


def ssh_client() -> str:
    ssh = shutil.which("ssh")
    if ssh is not None:
        return ssh
    how = {
        "win32": "On Windows: Settings > System > Optional features > add 'OpenSSH Client', then open a new terminal.",
        "darwin": "On macOS it comes with the system: check that /usr/bin is on your PATH.",
    }.get(sys.platform, "Install OpenSSH's client (the openssh-client package on Debian and Ubuntu).")
    raise LabctlError(
        "'labctl ssh' uses your system's 'ssh' command, and none was found on the PATH.",
        hint=f"{how} Everything else labctl does works without it.",
    )


def run_ssh(record: LabRecord, remote_command: list[str] | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="labctl-ssh-") as tmp:
        known_hosts = Path(tmp) / "known_hosts"
        command = ssh_command(record, known_hosts, remote_command)  # the pinned host key written there
        check_lab_key(record.name, record.ssh_key_path)  # a key gone or replaced is named before ssh starts
        return subprocess.call(command)


def ssh_shell(ui: Reporter, name: str | None = None, command: list[str] | None = None) -> Outcome:
    record = StateStore().resolve(name)
    code = run_ssh(record, command)
    text = (
        "ssh could not connect (exit 255). If it reported a changed host key, the machine is not the one "
        "labctl pinned: do not continue until you know why (see 'labctl status')."
    )
    return Outcome({"name": record.name, "exit_code": code}, text if code == 255 else "", exit_code=code)


def ssh_config(ui: Reporter, name: str | None = None, local_port: int | None = None, include: bool = False) -> Outcome:
    record = StateStore().resolve(name)
    entry = sshconfig.entry_for(record, local_port)
    path = sshconfig.write_entry(entry)
    ask = (lambda _q: True) if include else lambda q: agreed(q) if sys.stdin.isatty() else None  # None: a script
    state = sshconfig.ensure_include(ask, ask_again=include)
    lines = [
        f"Wrote the SSH entry '{entry.alias}' to {path} (host key pinned, Jupyter on localhost:{entry.local_port})."
    ]
    if state in (sshconfig.IncludeState.PRESENT, sshconfig.IncludeState.ADDED):
        lines.append(f"Connect with: ssh {entry.alias}   (VS Code Remote-SSH lists it too)")
    else:
        lines.append(f"~/.ssh/config does not include it; connect with: ssh -F {path} {entry.alias}")
        lines.append("'labctl ssh-config --include' adds the Include line so that plain 'ssh' finds it.")
    data: dict[str, object] = {"name": record.name, "alias": entry.alias, "config": str(path), "include": state.value}
    return Outcome(data, "\n".join(lines))
