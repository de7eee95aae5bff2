"""A machine with a private address of its own on this computer: a network namespace joined to the host by a
veth pair, the address on the namespace's side and a host route to it, as a worker VM sits in the lab's subnet.

Only this computer can reach the address (nothing forwards it further), so a test that connects to it goes
where the test says. Needs root and ``ip``; ``netns_unavailable()`` says why not, for a clear skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def netns_unavailable() -> str | None:
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root; run the tests as root to include these"
    probe = f"lbprobe{secrets.token_hex(3)}"
    made = _ip("netns", "add", probe)
    if made.returncode != 0:
        return f"'ip netns add' is not allowed here ({made.stderr.strip()})"
    _ip("netns", "delete", probe)
    return None


@dataclass
class PrivateHost:
    """One namespace with ``address`` on its side of a veth pair; ``close()`` removes both and the route."""

    netns: str
    address: str
    host_side: str

    def close(self) -> None:
        _ip("route", "delete", f"{self.address}/32", "dev", self.host_side)
        _ip("link", "delete", self.host_side)  # its peer goes with it
        _ip("netns", "delete", self.netns)


def private_host(address: str) -> PrivateHost:
    """A namespace reachable from this computer at ``address`` (routed through its own veth pair)."""
    tag = secrets.token_hex(3)
    netns, host_side, inside = f"labctl-t{tag}", f"lbh{tag}", f"lbn{tag}"  # link names: 15 characters at most
    host = PrivateHost(netns, address, host_side)
    steps = [
        ("netns", "add", netns),
        ("link", "add", host_side, "type", "veth", "peer", "name", inside),
        ("link", "set", inside, "netns", netns),
        ("-n", netns, "addr", "add", f"{address}/32", "dev", inside),
        ("-n", netns, "link", "set", "lo", "up"),
        ("-n", netns, "link", "set", inside, "up"),
        ("-n", netns, "route", "add", "default", "dev", inside),  # replies go back over the pair
        ("link", "set", host_side, "up"),
        ("route", "add", f"{address}/32", "dev", host_side),
    ]
    for step in steps:
        done = _ip(*step)
        if done.returncode != 0:
            host.close()
            raise RuntimeError(f"ip {' '.join(step)} failed: {done.stderr.strip()}")
    return host


# The fake ARM gives every lab the addresses Azure would (10.42.0.4, .5, ...), and a host route to an address is
# this computer's alone: test runs side by side take turns with their private hosts.
_LOCK = os.path.join(tempfile.gettempdir(), "labctl-test-private-hosts.lock")


@contextlib.contextmanager
def private_hosts() -> Iterator[list[PrivateHost]]:
    """A list to add private hosts to; every one is removed afterwards, whatever happened."""
    made: list[PrivateHost] = []
    with open(_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield made
        finally:
            for host in made:
                host.close()
