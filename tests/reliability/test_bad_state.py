"""A state file or key file that is damaged, of the wrong shape or simply gone is named, with the way out, by
every command that reads it; nothing is connected to, created in Azure, or written over the damaged file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from labctl.state import StateStore
from tests.reliability.checks import Case, assert_refused, before, invoke
from tests.reliability.conftest import World, lab_record

USAGE = 2
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("status",),
    ("open",),
    ("run-lab", "--data", "synthetic"),
    ("logs",),
    ("runs",),
    ("fetch",),
    ("stop",),
    ("start",),
    ("ssh",),
    ("down", "--yes"),
)


def _edit(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], str]:
    def make(path: Path) -> str:
        data = json.loads(path.read_text())
        change(data)
        return json.dumps(data)

    return make


# id -> (what to write over the lab's state file, given the good one; the words its refusal must contain)
STATE_DAMAGE: dict[str, tuple[Callable[[Path], str | bytes], tuple[str, ...]]] = {
    "truncated": (lambda p: p.read_text()[: len(p.read_text()) // 2], ("{state}/labs/lab.json",)),
    "empty": (lambda p: "", ("{state}/labs/lab.json",)),
    "binary": (lambda p: bytes(range(256)), ("{state}/labs/lab.json",)),
    "a-list": (lambda p: "[1, 2, 3]", ("{state}/labs/lab.json",)),
    "port-as-text": (_edit(lambda d: d["nodes"][0].update(port="22")), ("{state}/labs/lab.json", "port")),
    "runs-not-a-list": (_edit(lambda d: d.update(runs=3)), ("{state}/labs/lab.json", "runs")),
    "name-of-another-lab": (_edit(lambda d: d.update(name="other")), ("{state}/labs/lab.json", "other")),
    "unknown-status": (_edit(lambda d: d.update(status="flying")), ("{state}/labs/lab.json", "flying")),
    "unknown-target": (_edit(lambda d: d.update(target="gcp")), ("{state}/labs/lab.json", "gcp")),
    "port-out-of-range": (_edit(lambda d: d["nodes"][0].update(port=70000)), ("{state}/labs/lab.json", "70000")),
    "host-with-shell": (
        _edit(lambda d: d["nodes"][0].update(host="127.0.0.1; id")),
        ("{state}/labs/lab.json", "127.0.0.1; id"),
    ),
    "host-key-garbage": (
        _edit(lambda d: d["nodes"][0].update(host_key="not a key")),
        ("{state}/labs/lab.json", "host_key"),
    ),
    "jupyter-port-zero": (_edit(lambda d: d.update(jupyter_port=0)), ("{state}/labs/lab.json", "jupyter_port")),
    "no-nodes": (_edit(lambda d: d.update(nodes=[])), ("{state}/labs/lab.json", "nodes")),
    "run-id-traversal": (
        _edit(lambda d: d.update(runs=[{"run_id": "../../x", "started_at": "2026-01-01T00:00:00+00:00"}])),
        ("{state}/labs/lab.json", "../../x"),
    ),
}

# id -> (where the record's ssh_key_path points; the words its refusal must contain)
KEY_DAMAGE: dict[str, tuple[str, tuple[str, ...]]] = {
    "key-missing": ("{k}/missing", ("{k}/missing",)),
    "key-is-public": ("{k}/pubonly.pub", ("{k}/pubonly.pub", "public")),
    "key-garbage": ("{k}/garbage", ("{k}/garbage",)),
    "key-directory": ("{k}/adir", ("{k}/adir",)),
    "key-empty": ("{k}/empty", ("{k}/empty",)),
    "key-passphrase": ("{k}/locked", ("{k}/locked", "passphrase")),
}
KEY_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("open",),
    ("run-lab", "--data", "synthetic"),
    ("logs",),
    ("runs",),
    ("fetch",),
    ("ssh",),
)

STATE_CASES = [pytest.param(damage, argv, id=f"{damage}-{argv[0]}") for damage in STATE_DAMAGE for argv in COMMANDS]
KEY_CASES = [pytest.param(damage, argv, id=f"{damage}-{argv[0]}") for damage in KEY_DAMAGE for argv in KEY_COMMANDS]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("damage", "argv"), STATE_CASES)
def test_damaged_state_file_is_named_and_left_alone(damage: str, argv: tuple[str, ...], world: World) -> None:
    lab_record(world, "azure" if argv[0] in ("stop", "start") else "ready")
    path = StateStore().labs_dir / "lab.json"
    write, words = STATE_DAMAGE[damage]
    content = write(path)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    world.placeholders["state"] = str(world.state)
    was = before(world)
    result = invoke(world, argv, {})
    assert_refused(world, Case(f"{damage}-{argv[0]}", argv, words, code=USAGE), result, was)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("damage", "argv"), KEY_CASES)
def test_broken_key_of_a_lab_is_named_before_connecting(damage: str, argv: tuple[str, ...], world: World) -> None:
    record = lab_record(world, "ready")
    where, words = KEY_DAMAGE[damage]
    record.ssh_key_path = world.fill(where)
    StateStore().save(record)
    was = before(world)
    result = invoke(world, argv, {})
    assert_refused(world, Case(f"{damage}-{argv[0]}", argv, words, code=USAGE), result, was)


@pytest.mark.parametrize("given", ["folder", "link"])
def test_a_state_dir_labctl_did_not_make_keeps_its_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    """LABCTL_STATE_DIR at an existing (shared) folder, or at a link to one: labctl makes its own folders inside
    private and leaves the folder itself as it found it."""
    import stat

    from labctl.locks import lab_lock
    from labctl.state import LabRecord
    from labctl.ui import PlainReporter

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    root = shared
    if given == "link":
        root = tmp_path / "link"
        root.symlink_to(shared)
    monkeypatch.setenv("LABCTL_STATE_DIR", str(root))
    StateStore().save(LabRecord(name="lab", target="local"))
    with lab_lock("lab", "up", PlainReporter()):
        pass
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    made = [p for p in shared.iterdir() if p.is_dir()]
    assert made and all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in made)


def test_a_block_cut_short_in_labctls_ssh_config_keeps_what_follows_it() -> None:
    """A '# labctl: begin' with no end line once swallowed the blocks after it, and a rewrite dropped them."""
    from labctl import sshconfig
    from labctl.keys import generate_ed25519

    def write(lab: str) -> None:
        key = generate_ed25519().public_line
        sshconfig.write_entry(sshconfig.HostEntry(lab, "203.0.113.7", 22, "me", Path("/k/id"), key, 8888, 8888))

    write("one")
    write("two")
    config = sshconfig.config_path()
    cut = config.read_text().replace("# labctl: end one\n", "")  # 'one' is cut short, 'two' follows it
    config.write_text(cut + "Host mine\n    User me\n")
    write("three")
    assert sshconfig.remove_entry("two")
    after = config.read_text()
    assert "# labctl: begin one" in after and "Host mine\n    User me\n" in after
    assert "# labctl: begin two" not in after and after.count("# labctl: begin three") == 1
