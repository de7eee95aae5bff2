"""A lab's login key pair, checked before anything connects, and its host keys, pinned before any connection: an
Azure VM's is made here for cloud-init; others come from known_hosts, a given fingerprint or the user's yes."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import socket
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labctl.errors import LabctlError, UsageError
from labctl.files import make_private_dir, write_private
from labctl.state import user_dir
from labctl.ui import Reporter, agreed

PUBLIC_PREFIXES = ("ssh-ed25519 ", "ssh-rsa ", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-")
MAX_KEY_BYTES = 64 * 1024  # an OpenSSH RSA-16384 private key, the largest there is, takes about 12 kB


@dataclass(frozen=True)
class KeyPair:
    private_openssh: str  # "-----BEGIN OPENSSH PRIVATE KEY-----..."
    public_line: str  # "ssh-ed25519 AAAA... comment"


def generate_ed25519(comment: str = "") -> KeyPair:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return KeyPair(private, f"{public} {comment}".strip())


def lab_key_path(lab: str) -> Path:
    return user_dir("state") / "keys" / lab / "id_ed25519"


def ensure_user_key(lab: str, given: Path | None) -> tuple[Path, str]:
    """The user's key pair if given, else one made for the lab and reused by every later `up`."""
    path = given.expanduser() if given is not None else lab_key_path(lab)
    pub = path.with_name(path.name + ".pub")
    if given is not None or (path.is_file() and pub.is_file()):  # a given pair was checked with the options
        return path, read_key_file(pub, f"The key of lab '{lab}'").decode(errors="replace").strip()
    pair = generate_ed25519(f"labctl-{lab}")
    make_private_dir(path.parent)
    write_private(path, pair.private_openssh)
    write_private(pub, pair.public_line + "\n")
    return path, pair.public_line


def check_key_pair(path: Path, what: str, *, need_pub: bool = True, hint: str | None = None) -> None:
    """A key handed to a new VM (``need_pub``) needs its .pub; an encrypted one logs in through the ssh-agent only."""
    try:
        public = check_private_key(path, what)
    except UsageError as exc:
        exc.hint = hint or exc.hint
        raise
    pub = path.with_name(path.name + ".pub")
    line = read_key_file(pub, what).decode(errors="replace").strip() if pub.is_file() else None
    if line is None and need_pub:
        raise UsageError(
            f"The public half of {path} ({pub}) is missing.",
            hint=f"Recreate it with 'ssh-keygen -y -f {path} > {pub}', or leave {what} out.",
        )
    if line is not None and not line.startswith(PUBLIC_PREFIXES):
        raise UsageError(f"{pub} is not an OpenSSH public key.", hint="Give an ed25519 or RSA key pair.")
    if line is not None and public is not None and line.split()[:2] != public.split()[:2]:
        raise UsageError(
            f"{pub} is not the public half of {path}: they belong to different keys.",
            hint=f"Recreate it with 'ssh-keygen -y -f {path} > {pub}', or give the matching pair.",
        )
    # Without a .pub, an agent that runs may hold the key: paramiko asks it.
    if public is None and not (_agent_holds(line) if line else os.environ.get("SSH_AUTH_SOCK")):
        agent = "no ssh-agent holds it" if line else "no ssh-agent runs"
        raise UsageError(
            f"{what} {path} is protected by a passphrase and {agent}.",
            hint=f"labctl logs in without a terminal to ask for a passphrase: add the key to your ssh-agent ('ssh-add "
            f"{path}'), use a key without a passphrase, or leave the key out and labctl makes one for the lab.",
        )


def check_lab_key(name: str, key_path: str | None) -> None:
    """A lab's recorded login key, named before anything connects when it is gone, replaced or locked."""
    if key_path:
        hint = (
            f"Put the lab's private key back at {key_path}, or give it with 'labctl up --name {name} --ssh-key "
            "PATH' (the machine must already accept it)."
        )
        check_key_pair(Path(key_path), f"The SSH key of lab '{name}',", need_pub=False, hint=hint)


def check_private_key(path: Path, what: str) -> str | None:
    """The key's public line, or None when it is encrypted (usable through an ssh-agent only)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    if not path.exists():
        raise UsageError(
            f"{what} {path} does not exist.",
            hint="Give the path of your private key (its .pub beside it), or leave it out and labctl makes a key "
            "pair for the lab.",
        )
    data = read_key_file(path, what)
    text = data.decode(errors="replace").strip()
    if text.startswith(PUBLIC_PREFIXES) or "PUBLIC KEY" in text.split("\n", 1)[0]:
        raise UsageError(
            f"{what} {path} is a public key; labctl needs the private key it belongs to.",
            hint=f"Give {path.with_suffix('') if path.suffix == '.pub' else 'the file without .pub'} instead "
            "(the private half, with this .pub beside it).",
        )
    if text.startswith(("-----BEGIN PRIVATE KEY", "-----BEGIN ENCRYPTED PRIVATE KEY")):
        raise UsageError(  # paramiko, which logs in, reads OpenSSH and the older PEM formats, not PKCS#8
            f"{what} {path} is a PKCS#8 private key, which labctl's SSH client cannot read.",
            hint=f"Rewrite it in OpenSSH's format with 'ssh-keygen -p -f {path}' (it keeps the key), or give another.",
        )
    load = serialization.load_ssh_private_key if "OPENSSH PRIVATE KEY" in text else serialization.load_pem_private_key
    try:
        key: Any = load(data, password=None)
    except TypeError:  # "password was not given but the private key is encrypted"
        return None
    except (ValueError, UnsupportedAlgorithm):
        raise UsageError(
            f"{what} {path} is not a private key labctl can read.",
            hint="Give an OpenSSH private key (ed25519, ECDSA or RSA), for example ~/.ssh/id_ed25519.",
        ) from None
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def read_key_file(path: Path, what: str) -> bytes:
    """Only a regular file of key size: a FIFO would hang every command and a device such as /dev/zero never end."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO opens at once, to be refused
    except OSError as exc:
        problem = "a directory" if path.is_dir() else f"unreadable ({exc.strerror})"
    else:
        try:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode) and info.st_size <= MAX_KEY_BYTES:
                return os.read(fd, MAX_KEY_BYTES)
        finally:
            os.close(fd)
        problem = f"{info.st_size:,} bytes, far larger than any key"
        if not stat.S_ISREG(info.st_mode):
            problem = "a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO, socket or device"
    raise UsageError(
        f"{what} {path} is {problem}, not a key file.",
        hint="Give the path of your private key file, for example ~/.ssh/id_ed25519 (its .pub beside it).",
    )


def _agent_holds(public_line: str) -> bool:
    import paramiko

    try:  # no ssh-agent: no keys
        return public_line.split()[1] in {key.get_base64() for key in paramiko.Agent().get_keys()}
    except (IndexError, paramiko.SSHException, OSError):
        return False


def forget_lab_keys(lab: str) -> None:
    """Remove the key pair labctl made for a lab (never a key the user brought)."""
    path = lab_key_path(lab)
    for candidate in (path, path.with_name(path.name + ".pub")):
        candidate.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()


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


def known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def known_hosts_path() -> Path:
    return Path.home() / ".ssh" / "known_hosts"


def read_known_hosts(host: str, port: int) -> tuple[list[str], set[str]]:
    """(the host's keys, best type first; those revoked for it), read as OpenSSH reads ``known_hosts``."""
    name = known_hosts_name(host, port)
    lines: list[str] = []
    with contextlib.suppress(OSError):  # none, or unreadable: no key known
        lines = known_hosts_path().read_text(errors="replace").splitlines()
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
            offered = transport.get_remote_server_key()
            return f"{offered.get_name()} {offered.get_base64()}"
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise LabctlError(
                f"{host}:{port} did not complete an SSH handshake ({exc}).", hint="Is it an SSH server?"
            ) from None


def check_fingerprint(text: str) -> str:
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
    """``--yes`` never pins an unknown key; ``one_of_several`` (a cluster's host) has no flag of its own to suggest."""
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
