"""The validated intent behind `labctl up`: pure data, checked before anything touches a machine or the cloud."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from labctl import validate
from labctl.errors import UsageError
from labctl.state import DEFAULT_NAME, validate_lab_name

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
    """What the user asked `up` for. Empty or None means "not given", so that variables and config files still
    apply (``labctl.workflows.up.build_spec``); ``validate`` fills the defaults."""

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

    def _check_nodes(self) -> None:
        hosts = 1 + len(self.workers)
        if self.nodes is None:
            # Not asked for: an SSH cluster is the hosts given; elsewhere a new lab gets one machine and an
            # existing one keeps what it has (the target reads that from the lab's record).
            self.nodes = hosts if self.target == "ssh" else None
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
        self.name = self.name or DEFAULT_NAME
        self.target = validate.check_target(self.target or ("ssh" if self.host is not None else "azure"))
        self.shutdown_at = None if self.no_shutdown else (self.shutdown_at or "19:00")
        validate_lab_name(self.name)
        if self.target == "ssh" and self.host is None:
            raise UsageError("--target ssh needs --host user@host[:port].", hint="Name the machine to use.")
        self._check_flags_fit_target()
        self._check_nodes()
        if self.host_key_fingerprint is not None:
            from labctl.keys import check_fingerprint

            self.host_key_fingerprint = check_fingerprint(self.host_key_fingerprint)
        if self.target == "azure":
            from labctl.pricing import choose_sizes

            checks = ((self.subscription, validate.check_subscription), (self.region, validate.check_region))
            for value, check in (*checks, (self.allow_ip, validate.check_allow_ip)):
                if value is not None:
                    check(value)
            choose_sizes(self.sizes, self.gpu)  # a size that is no size, or a CPU size with --gpu
        if self.shutdown_at is not None:
            validate.check_shutdown_at(self.shutdown_at)
        if self.ssh_key is not None:
            from labctl.keys import check_key_pair

            check_key_pair(self.ssh_key.expanduser(), "--ssh-key", need_pub=self.target == "azure")
        return self
