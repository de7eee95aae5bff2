"""SSH keys: the user's key pair for a lab, and an Azure VM's host key, made here and handed to the VM through
cloud-init so that labctl knows the machine before it ever connects (no trust on first use)."""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labctl.errors import UsageError
from labctl.files import make_private_dir, write_private
from labctl.state import user_dir

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
    """A private key labctl can log in with (an encrypted one through the ssh-agent). A key handed to a new VM
    (``need_pub``) needs its matching .pub; ``hint`` replaces the way out of a bad key."""
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
    """The public key line of the private key at ``path``, or None when it is encrypted (usable through an
    ssh-agent only)."""
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
    try:
        load = (
            serialization.load_ssh_private_key if "OPENSSH PRIVATE KEY" in text else serialization.load_pem_private_key
        )
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
        problem = (
            "a directory"
            if stat.S_ISDIR(info.st_mode)
            else "a FIFO, socket or device"
            if not stat.S_ISREG(info.st_mode)
            else f"{info.st_size:,} bytes, far larger than any key"
        )
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
