"""SSH keys: the user's key pair for a lab, and the VM's host key made here so the first connection is verified.

The host key is generated locally and handed to the VM through cloud-init, so labctl knows the machine's
identity before it ever connects: no trust-on-first-use, no `StrictHostKeyChecking=no`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from labctl.errors import UsageError
from labctl.files import make_private_dir, write_private
from labctl.state import state_dir


@dataclass(frozen=True)
class KeyPair:
    private_openssh: str  # "-----BEGIN OPENSSH PRIVATE KEY-----..."
    public_line: str  # "ssh-ed25519 AAAA... comment"


def generate_ed25519(comment: str = "") -> KeyPair:
    """A new ed25519 key pair, for a lab's login key and for an Azure VM's host key alike.

    The one generator in labctl; ``labctl.hostkeys.normalize`` turns ``public_line`` into the pinned form.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return KeyPair(private, f"{public} {comment}".strip())


def lab_key_path(lab: str) -> Path:
    return state_dir() / "keys" / lab / "id_ed25519"


def ensure_user_key(lab: str, given: Path | None) -> tuple[Path, str]:
    """The private key path and public key line used to log in to the lab's VM.

    A key the user gave is used as is (its ``.pub`` must sit beside it); otherwise a key pair made for this lab
    under the state directory, reused on every later `up` so that a resumed lab keeps the same key.
    """
    if given is not None:
        path = given.expanduser()
        pub = path.with_name(path.name + ".pub")
        if not pub.is_file():
            raise UsageError(
                f"The public half of {path} ({pub}) is missing.",
                hint=f"Recreate it with 'ssh-keygen -y -f {path} > {pub}', or leave --ssh-key out.",
            )
        line = pub.read_text().strip()
        if not line.startswith(("ssh-ed25519 ", "ssh-rsa ", "ecdsa-sha2-")):
            raise UsageError(f"{pub} is not an OpenSSH public key.", hint="Give an ed25519 or RSA key pair.")
        return path, line
    path = lab_key_path(lab)
    pub = path.with_name(path.name + ".pub")
    if path.is_file() and pub.is_file():
        return path, pub.read_text().strip()
    pair = generate_ed25519(f"labctl-{lab}")
    make_private_dir(path.parent)
    write_private(path, pair.private_openssh)
    write_private(pub, pair.public_line + "\n")
    return path, pair.public_line


def forget_lab_keys(lab: str) -> None:
    """Remove the key pair labctl made for a lab (never a key the user brought)."""
    path = lab_key_path(lab)
    for candidate in (path, path.with_name(path.name + ".pub")):
        candidate.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()
