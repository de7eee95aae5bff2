"""Real parts for the bad-input matrix: a fake ARM over HTTPS (one per module), real key files, real state files,
and a tripwire port standing where a lab's machine would be, so any connection attempt is counted."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from labctl.keys import generate_ed25519
from labctl.state import LabRecord, NodeRecord, RunRecord, StateStore
from tests.fakearm.fixtures import fast_env
from tests.fakearm.server import FakeArm

WRITES = ("PUT", "PATCH", "DELETE")


class Tripwire:
    """A TCP port that accepts and drops every connection, counting them: a lab's machine nobody may reach."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.hits = 0
        threading.Thread(target=self._serve, name="tripwire", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.hits += 1
            conn.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


@pytest.fixture(scope="module")
def arm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeArm]:
    """One fake ARM for the module. Every write is refused by a standing fault, so a case that slips through
    validation ends fast (and is counted) instead of building a lab."""
    fake = FakeArm(tmp_path_factory.mktemp("fakearm")).start()
    for method in WRITES:
        fake.inject(method=method, path=r"^/subscriptions/", status=409, code="WriteTripwire", times=-1)
    fake.inject(method="POST", path=r"^/subscriptions/.*/providers/", status=409, code="WriteTripwire", times=-1)
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def tripwire() -> Iterator[Tripwire]:
    wire = Tripwire()
    yield wire
    wire.close()


@dataclass
class World:
    """Where one case runs: its directories, its key files, and what it may not touch."""

    arm: FakeArm
    tripwire: Tripwire
    root: Path
    state: Path
    project: Path
    user_config: Path
    keys: Path
    placeholders: dict[str, str] = field(default_factory=dict)

    def fill(self, text: str) -> str:
        for key, value in self.placeholders.items():
            text = text.replace("{" + key + "}", value)
        return text

    def snapshot(self) -> set[str]:
        """Every file under the state and project directories, but the per-lab lock files: those are the anchor
        of an OS lock that dies with its process, hold no lab, and stay by design (labctl.locks)."""
        found: set[str] = set()
        for base in (self.state, self.project):
            found |= {str(p) for p in base.rglob("*") if p.relative_to(base).parts[0] != "locks"}
        return found

    def arm_writes(self, since: int) -> list[tuple[str, str]]:
        return [
            (m, p)
            for m, p in self.arm.requests[since:]
            if p.lower().startswith("/subscriptions/") and (m in WRITES or (m == "POST" and "/providers/" in p))
        ]


def _write_pair(path: Path, private: str, public: str) -> None:
    path.write_text(private)
    path.chmod(0o600)
    path.with_name(path.name + ".pub").write_text(public + "\n")


def make_keys(root: Path) -> Path:
    """Key files of every kind a user can point labctl at by mistake."""
    keys = root / "keys"
    keys.mkdir()
    good = generate_ed25519("good")
    other = generate_ed25519("other")
    _write_pair(keys / "good", good.private_openssh, good.public_line)
    (keys / "pubonly.pub").write_text(good.public_line + "\n")
    _write_pair(keys / "garbage", "this is not a key\n", good.public_line)
    _write_pair(keys / "empty", "", good.public_line)
    (keys / "adir").mkdir()
    (keys / "adir.pub").write_text(good.public_line + "\n")
    locked = Ed25519PrivateKey.generate()
    locked_text = locked.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(b"correct horse"),
    ).decode()
    locked_pub = locked.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write_pair(keys / "locked", locked_text, locked_pub.decode() + " locked")
    pkcs8 = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_pair(keys / "pkcs8", pkcs8.decode(), good.public_line)
    _write_pair(keys / "mismatch", good.private_openssh, other.public_line)
    (keys / "nopub").write_text(good.private_openssh)
    (keys / "nopub").chmod(0o600)
    # A public key handed over where the private one belongs, with a .pub of its own beside it.
    (keys / "pubaspriv").write_text(good.public_line + "\n")
    (keys / "pubaspriv.pub").write_text(good.public_line + "\n")
    (keys / "binary").write_bytes(bytes(range(256)) * 4)
    (keys / "binary.pub").write_text(good.public_line + "\n")
    os.mkfifo(keys / "fifo")  # reading it would wait forever for a writer
    (keys / "fifo.pub").write_text(good.public_line + "\n")
    _write_pair(keys / "huge", good.private_openssh + "#" * (1 << 20), good.public_line)
    return keys


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The key files, made once per module (a passphrase-protected key takes a deliberately slow KDF);
    no case writes to them."""
    return make_keys(tmp_path_factory.mktemp("keyring"))


@pytest.fixture
def world(
    arm: FakeArm,
    tripwire: Tripwire,
    keyring: Path,
    tmp_path: Path,
    isolated_state: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> World:
    """An isolated environment: the fake ARM's service principal, a project directory as the working directory,
    and a user config file of its own. No LABCTL_* variable the suite set for other tests (the results directory,
    the test image's base) is any case's input."""
    for key in [k for k in os.environ if k.startswith("LABCTL_") and k != "LABCTL_STATE_DIR"]:
        monkeypatch.delenv(key)
    home = tmp_path / "home"
    home.mkdir()
    for key, value in fast_env(arm, home).items():
        monkeypatch.setenv(key, value)
    user_config = tmp_path / "user" / "config.toml"
    user_config.parent.mkdir()
    monkeypatch.setenv("LABCTL_CONFIG", str(user_config))
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    keys = keyring
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # no ssh-agent of the person running the tests
    (tmp_path / "a-file").write_text("not a directory\n")
    (tmp_path / "a-dir").mkdir()
    w = World(arm, tripwire, tmp_path, isolated_state, project, user_config, keys)
    w.placeholders = {
        "k": str(keys),
        "tmp": str(tmp_path),
        "trip": str(tripwire.port),
        "sub": arm.subscription,
    }
    return w


def lab_record(world: World, kind: str, name: str = "lab") -> LabRecord:
    """A lab record on disk. 'ready' and 'creating' are SSH-target labs whose machine is the tripwire;
    'stopped' and 'azure' are Azure labs the fake ARM has never seen."""
    host = generate_ed25519("host")
    record = LabRecord(
        name=name, target="ssh", nodes=[NodeRecord(host="127.0.0.1", port=world.tripwire.port, user="lab")]
    )
    record.ssh_key_path = str(world.keys / "good")
    record.nodes[0].host_key = host.public_line
    if kind in ("ready", "stopped", "azure"):
        record.status = "ready"
        record.container_name = f"labctl-{name}"
        record.jupyter_token = "0" * 64
        record.runs = [RunRecord(run_id="20260101-000000-abcd", started_at="2026-01-01T00:00:00+00:00")]
    if kind in ("stopped", "azure"):
        record.target = "azure"
        record.target_data = {
            "subscription": world.arm.subscription,
            "resource_group": f"labctl-{name}",
            "vm_name": f"{name}-vm",
            "region": "eastus",
            "size": "Standard_D4s_v5",
        }
    if kind == "stopped":
        record.status = "stopped"
    if kind == "creating":
        record.status = "creating"
        record.nodes[0].host_key = None
    StateStore().save(record)
    return record
