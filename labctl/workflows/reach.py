"""Reaching the lab, trusting only its pinned host key. `open`: Jupyter listens on the machine's 127.0.0.1 only, so a
port forward over the verified SSH connection; the one command that shows the token. `ssh`: the system client (a real
terminal); `ssh-config`: the entry ssh, scp and VS Code read. `pull`, `push` and the copy `down` makes first."""

from __future__ import annotations

import contextlib
import html
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from labctl import sshconfig, workspace
from labctl.container import JUPYTER_PORT, find_container, lab_address
from labctl.errors import LabctlError, NotFound, NotReady, UsageError
from labctl.keys import check_lab_key
from labctl.labhost import lab_container
from labctl.machine import Machine, connect
from labctl.state import LabRecord, StateStore
from labctl.ui import Outcome, Reporter, agreed
from labctl.workflows.runlab_options import results_root

BROWSER_GRACE = 5.0  # seconds the redirect page stays with no tunnel held (a lab here): the browser reads it at once


def lab_url(port: int, token: str) -> str:
    return f"http://127.0.0.1:{port}/lab?token={token}"


def check_jupyter(port: int, token: str, *, timeout: float = 10.0) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if response.status == 200:
                return
            problem = f"it answered HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        problem = "it refused the lab's token" if exc.code in (401, 403) else f"it answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        problem = f"it did not answer ({getattr(exc, 'reason', exc)})"
    raise LabctlError(
        f"Jupyter is not reachable through the tunnel: {problem}.",
        hint="Run 'labctl up' again to repair the lab container, then 'labctl open'.",
    )


def _check_forwards(forward: list[int], print_only: bool, jupyter_ports: set[int]) -> None:
    hint = "Name each port of the lab once, e.g. --forward 6006 (TensorBoard) --forward 5000 (MLflow)."
    for i, port in enumerate(forward):
        if not 0 < port < 65536:
            problem = "is not a port number (1-65535)"
        elif port in forward[:i]:
            problem = "is given twice"
        elif port in jupyter_ports:
            problem, hint = "is the lab's Jupyter port, which 'labctl open' forwards already", "Leave it out."
        elif print_only:
            problem = "needs the tunnel that 'labctl open' holds, and --print holds none"
            hint = "Leave out --print, or --forward."
        else:
            continue
        raise UsageError(f"--forward {port} {problem}.", hint=hint)


def open_lab(
    ui: Reporter,
    name: str | None = None,
    port: int = 8888,
    print_only: bool = False,
    browser: bool = False,
    forward: list[int] | None = None,
    as_json: bool = False,
    *,
    stop: threading.Event | None = None,
) -> Outcome:
    """``as_json``: the URL as one JSON line as soon as the tunnel is up, since the Outcome only comes when it closes
    (too late for a script waiting on it). ``stop`` ends a held tunnel the way Ctrl-C does (tests use it)."""
    forward = forward or []
    if not 0 <= port < 65536:
        raise UsageError(f"--port {port} is not a port number.", hint="Use 1-65535, e.g. 8888 (0: any free port).")
    _check_forwards(forward, print_only, {JUPYTER_PORT})  # bad input first, before the lab is even looked up
    record = StateStore().resolve(name)
    record.require_ready()
    token = record.jupyter_token
    if not token:
        raise NotReady(
            f"Lab '{record.name}' has no Jupyter container yet.", hint="Run 'labctl up' to finish creating it."
        )
    _check_forwards(forward, print_only, {record.jupyter_port, JUPYTER_PORT})

    # The tunnel's connection is left unmarked: the idle agent counts it as someone working, so the lab does
    # not stop itself while `open` is attached (its daily auto-shutdown still applies).
    with connect(record, ui, wait=30.0, mark=False) as machine:
        if not machine.remote and not forward:
            check_jupyter(record.jupyter_port, token)
            url = lab_url(record.jupyter_port, token)
            with browse(url, browser, ui):
                if browser:
                    time.sleep(BROWSER_GRACE)  # no tunnel to hold: give the browser time to read the page
            return Outcome({"name": record.name, "url": url, "port": record.jupyter_port, "tunnel": False}, url)

        if print_only:
            # A tunnel held elsewhere ('labctl open', 'ssh -L'): a short-lived one proves the URL works behind it.
            with machine.forward(record.jupyter_port, 0) as probe:
                check_jupyter(probe, token)
            url = lab_url(port, token)
            return Outcome({"name": record.name, "url": url, "port": port, "tunnel": False}, url)

        with contextlib.ExitStack() as tunnels:
            local = tunnels.enter_context(machine.forward(record.jupyter_port, port))
            check_jupyter(local, token)
            url = lab_url(local, token)
            if machine.remote and local != port:
                ui.info(f"Port {port} is busy on this computer; the tunnel uses {local}.")
            opened: dict[str, Any] = {"name": record.name, "url": url, "port": local, "tunnel": True}
            if forward:
                opened["forwards"] = _forward_lab_ports(machine, record.name, forward, tunnels, ui)
            if as_json:
                print(json.dumps(opened), file=sys.stdout, flush=True)
            else:
                ui.info(url)
                for forwarded in opened.get("forwards", []):
                    ui.info(f"Port {forwarded['port']} of the lab: {forwarded['url']}")
            ui.info(f"Tunnel to {machine.describe()} open; press Ctrl-C to close it.")
            with browse(url, browser, ui):
                waiter = stop or threading.Event()
                with contextlib.suppress(KeyboardInterrupt):
                    while not waiter.wait(0.5):
                        pass
    # With --json all was said in the line above; the CLI prints '{}' on a line of its own: "the tunnel is closed".
    return Outcome({} if as_json else opened, "Tunnel closed.")


def _forward_lab_ports(
    machine: Machine, lab: str, ports: list[int], tunnels: contextlib.ExitStack, ui: Reporter
) -> list[dict[str, Any]]:
    """Through the machine's tunnel: the container's address is one only the machine reaches, never a public one."""
    found = find_container(machine.docker(), lab)
    if found is None:
        raise NotFound(f"Lab '{lab}' has no container on {machine.describe()}.", hint="Run 'labctl up' to start it.")
    address = lab_address(found)
    forwards = []
    for port in ports:
        local = tunnels.enter_context(machine.forward(port, port, host=address))
        if local != port:
            ui.info(f"Port {port} is busy on this computer; the lab's port {port} is on {local}.")
        forwards.append({"port": port, "url": f"http://127.0.0.1:{local}/"})
    if address != "127.0.0.1":
        ui.info("A server in the lab answers there when it listens on all its addresses (tensorboard --bind_all).")
    return forwards


def redirect_page(url: str) -> str:
    target = html.escape(url, quote=True)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0;url={target}"><title>labctl: opening Jupyter</title></head>'
        f'<body><p>Opening <a href="{target}">the lab\'s Jupyter</a>...</p></body></html>\n'
    )


@contextmanager
def browse(url: str, enabled: bool, ui: Reporter) -> Iterator[Path | None]:
    """A private page (0600), never the tokenized URL, which would be on the browser's command line for all (ps)."""
    if not enabled:
        yield None
        return
    import webbrowser

    fd, name = tempfile.mkstemp(prefix="labctl-open-", suffix=".html")  # 0600, in the user's temp directory
    page = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(redirect_page(url))
        if not webbrowser.open(page.as_uri()):
            ui.warn("No browser could be opened here; copy the URL above into one.")
        yield page
    finally:
        with contextlib.suppress(OSError):
            page.unlink()


def ssh_command(record: LabRecord, known_hosts: Path, remote_command: list[str] | None = None) -> list[str]:
    """The remote command goes after ``--`` as one quoted line: each word arrives as given ('sh -c "exit 7"' stays
    three) and none is an option to the client ('-oProxyCommand=...') or the remote shell; pipes need 'sh -c'."""
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


def describe_pull(result: workspace.PullResult) -> str:
    if result.files:
        size = workspace.human_bytes(result.bytes)
        text = f"Copied {len(result.files)} file(s), {size}, each verified, to {result.copy_dir}"
        text += f" (list: {result.dest / workspace.MANIFEST_NAME})."
    elif not result.already_here:
        what = "Nothing changed in the workspace since up" if result.changed_only else "The workspace holds no files"
        text = f"{what}; nothing to copy."
    else:
        text = f"Nothing new to copy to {result.copy_dir}."
    lines = [text]
    if result.already_here:
        lines.append(f"{len(result.already_here)} file(s) were already there from an earlier copy, checked.")
    large = [s for s in result.skipped if s.reason == "too large"]
    if large:
        shown = ", ".join(f"{s.path} ({workspace.human_bytes(s.size)})" for s in large[:5])
        more = f" and {len(large) - 5} more" if len(large) > 5 else ""
        lines.append(
            f"Left in the lab, larger than the limit: {shown}{more}. Name them to copy them anyway: "
            f"'labctl pull {large[0].path}'."
        )
    gone = [s.path for s in result.skipped if s.reason == "deleted during the copy"]
    if gone:
        lines.append(f"Deleted in the lab while copying: {', '.join(gone[:5])}.")
    return "\n".join([*lines, *(f"Your local edit was kept as {path}." for path in result.kept_local)])


def pull(
    ui: Reporter,
    name: str | None = None,
    paths: list[str] | None = None,
    dest: Path | None = None,
    changed: bool = False,
    max_size_mb: int = workspace.DEFAULT_MAX_FILE_MB,
) -> Outcome:
    for path in paths or []:
        workspace.workspace_path(path)  # a path out of /workspace is refused before anything connects
    record = StateStore().resolve(name)
    step = f"Copying the workspace of lab '{record.name}'"
    result = _pull(record, ui, step, dest, paths=paths or [], changed_only=changed, max_size=max_size_mb * workspace.MB)
    return Outcome({"name": record.name, **result.to_json()}, describe_pull(result))


def push(ui: Reporter, paths: list[Path], name: str | None = None, to: str = "") -> Outcome:
    workspace.workspace_path(to)  # refused before anything connects
    record = StateStore().resolve(name)
    progress = workspace.progress_lines(ui.info, "Sent")
    with lab_container(record, ui) as box, ui.step(f"Copying {len(paths)} path(s) into lab '{record.name}'"):
        result = workspace.push(box, paths, to, progress=progress)
    size = workspace.human_bytes(result.bytes)
    lines = [f"Sent {len(result.files)} file(s), {size}, to {result.dest}; each checked there."]
    if result.skipped:
        lines.append(f"Not sent (links and caches): {', '.join(result.skipped[:5])}.")
    return Outcome({"name": record.name, **asdict(result)}, "\n".join(lines))


def _pull(record: LabRecord, ui: Reporter, step: str, dest: Path | None, **options: Any) -> workspace.PullResult:
    with lab_container(record, ui) as box, ui.step(step):
        root = dest or results_root()
        progress = workspace.progress_lines(ui.info)
        return workspace.pull(box, dest or root / record.name, root=root, progress=progress, **options)


def save_before_down(record: LabRecord, ui: Reporter) -> workspace.PullResult | None:
    if record.status not in ("ready", "stopped"):
        return None  # never ready: nothing of the user's can be there; deleting: an earlier `down` saved it
    try:  # no size limit: nothing is deleted unsaved
        result = _pull(record, ui, "Saving your work from the lab's workspace", None, changed_only=True, max_size=0)
    except LabctlError as exc:
        raise LabctlError(
            f"Lab '{record.name}' was not deleted: your work in its workspace could not be saved first "
            f"({exc.message.rstrip('.')}).",
            hint=(exc.hint + " " if exc.hint else "")
            + f"Or delete it without saving: 'labctl down --name {record.name} --no-save'.",
            exit_code=exc.exit_code,
        ) from None
    ui.info(describe_pull(result))
    return result
