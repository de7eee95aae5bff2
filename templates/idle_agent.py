#!/usr/bin/env python3
"""labctl's idle auto-stop agent: one decision per run, made every minute by a systemd timer on the lab machine.

Usage: idle_agent.py CONFIG.json

It runs with the machine's own python3 and the standard library only. Each run observes what could keep the
lab in use, decides (a pure function of those facts, the config and the small state file), logs the decision as
one line, and acts when the lab has been idle for the whole window or has spent its budget:

* busy: a Jupyter kernel is executing; a labctl run is in progress (a run directory without ``exit_code`` whose
  pid is alive); an SSH connection is open that is not one of labctl's own (labctl marks its connections).
* activity: the latest ``last_activity`` of any kernel or terminal moves the start of the idle window forward.
* a worker of a lab of several VMs (``head``) watches node 0 alone: while node 0 answers on its SSH port the
  worker is busy; once node 0 is gone (evicted, deallocated) for the window, the worker deallocates itself.
* acting: ``azure`` deallocates the VM with its own managed identity (IMDS token, ARM ``deallocate``), never an
  OS shutdown, which would keep compute billing, and first the lab's other VMs (``node_vms``) where it has some;
  ``container`` stops the lab container; ``shutdown`` powers the machine off.
* checkpointing: before any stop, and a few minutes before the daily auto-shutdown (which Azure does without
  notice), the runs in progress get SIGTERM and a bounded wait to save a checkpoint (``run_state.py interrupt``,
  in the lab container). A Spot VM's run also polls Azure's Scheduled Events every few seconds for most of the
  minute: a ``Preempt`` comes only 30 s before the eviction, so the runs checkpoint then and the event is
  acknowledged.

A run that cannot tell whether a labctl run is in progress counts as busy: a training run is never stopped on a
guess. A Jupyter that does not answer counts as having no kernels (nothing can execute in it).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PREFIX = "labctl-idle:"
DEFAULT_IMDS = "http://169.254.169.254"
DEFAULT_ARM = "https://management.azure.com"
COMPUTE_API_VERSION = "2024-07-01"
IMDS_INSTANCE_API_VERSION = "2021-02-01"
IMDS_TOKEN_API_VERSION = "2018-02-01"
INSTANCE_PATH = f"/metadata/instance?api-version={IMDS_INSTANCE_API_VERSION}"
EVENTS_PATH = "/metadata/scheduledevents?api-version=2020-07-01"
ARM_RESOURCE = "https://management.azure.com/"
TCP_ESTABLISHED = "01"
STARTING_GRACE = 60.0  # a run directory without pid yet, younger than this, is a run that is starting

# Lists the runs in progress under a runs directory; run as-is here, or inside the lab container by docker exec,
# where the runs' pids are meaningful. Prints a JSON list of run ids.
RUNS_SCRIPT = r"""
import json, os, sys, time
root, grace, live = sys.argv[1], float(sys.argv[2]), []
for run in (sorted(os.listdir(root)) if os.path.isdir(root) else []):
    d = os.path.join(root, run)
    if not os.path.isdir(d) or os.path.exists(os.path.join(d, "exit_code")):
        continue
    try:
        pid = int(open(os.path.join(d, "pid")).read().strip())
    except (OSError, ValueError):
        if time.time() - os.path.getmtime(d) < grace:
            live.append(run)
        continue
    try:
        os.kill(pid, 0)
        live.append(run)
    except ProcessLookupError:
        pass
    except PermissionError:
        live.append(run)
print(json.dumps(live))
"""


# ------------------------------------------------------------------------------------------------- config


@dataclass
class Config:
    mode: str = "azure"  # azure | container | shutdown
    window_minutes: float = 60.0
    window_seconds: float | None = None  # wins over window_minutes when set (tests, short windows)
    budget_usd: float | None = None
    usd_per_hour: float = 0.0  # compute, while the machine runs
    fixed_usd_per_hour: float = 0.0  # disk and public IP, for the lab's whole life
    rates: list[list[Any]] = field(default_factory=list)  # [ISO time, compute $/h from then on]: a resize changes it
    created_at: str | None = None
    jupyter_url: str | None = "http://127.0.0.1:8888"
    jupyter_token_file: str | None = None
    container: str | None = None  # the lab container: runs are listed inside it; `container` mode stops it
    node_vms: list[str] = field(default_factory=list)  # azure: the lab's other VMs, deallocated with this one
    head: str | None = None  # a worker's: node 0's "address:port"; once it answers no more, the worker is idle
    runs_dir: str | None = "/workspace/runs"
    docker: list[str] = field(default_factory=lambda: ["docker"])
    ssh_port: int = 22
    ssh_marks_dir: str | None = None
    state_file: str = "/var/lib/labctl-idle/state.json"
    imds_url: str = DEFAULT_IMDS
    arm_url: str = DEFAULT_ARM
    arm_resource: str = ARM_RESOURCE  # the token's audience; another cloud's management endpoint there
    ca_file: str | None = None
    shutdown_command: list[str] = field(default_factory=lambda: ["systemctl", "poweroff"])
    stop_retry_seconds: float = 600.0
    timeout: float = 10.0
    run_state: str = "/opt/labctl/run_state.py"  # its `interrupt` SIGTERMs the runs and waits for their checkpoints
    checkpoint_seconds: float = 120.0  # before a stop or the daily shutdown; well inside the unit's timeout
    spot: bool = False  # azure: a Spot VM, whose eviction notice is watched for
    spot_checkpoint_seconds: float = 20.0  # of the 30 s a Preempt gives
    watch_seconds: float = 55.0  # Spot: how long each run polls the scheduled events; the timer starts one a minute
    poll_seconds: float = 5.0
    shutdown_at: str | None = None  # the daily auto-shutdown, "HH:MM" in shutdown_zone
    shutdown_zone: str = "UTC"
    shutdown_lead_minutes: float = 5.0  # how long before it the runs checkpoint

    @property
    def window(self) -> float:
        return float(self.window_seconds) if self.window_seconds is not None else float(self.window_minutes) * 60

    @classmethod
    def load(cls, path: str, env: Mapping[str, str] | None = None) -> Config:
        """The config labctl wrote; ``LABCTL_IDLE_IMDS_URL``/``LABCTL_IDLE_ARM_URL`` override the endpoints."""
        env = os.environ if env is None else env
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError("the config is not a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        config = cls(**data)
        config.imds_url = env.get("LABCTL_IDLE_IMDS_URL", config.imds_url)
        config.arm_url = env.get("LABCTL_IDLE_ARM_URL", config.arm_url)
        if config.mode not in ("azure", "container", "shutdown"):
            raise ValueError(f"mode must be azure, container or shutdown, not {config.mode!r}")
        if config.mode == "container" and not config.container:
            raise ValueError("mode 'container' needs 'container' (the lab container's name)")
        if config.shutdown_at is not None:
            shutdown_due(0.0, config.shutdown_at, config.shutdown_zone, 0.0)  # a bad time or zone fails here
        return config


# ------------------------------------------------------------------------------------------------- facts


@dataclass
class Activity:
    """A kernel or terminal: its name, whether it executes now, and when it last did anything (epoch seconds)."""

    kind: str  # kernel | terminal
    name: str
    busy: bool = False
    last_activity: float | None = None


@dataclass
class Facts:
    now: float
    activities: list[Activity] = field(default_factory=list)
    live_runs: list[str] = field(default_factory=list)
    runs_error: str | None = None  # the runs could not be listed: counts as busy
    ssh_sessions: list[str] = field(default_factory=list)  # "address:port" of connections that are not labctl's
    jupyter_error: str | None = None
    spent_usd: float | None = None
    target_running: bool = True  # container mode: whether there is a container left to stop
    head_answers: str | None = None  # a worker's: why it is busy while node 0 answers


@dataclass
class State:
    idle_since: float | None = None
    stop_requested_at: float | None = None
    boot_id: str | None = None
    boots: dict[str, float] = field(default_factory=dict)  # boot id -> seconds up, as last seen
    seen: dict[str, float] = field(default_factory=dict)  # boot id -> when it was last seen up (its price's time)
    last: str | None = None  # the last decision's line, for `labctl status`
    checked_at: float | None = None
    checkpoint: dict[str, Any] | None = None  # the last interrupt of the runs: why, when, which; for `labctl status`
    shutdown_done: str | None = None  # the daily shutdown whose checkpoint was taken
    events_done: list[str] = field(default_factory=list)  # scheduled events already answered

    @classmethod
    def load(cls, path: str) -> State:
        try:
            data = json.loads(Path(path).read_text())
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (OSError, ValueError, TypeError):
            return cls()

    def save(self, path: str) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}")
        temporary.write_text(json.dumps(self.__dict__, sort_keys=True))
        os.replace(temporary, target)


@dataclass
class Decision:
    action: str  # busy | idle | off | stop | waiting | nothing
    reason: str
    idle_since: float | None
    stop_requested_at: float | None = None
    cause: str = "idle"  # a stop's, as run_state.py's interrupt names it: idle | budget

    @property
    def line(self) -> str:
        return f"{PREFIX} {self.reason}"


# ------------------------------------------------------------------------------------------------- the rules


def _minutes(seconds: float) -> str:
    if seconds < 120:
        return f"{int(seconds)}s"
    return f"{int(seconds // 60)}m"


def busy_reasons(facts: Facts) -> list[str]:
    reasons = [f"{a.kind} {a.name} busy" for a in facts.activities if a.busy]
    reasons += [f"run {run} in progress" for run in facts.live_runs]
    if facts.runs_error:
        reasons.append(f"runs unknown ({facts.runs_error})")
    reasons += [f"ssh session from {s}" for s in facts.ssh_sessions]
    return reasons + ([facts.head_answers] if facts.head_answers else [])


def decide(facts: Facts, state: State, window: float, budget_usd: float | None, retry: float = 600.0) -> Decision:
    """What to do now: a pure function of the observed facts, the previous state and the rules."""
    now = facts.now
    requested = state.stop_requested_at
    if not facts.target_running:
        return Decision("nothing", "lab container not running; nothing to stop", None)
    if budget_usd is not None and facts.spent_usd is not None and facts.spent_usd >= budget_usd:
        reason = f"budget passed (${facts.spent_usd:.2f} of ${budget_usd:.2f})"
        return _stop(reason, state.idle_since, requested, now, retry, "budget")
    reasons = busy_reasons(facts)
    if reasons:
        return Decision("busy", f"busy ({'; '.join(reasons)})", now)
    latest = max((a.last_activity for a in facts.activities if a.last_activity is not None), default=None)
    idle_since = state.idle_since if state.idle_since is not None else now
    if latest is not None:
        idle_since = max(idle_since, min(latest, now))
    if window <= 0:
        return Decision("off", "idle stop off (window 0)", idle_since)
    idle_for = now - idle_since
    if idle_for < window:
        note = f"; jupyter: {facts.jupyter_error}" if facts.jupyter_error else ""
        return Decision("idle", f"idle {_minutes(idle_for)} of {_minutes(window)}{note}", idle_since, requested)
    return _stop(f"idle {_minutes(idle_for)} of {_minutes(window)}", idle_since, requested, now, retry)


def _stop(
    reason: str, idle_since: float | None, requested: float | None, now: float, retry: float, cause: str = "idle"
) -> Decision:
    if requested is not None and 0 <= now - requested < retry:
        return Decision("waiting", f"{reason}; stop requested {_minutes(now - requested)} ago", idle_since, requested)
    return Decision("stop", reason, idle_since, now, cause)


def shutdown_due(now: float, at: str, zone: str, lead: float) -> str | None:
    """The next daily shutdown (its UTC time, as an id) when it is at most ``lead`` seconds away, else None."""
    hour, minute = (int(part) for part in at.split(":"))
    try:
        here = datetime.fromtimestamp(now, ZoneInfo(zone))
    except ZoneInfoNotFoundError:
        raise ValueError(f"unknown time zone {zone!r}") from None
    next_one = here.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if next_one <= here:
        next_one = (here + timedelta(days=1)).replace(hour=hour, minute=minute, second=0, microsecond=0)
    when = next_one.astimezone(timezone.utc)
    return when.isoformat() if when.timestamp() - now <= lead else None


def preempts(document: Any, vm_name: str | None) -> list[dict[str, Any]]:
    """The scheduled events that evict this VM: ``Preempt`` naming it (any, when its name is unknown)."""
    events = document.get("Events") if isinstance(document, dict) else None
    found = []
    for event in events if isinstance(events, list) else []:
        names = [str(name).lower() for name in event.get("Resources") or []]
        if event.get("EventType") == "Preempt" and (vm_name is None or vm_name.lower() in names):
            found.append(event)
    return found


def estimate_spend(
    boots: dict[str, float],
    usd_per_hour: float,
    fixed_usd_per_hour: float,
    created_at: float | None,
    now: float,
    priced: tuple[dict[str, float], list[list[Any]]] = ({}, []),
) -> float:
    """Compute for every second the machine was up (summed over boots, each at the $/h in force when it was last
    seen, from ``priced``'s times and rates; today's without them) plus the fixed costs since creation."""
    seen, rates = priced
    since = sorted((t, float(rate)) for when, rate in rates if (t := parse_time(when)) is not None)

    def rate_of(boot: str) -> float:
        return next((r for t, r in reversed(since) if boot in seen and t <= seen[boot]), usd_per_hour)

    compute = sum(up / 3600 * rate_of(boot) for boot, up in boots.items())
    fixed = max(0.0, now - created_at) / 3600 * fixed_usd_per_hour if created_at is not None else 0.0
    return compute + fixed


# ------------------------------------------------------------------------------------------------- observing


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def _get_json(url: str, headers: dict[str, str], timeout: float) -> Any:
    request = urllib.request.Request(url, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as response:
        return json.loads(response.read().decode())


def observe_jupyter(config: Config) -> tuple[list[Activity], str | None]:
    """Kernels and terminals from Jupyter's REST API; ``no_track_activity`` keeps these reads from counting."""
    if not config.jupyter_url:
        return [], None
    try:
        token = Path(config.jupyter_token_file).read_text().strip() if config.jupyter_token_file else ""
    except OSError as exc:
        return [], f"token file unreadable ({exc.strerror})"
    headers = {"Authorization": f"token {token}"} if token else {}
    base = config.jupyter_url.rstrip("/")
    activities: list[Activity] = []
    try:
        _get_json(f"{base}/api/status?no_track_activity=1", headers, config.timeout)
        for kernel in _get_json(f"{base}/api/kernels?no_track_activity=1", headers, config.timeout):
            busy = kernel.get("execution_state") == "busy"
            name = str(kernel.get("id", "?"))[:8]
            activities.append(Activity("kernel", name, busy, parse_time(kernel.get("last_activity"))))
        for terminal in _terminals(f"{base}/api/terminals?no_track_activity=1", headers, config.timeout):
            name = str(terminal.get("name", "?"))
            activities.append(Activity("terminal", name, False, parse_time(terminal.get("last_activity"))))
    except urllib.error.HTTPError as exc:
        return activities, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return activities, f"unreachable ({getattr(exc, 'reason', exc)})"
    return activities, None


def _terminals(url: str, headers: dict[str, str], timeout: float) -> list[dict[str, Any]]:
    try:
        return list(_get_json(url, headers, timeout))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # terminals are disabled: there are none
            return []
        raise


def container_running(config: Config) -> bool | None:
    """Whether the lab container runs (None: Docker could not say)."""
    assert config.container
    command = [*config.docker, "inspect", "--format", "{{.State.Running}}", config.container]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode == 0:
        return done.stdout.strip() == "true"
    if "no such" in (done.stderr or "").lower():
        return False
    return None


def observe_runs(config: Config, running: bool | None) -> tuple[list[str], str | None]:
    """The labctl runs in progress, listed where their pids mean something: in the container, or here."""
    if not config.runs_dir:
        return [], None
    argv = [RUNS_SCRIPT, config.runs_dir, str(STARTING_GRACE)]
    if config.container:
        if running is False:
            return [], None  # nothing runs in a container that does not
        launcher = 'exec "$(command -v python3 || command -v python)" -c "$0" "$@"'
        command = [*config.docker, "exec", config.container, "sh", "-c", launcher, *argv]
    else:
        command = [sys.executable, "-c", *argv]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], type(exc).__name__
    if done.returncode != 0:
        return [], (done.stderr or done.stdout).strip()[-200:] or f"exit {done.returncode}"
    try:
        return [str(run) for run in json.loads(done.stdout)], None
    except ValueError:
        return [], "unreadable run list"


def _address(hex_address: str) -> tuple[str, int]:
    """An address of /proc/net/tcp{,6} ("0100007F:0016") as text and port; v4-mapped v6 as plain v4."""
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, struct.pack("=I", struct.unpack(">I", raw)[0])), int(port, 16)
    words = struct.unpack(">4I", raw)
    packed = struct.pack("=4I", *words)
    if packed[:12] == b"\0" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, packed[12:]), int(port, 16)
    return socket.inet_ntop(socket.AF_INET6, packed), int(port, 16)


TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def ssh_connections(port: int, tables: tuple[str, ...] = TCP_TABLES) -> list[str]:
    """Established TCP connections to the SSH port, as "address:port" of the peer (the kernel's own table)."""
    peers = []
    for table in tables:
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != TCP_ESTABLISHED:
                continue
            local, remote = _address(fields[1]), _address(fields[2])
            if local[1] == port:
                peers.append(f"{remote[0]}:{remote[1]}")
    return peers


def foreign_sessions(port: int, marks_dir: str | None, tables: tuple[str, ...] = TCP_TABLES) -> list[str]:
    """The peers of SSH connections that are not labctl's own (its marks each hold an ``$SSH_CONNECTION``); marks
    of closed connections are removed. The marks are read before the connections are listed, so a connection
    that opens in between is listed with its mark unread (counted once), never its mark dropped as a closed one's."""
    marks: dict[Path, str] = {}
    if marks_dir and os.path.isdir(marks_dir):
        for entry in Path(marks_dir).iterdir():
            try:
                fields = entry.read_text().split()
            except OSError:
                continue
            marks[entry] = f"{fields[0]}:{fields[1]}" if len(fields) >= 2 else ""
    peers = ssh_connections(port, tables)
    for entry, peer in marks.items():
        if peer not in peers:
            with contextlib.suppress(OSError):
                entry.unlink()
    return [p for p in peers if p not in marks.values()]


def boot_facts() -> tuple[str, float]:
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return boot_id, uptime


def observe(config: Config, state: State, now: float) -> Facts:
    facts = Facts(now=now)
    if config.head:  # a worker: node 0 starts, follows and stops its work, so node 0 gone means idle
        host, _, port = config.head.rpartition(":")
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), config.timeout):
            facts.head_answers = f"node 0 ({config.head}) answers"
        return facts
    running = container_running(config) if config.container else True
    if config.mode == "container" and running is False:
        facts.target_running = False
        return facts
    facts.activities, facts.jupyter_error = observe_jupyter(config)
    facts.live_runs, facts.runs_error = observe_runs(config, running)
    facts.ssh_sessions = foreign_sessions(config.ssh_port, config.ssh_marks_dir)
    if config.budget_usd is not None:
        created = parse_time(config.created_at)
        priced = (state.seen, config.rates)
        facts.spent_usd = estimate_spend(
            state.boots, config.usd_per_hour, config.fixed_usd_per_hour, created, now, priced
        )
    return facts


# ------------------------------------------------------------------------------------------------- acting


def _context(config: Config) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=config.ca_file) if config.ca_file else ssl.create_default_context()


def _arm_error(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read().decode()).get("error") or {}
        return f"{exc.code} {error.get('code', '')}: {error.get('message', '')}".strip()
    except (ValueError, AttributeError, OSError):
        return f"{exc.code} {exc.reason}"


def _imds(config: Config, path: str, body: dict[str, Any] | None = None) -> Any:
    """A call to the instance metadata service: never through a proxy, always with ``Metadata: true``."""
    url = f"{config.imds_url.rstrip('/')}{path}"
    headers = {"Metadata": "true", **({"Content-Type": "application/json"} if body is not None else {})}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body is not None else "GET")
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=_context(config))
    )
    with opener.open(request, timeout=config.timeout) as response:
        text = response.read().decode()
    return json.loads(text) if text.strip() else None


def deallocate(config: Config) -> tuple[bool, str]:
    """Deallocate this VM with its own managed identity: its id and a token from IMDS, then ARM's deallocate
    (after the lab's other VMs, on which the same identity holds the same role)."""
    context = _context(config)
    try:
        resource_id = str(_imds(config, INSTANCE_PATH)["compute"]["resourceId"])
        query = urllib.parse.urlencode({"api-version": IMDS_TOKEN_API_VERSION, "resource": config.arm_resource})
        access = str(_imds(config, f"/metadata/identity/oauth2/token?{query}")["access_token"])
    except urllib.error.HTTPError as exc:
        return False, f"instance metadata refused: {exc.code} {exc.read().decode(errors='replace')[:200]}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return False, f"instance metadata unavailable ({getattr(exc, 'reason', exc)})"
    # The lab's other VMs first (this one stops the agent with it), each asked once; their refusals are said.
    refused = []
    for other in config.node_vms:
        ok, message = _post_deallocate(config, context, other, access)
        if not ok:
            refused.append(message)
    ok, message = _post_deallocate(config, context, resource_id, access)
    if config.node_vms:
        message += f"; {len(config.node_vms) - len(refused)} of {len(config.node_vms)} other nodes deallocated too"
        message += "".join(f"; {m}" for m in refused)
    return ok and not refused, message


def _post_deallocate(config: Config, context: ssl.SSLContext, resource_id: str, access: str) -> tuple[bool, str]:
    url = f"{config.arm_url.rstrip('/')}{resource_id}/deallocate?api-version={COMPUTE_API_VERSION}"
    # ARM takes JSON bodies only; without a Content-Type, urllib would send the empty body as a form.
    headers = {"Authorization": f"Bearer {access}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=b"{}", method="POST", headers=headers)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(request, timeout=config.timeout) as response:
            return True, f"deallocate accepted ({response.status}) for {resource_id}"
    except urllib.error.HTTPError as exc:
        return False, f"deallocate refused: {_arm_error(exc)}"
    except OSError as exc:
        return False, f"deallocate failed ({getattr(exc, 'reason', exc)})"


def run_command(command: list[str], what: str) -> tuple[bool, str]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{what} failed ({exc})"
    if done.returncode != 0:
        return False, f"{what} failed (exit {done.returncode}: {(done.stderr or done.stdout).strip()[-200:]})"
    return True, f"{what} done"


def act(config: Config) -> tuple[bool, str]:
    if config.mode == "azure":
        return deallocate(config)
    if config.mode == "container":
        assert config.container
        return run_command([*config.docker, "stop", config.container], f"docker stop {config.container}")
    return run_command(config.shutdown_command, "shutdown")


ACTION_WORDS = {"azure": "deallocating", "container": "stopping the lab container", "shutdown": "shutting down"}


def checkpoint(config: Config, state: State, reason: str, wait: float, now: float) -> str:
    """SIGTERM the runs in progress and wait (at most ``wait`` s) for their checkpoints: run_state.py's
    ``interrupt``, run where the runs' pids mean something, the script on stdin (argv only, no shell)."""
    argv = ["-", "interrupt", reason, config.runs_dir or "/workspace/runs", "--wait", f"{wait:g}"]
    if config.container:
        command = [*config.docker, "exec", "-i", config.container, "python", *argv]
    else:
        command = [sys.executable, *argv]
    record: dict[str, Any] = {"reason": reason, "at": now, "interrupted": [], "timed_out": []}
    try:
        script = Path(config.run_state).read_bytes()
        done = subprocess.run(command, input=script, capture_output=True, timeout=wait + 30)
        if done.returncode != 0:
            raise ValueError((done.stderr or done.stdout).decode(errors="replace").strip()[-200:])
        answer = json.loads(done.stdout)
        record.update(interrupted=list(answer["interrupted"]), timed_out=list(answer["timed_out"]))
    except (OSError, ValueError, KeyError, TypeError, subprocess.TimeoutExpired) as exc:
        record["error"] = str(exc) or type(exc).__name__
    record["said"] = checkpoint_words(record)
    state.checkpoint = record
    return f"{PREFIX} checkpoint ({reason}): {record['said']}"


def checkpoint_words(record: dict[str, Any]) -> str:
    if record.get("error"):
        return f"failed ({record['error']})"
    words = [f"run {run} checkpointed" for run in record["interrupted"] if run not in record["timed_out"]]
    words += [f"run {run} did not finish its checkpoint in time" for run in record["timed_out"]]
    return "; ".join(words) or "no run in progress"


def watch_events(config: Config, state: State, until: float) -> str | None:
    """Spot: poll the scheduled events until ``until`` (monotonic); on a Preempt of this VM, checkpoint the runs
    and acknowledge the event, so that the eviction need not wait for the rest of its notice."""
    try:
        name = str(_imds(config, INSTANCE_PATH)["compute"]["name"])
    except (OSError, ValueError, KeyError, TypeError):
        name = None  # every Preempt counts then: a needless checkpoint costs less than a lost run
    while True:
        try:
            document, failed = _imds(config, EVENTS_PATH), None
        except (OSError, ValueError) as exc:  # polled again: one failure must not blind the rest of the minute
            document, failed = None, f"{PREFIX} scheduled events unavailable ({getattr(exc, 'reason', exc)})"
        for event in preempts(document, name):
            event_id = str(event.get("EventId"))
            if event_id in state.events_done:
                continue
            print(f"{PREFIX} Spot eviction notice {event_id} (not before {event.get('NotBefore')})", flush=True)
            print(checkpoint(config, state, "spot", config.spot_checkpoint_seconds, time.time()), flush=True)
            state.events_done = [*state.events_done, event_id][-20:]
            state.save(config.state_file)  # the eviction may follow the acknowledgement at once
            try:
                _imds(config, EVENTS_PATH, {"StartRequests": [{"EventId": event_id}]})
                return f"{PREFIX} eviction {event_id} acknowledged"
            except (OSError, ValueError) as exc:
                return f"{PREFIX} eviction {event_id} not acknowledged ({getattr(exc, 'reason', exc)})"
        if time.monotonic() + config.poll_seconds > until:
            return failed
        time.sleep(config.poll_seconds)


def tick(config: Config, now: float | None = None) -> int:
    """One invocation: observe, decide, log, act; checkpoint the runs first where a stop is near."""
    started, now = time.monotonic(), time.time() if now is None else now
    state = State.load(config.state_file)
    try:
        boot_id, uptime = boot_facts()
    except OSError:
        boot_id, uptime = "unknown", 0.0
    if state.boot_id != boot_id:  # a fresh start: yesterday's idle time and stop request no longer count
        state.idle_since, state.stop_requested_at, state.boot_id = None, None, boot_id
    state.boots[boot_id] = max(uptime, state.boots.get(boot_id, 0.0))
    state.seen[boot_id] = now
    facts = observe(config, state, now)
    decision = decide(facts, state, config.window, config.budget_usd, config.stop_retry_seconds)
    state.idle_since, state.stop_requested_at = decision.idle_since, decision.stop_requested_at
    lead = config.shutdown_lead_minutes * 60
    due = shutdown_due(now, config.shutdown_at, config.shutdown_zone, lead) if config.shutdown_at else None
    if due and due != state.shutdown_done:  # the auto-shutdown deallocates without notice: checkpoint before it
        print(f"{PREFIX} daily shutdown at {due}", flush=True)
        print(checkpoint(config, state, "shutdown", config.checkpoint_seconds, now), flush=True)
        state.shutdown_done = due
    code = 0
    if decision.action == "stop":
        print(f"{decision.line}: {ACTION_WORDS[config.mode]}", flush=True)
        print(checkpoint(config, state, decision.cause, config.checkpoint_seconds, now), flush=True)
        ok, message = act(config)
        print(f"{PREFIX} {message}", flush=True)
        if ok:
            state.idle_since = None  # the next start begins a new window
        else:
            state.stop_requested_at, code = None, 1
    else:
        print(decision.line, flush=True)
    state.last, state.checked_at = decision.line, now
    state.save(config.state_file)
    if config.spot and decision.action != "stop":
        if line := watch_events(config, state, started + config.watch_seconds):
            print(line, flush=True)
        state.save(config.state_file)
    return code


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"{PREFIX} usage: idle_agent.py CONFIG.json", file=sys.stderr)
        return 2
    try:
        config = Config.load(argv[1])
    except (OSError, ValueError, TypeError) as exc:
        print(f"{PREFIX} bad config {argv[1]}: {exc}", flush=True)
        return 2
    return tick(config)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
