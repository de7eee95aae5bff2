"""Host-key helpers: parsing, fingerprints that match ssh-keygen, known_hosts lookups (hashed too)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from labctl.errors import UsageError
from labctl.keys import (
    fingerprint,
    generate_ed25519,
    known_hosts_name,
    normalize,
    read_known_hosts,
    split_key_line,
)


def test_generated_pair_parses_and_round_trips(tmp_path: Path) -> None:
    pair = generate_ed25519("lab-host")
    private, public = pair.private_openssh, pair.public_line
    assert public.startswith("ssh-ed25519 ") and public.endswith(" lab-host")
    import paramiko

    path = tmp_path / "k"
    path.write_text(private)
    loaded = paramiko.PKey.from_path(path)
    assert f"{loaded.get_name()} {loaded.get_base64()}" == normalize(public)


def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed")
    public = generate_ed25519("x").public_line
    (tmp_path / "k.pub").write_text(public + "\n")
    out = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == fingerprint(public)


_ED25519_DATA = generate_ed25519().public_line.split()[1]


@pytest.mark.parametrize(
    "bad",
    ["", "ssh-ed25519", "ssh-ed25519 not-base64!!", f"ssh-rsa {_ED25519_DATA}"],  # the last one lies about its type
)
def test_malformed_keys_are_refused_plainly(bad: str) -> None:
    with pytest.raises(UsageError):
        split_key_line(bad)


def test_known_hosts_names() -> None:
    assert known_hosts_name("203.0.113.7", 22) == "203.0.113.7"
    assert known_hosts_name("203.0.113.7", 2222) == "[203.0.113.7]:2222"


def _ecdsa_public() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def test_lookup_prefers_ed25519_and_reads_hashed_entries() -> None:
    ed = generate_ed25519("ed").public_line
    other = generate_ed25519().public_line
    assert read_known_hosts("nowhere", 22)[0] == []  # no known_hosts yet
    path = Path.home() / ".ssh" / "known_hosts"
    path.parent.mkdir()
    path.write_text(f"# comment line\n[10.1.2.3]:2222 {ed}\nother.example {other}\n[10.1.2.3]:2222 {_ecdsa_public()}\n")
    found = read_known_hosts("10.1.2.3", 2222)[0]
    assert found[0] == normalize(ed)
    assert len(found) == 2
    assert read_known_hosts("10.1.2.3", 22)[0] == []

    if shutil.which("ssh-keygen") is None:
        return
    subprocess.run(["ssh-keygen", "-H", "-f", str(path)], capture_output=True, check=True)
    assert "10.1.2.3" not in path.read_text()
    assert read_known_hosts("10.1.2.3", 2222)[0][0] == normalize(ed)
