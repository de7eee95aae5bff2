"""SSH host keys, never trusted unpinned: an Azure VM's is made here; others come from ``~/.ssh/known_hosts``, a
fingerprint the user gives, or the user's confirmation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from labctl.errors import LabctlError, UsageError
from labctl.ui import Reporter, agreed

if TYPE_CHECKING:
    import paramiko

KEYGEN = "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub"  # the machine's own fingerprint, read there
# The order in which a host's keys are preferred when several are known.
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")


class HostKeyMismatch(LabctlError):
    def __init__(self, where: str, expected: str, got: str) -> None:
        super().__init__(
            f"The SSH host key of {where} does not match the key labctl pinned for it "
            f"(expected {fingerprint(expected)}, got {fingerprint(got)}). This can mean someone is intercepting "
            "the connection (a man-in-the-middle), or that the machine was rebuilt or its address now belongs "
            "to another machine. labctl refused to connect and sent nothing.",
            hint="Check the machine's real key on its console (for Azure: the serial console or boot "
            f"diagnostics; on the host: '{KEYGEN}'). Only if you are sure "
            "the new key is right, remove the old one from ~/.ssh/known_hosts (ssh-keygen -R HOST) and run "
            "'labctl up' again for an SSH host; an Azure lab's VM should never change its key.",
        )


def split_key_line(line: str) -> tuple[str, str]:
    """``'ssh-ed25519 AAAA... comment'`` -> (type, base64 data), checked enough to catch a pasted mistake."""
    parts = line.strip().split()
    if len(parts) < 2:
        raise UsageError(f"'{line[:60]}' is not an SSH public key.", hint="Expected 'ssh-ed25519 AAAA...'.")
    key_type, data = parts[0], parts[1]
    try:
        blob = base64.b64decode(data, validate=True)
    except ValueError:
        raise UsageError(f"The SSH public key '{data[:20]}...' is not valid base64.", hint="Copy it again.") from None
    if not blob.startswith(len(key_type).to_bytes(4, "big") + key_type.encode()):
        raise UsageError(f"The SSH public key does not say it is a '{key_type}' key.", hint="Copy it again.")
    return key_type, data


def normalize(line: str) -> str:
    return " ".join(split_key_line(line))


def fingerprint(line: str) -> str:
    """As ``ssh-keygen -l`` shows it, so users can compare it with what the host says."""
    _, data = split_key_line(line)
    digest = hashlib.sha256(base64.b64decode(data)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def key_line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def known_hosts_path() -> Path:
    return Path.home() / ".ssh" / "known_hosts"


def read_known_hosts(host: str, port: int) -> tuple[list[str], set[str]]:
    """(the host's keys, best type first; those revoked for it), read as OpenSSH reads ``known_hosts``."""
    name = known_hosts_name(host, port)
    try:
        lines = known_hosts_path().read_text(errors="replace").splitlines()
    except OSError:  # none, or unreadable: no key known
        lines = []
    keys: list[str] = []
    revoked: set[str] = set()
    for line in lines:
        fields = line.split()
        marker = fields.pop(0) if fields and fields[0].startswith("@") else None
        if len(fields) < 3 or fields[0].startswith("#") or not _hosts_match(fields[0], name):
            continue
        try:
            key = normalize(f"{fields[1]} {fields[2]}")
        except UsageError:
            continue
        if marker == "@revoked":
            revoked.add(key)
        elif marker is None:  # @cert-authority, and markers OpenSSH does not know, name no host key
            keys.append(key)
    rank = {t: i for i, t in enumerate(KEY_TYPES)}
    known = [k for k in dict.fromkeys(keys) if k not in revoked]
    return sorted(known, key=lambda line: rank.get(line.split()[0], len(rank))), revoked


def _hosts_match(patterns: str, name: str) -> bool:
    """OpenSSH's host patterns: a hashed name, or a list of globs where a matching negated one rules the line out."""
    if patterns.startswith("|1|"):
        try:
            _, _, salt, digest = patterns.split("|")
            mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
            return hmac.compare_digest(mac, base64.b64decode(digest))
        except ValueError:
            return False
    globs = {p: re.escape(p.removeprefix("!")).replace(r"\*", ".*").replace(r"\?", ".") for p in patterns.split(",")}
    matching = [p for p, glob in globs.items() if re.fullmatch(glob, name, re.IGNORECASE | re.DOTALL)]
    return bool(matching) and not any(p.startswith("!") for p in matching)


def scan_host_key(host: str, port: int, timeout: float = 15.0) -> str:
    """Ask the server for its host key without trusting it, the way ``ssh-keyscan`` does."""
    import paramiko

    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise LabctlError(
            f"Could not reach {host}:{port} to read its SSH host key ({exc}).",
            hint="Check the address and port, and that sshd runs there and a firewall lets you in.",
        ) from None
    with paramiko.Transport(sock) as transport:
        try:
            transport.start_client(timeout=timeout)  # asks for ed25519 first, as the hints' ssh-keyscan does
            return key_line(transport.get_remote_server_key())
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise LabctlError(
                f"{host}:{port} did not complete an SSH handshake ({exc}).", hint="Is it an SSH server?"
            ) from None


def check_fingerprint(text: str) -> str:
    """A fingerprint as ``ssh-keygen -lf`` prints it ('SHA256:' and 43 base64 characters), or a UsageError."""
    value = text.strip()
    if not re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}=?", value):
        raise UsageError(
            f"'{text}' is not an SSH host key fingerprint.",
            hint=f"Give it as '{KEYGEN}' prints it on the machine, "
            "for example SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s.",
        )
    return value.rstrip("=")


def confirm_host_key(
    host: str,
    port: int,
    ui: Reporter,
    *,
    expected: str | None = None,
    assume_yes: bool = False,
    one_of_several: bool = False,
) -> str:
    """The key to pin for a new host: ``--yes`` never pins an unknown one, only known_hosts or ``expected`` (a
    checked --host-key-fingerprint) do; ``one_of_several`` (a cluster's host) has no flag of its own to suggest."""
    known, revoked = read_known_hosts(host, port)
    if expected is not None:
        known = [k for k in known if fingerprint(k) == expected]
    if known:
        ui.info(f"Using the host key of {host}:{port} from {known_hosts_path()} ({fingerprint(known[0])}).")
        return known[0]
    offered = scan_host_key(host, port)
    shown = f"{offered.split()[0]} {fingerprint(offered)}"
    if offered in revoked:
        raise LabctlError(
            f"The host {host}:{port} offered the key {shown}, which {known_hosts_path()} marks @revoked; "
            "nothing was pinned.",
            hint="Find out why that key was revoked before you connect; the machine needs a new host key.",
        )
    if expected is not None:
        if fingerprint(offered) != expected:
            raise LabctlError(
                f"The host {host}:{port} offered the key {shown}, not {expected} as --host-key-fingerprint says. "
                "This can mean someone is intercepting the connection, or that the fingerprint is of another "
                "machine or key type; nothing was pinned.",
                hint=f"Read the fingerprint again on the machine itself ('{KEYGEN}') and run the command with it.",
            )
        ui.info(f"Pinning the host key of {host}:{port}, {shown}, which matches --host-key-fingerprint.")
        return offered
    scan = f"ssh-keyscan -t ed25519{'' if port == 22 else f' -p {port}'} {host}"
    add = f"add the key to known_hosts ('{scan} >> ~/.ssh/known_hosts')"
    way_out = f"Check that fingerprint against the machine ('{KEYGEN}' there), " + (
        f"then {add} and run the same command again."
        if one_of_several
        else f"then run the same command with --host-key-fingerprint {fingerprint(offered)}, or {add}."
    )
    if assume_yes or not sys.stdin.isatty():
        why = "--yes does not pin an unknown key" if assume_yes else "cannot ask you to confirm it here"
        raise UsageError(
            f"labctl does not know the SSH host key of {host}:{port}, and {why}. The host offered {shown}.",
            hint=way_out,
        )
    if not agreed(
        f"The host {host}:{port} is not in {known_hosts_path()}. Its key is {shown}.\n"
        f"Compare it with the machine's own ({KEYGEN}). Pin it and continue?"
    ):
        raise UsageError("The host key was not confirmed; nothing was changed.", exit_code=1)
    return offered
