"""Two people in one subscription: each `up` makes the person's own lab, and nobody's `down`, `stop` or `start`
touches a colleague's lab unless forced and confirmed by its name. Two service principals log in to the fake
ARM, each with its own object id in its tokens, as two colleagues would."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labctl.errors import LabctlError
from labctl.state import StateStore
from tests.fakearm import FakeArm
from tests.fakearm.fixtures import arm_env, fake_arm, lab_group, provision  # noqa: F401

runner = CliRunner()


def _as_colleague(fake: FakeArm, monkeypatch: pytest.MonkeyPatch, state: Path | None = None) -> str:
    """Log in as a second principal ("B"), on a computer of B's own unless ``state`` is given; B's client id."""
    login = fake.add_principal("colleague-b@contoso.example", "b1b2b3b4-0000-4000-8000-00000000000b")
    for key, value in login.items():
        monkeypatch.setenv(key, value)
    if state is not None:
        monkeypatch.setenv("LABCTL_STATE_DIR", str(state))
    return login["AZURE_CLIENT_ID"]


def _invoke(*args: str) -> object:
    from labctl.cli import app

    return runner.invoke(app, list(args))


def test_two_people_get_two_labs_and_list_shows_whose_is_whose(
    arm_env: FakeArm,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    provision("lab")  # A
    b = _as_colleague(arm_env, monkeypatch, tmp_path / "b-state")
    record = provision("lab")  # B's `up --name lab`: a lab of B's own, next to A's
    assert record.target_data["resource_group"] == lab_group(arm_env, "lab", b) == "labctl-lab-b1b2b3b4"
    assert sorted(arm_env.lab_group_names()) == sorted([lab_group(arm_env), lab_group(arm_env, "lab", b)])
    assert arm_env.groups[lab_group(arm_env, "lab", b)]["tags"]["labctl-owner"] == arm_env.object_id(b)

    result = _invoke("list", "--json")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    labs = json.loads(result.stdout)["labs"]  # type: ignore[attr-defined]
    owners = sorted((lab["name"], lab["owner"], lab["mine"], lab["recorded_here"]) for lab in labs)
    assert owners == [
        ("lab", "colleague-b@contoso.example", True, True),
        ("lab", "lab-tests-a", False, False),
    ]
    text = _invoke("list").stdout  # type: ignore[attr-defined]
    assert "colleague-b@contoso.example (you)" in text and "lab-tests-a" in text
    assert "Not recorded on this computer" not in text  # A's lab is not offered to B for `down`


def test_down_of_a_colleagues_lab_needs_force_and_the_typed_name(
    arm_env: FakeArm,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    provision("lab")  # A's lab; B's computer has no record of any lab
    _as_colleague(arm_env, monkeypatch, tmp_path / "b-state")

    refused = _invoke("down", "--yes")
    assert refused.exit_code != 0  # type: ignore[attr-defined]
    out = refused.output  # type: ignore[attr-defined]
    assert "belongs to lab-tests-a" in out and "colleague-b@contoso.example" in out and "--confirm-name lab" in out
    for args in (["--force"], ["--force", "--confirm-name", "lan"], ["--confirm-name", "lab"]):
        again = _invoke("down", "--yes", *args)
        assert again.exit_code != 0, args  # type: ignore[attr-defined]
    assert arm_env.lab_group_names() == [lab_group(arm_env)]  # nothing was deleted
    assert arm_env.count("DELETE", "") == 0

    forced = _invoke("down", "--force", "--confirm-name", "lab", "--no-save")  # found by its tags: nothing to reach
    assert forced.exit_code == 0, forced.output  # type: ignore[attr-defined]
    assert arm_env.lab_group_names() == []


def test_down_of_ones_own_lab_leaves_a_colleagues_lab_of_the_same_name(
    arm_env: FakeArm,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    provision("lab")  # A
    b = _as_colleague(arm_env, monkeypatch, tmp_path / "b-state")
    provision("lab")  # B
    started = time.monotonic()
    result = _invoke("down", "--yes")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    # A's resources tagged labctl-lab=lab are not leftovers of B's lab: no wait for them to disappear.
    assert time.monotonic() - started < 30
    assert arm_env.lab_group_names() == [lab_group(arm_env)] != [lab_group(arm_env, "lab", b)]
    assert any(f"/resourcegroups/{lab_group(arm_env)}/" in i.lower() for i in arm_env.resource_ids())


def test_stop_and_start_of_a_colleagues_lab_are_refused_without_force(
    arm_env: FakeArm,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = provision("lab")  # A, on a computer B then signs in on (the same state directory)
    vm_id = record.target_data["vm_id"].lower()
    _as_colleague(arm_env, monkeypatch)
    for verb in ("stop", "start"):
        refused = _invoke(verb)
        assert refused.exit_code != 0 and "belongs to lab-tests-a" in refused.output  # type: ignore[attr-defined]
    assert arm_env.power[vm_id] == "running"
    status = _invoke("status", "--json")
    assert json.loads(status.stdout)["owner_is_you"] is False  # type: ignore[attr-defined]

    forced = _invoke("stop", "--force", "--confirm-name", "lab")
    assert forced.exit_code == 0, forced.output  # type: ignore[attr-defined]
    assert arm_env.power[vm_id] == "deallocated"
    assert "as --force and the typed name confirm" in forced.output  # type: ignore[attr-defined]


def test_a_hand_edited_record_does_not_make_a_colleagues_lab_ones_own(
    arm_env: FakeArm,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = provision("lab")  # A's lab; B then claims it in the record on this computer
    vm_id = record.target_data["vm_id"].lower()
    b = _as_colleague(arm_env, monkeypatch)
    edited = StateStore().load("lab")
    edited.target_data.update(owner=arm_env.object_id(b), owner_name="colleague-b@contoso.example")
    StateStore().save(edited)
    writes = [(m, p) for m, p in arm_env.requests if m != "GET" and "/subscriptions/" in p]
    for args in (["stop"], ["start"], ["down", "--yes"]):
        refused = _invoke(*args)
        assert refused.exit_code == 2, refused.output  # type: ignore[attr-defined]
        assert "belongs to lab-tests-a" in refused.output, args  # type: ignore[attr-defined]
    assert [(m, p) for m, p in arm_env.requests if m != "GET" and "/subscriptions/" in p] == writes
    assert arm_env.power[vm_id] == "running" and arm_env.lab_group_names() == [lab_group(arm_env)]


def test_up_never_converges_a_colleagues_lab(
    arm_env: FakeArm,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provision("lab")  # A
    _as_colleague(arm_env, monkeypatch)  # B on the same computer: the record points at A's group
    puts = arm_env.count("PUT", "")
    with pytest.raises(LabctlError) as refused:
        provision("lab")
    assert "belongs to lab-tests-a" in refused.value.message and "down" not in (refused.value.hint or "")
    assert arm_env.count("PUT", "") == puts
    assert StateStore().load("lab").target_data["owner"] == arm_env.object_id()


def _in_a_terminal(args: list[str], answer: str) -> tuple[int, str]:
    """Run labctl with a terminal as its stdin and output (as a person would), answering its one question."""
    import os
    import pty
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "labctl", *args], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
    )
    os.close(slave)
    seen = b""
    try:
        while b"name to delete it anyway" not in seen:
            chunk = os.read(master, 4096)
            assert chunk, seen
            seen += chunk
        os.write(master, answer.encode() + b"\r")
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal closes with the process
                break
            if not chunk:
                break
            seen += chunk
    finally:
        code = proc.wait(120)
        os.close(master)
    return code, seen.decode(errors="replace")


@pytest.mark.skipif(__import__("sys").platform == "win32", reason="a pseudo-terminal")
def test_forced_down_asks_for_the_lab_name_in_a_terminal(
    arm_env: FakeArm,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    provision("lab")  # A
    _as_colleague(arm_env, monkeypatch, tmp_path / "b-state")
    code, out = _in_a_terminal(["down", "--force", "--no-save"], "lap")
    assert code != 0 and "'lap' is not the lab's name 'lab'" in out, out
    assert arm_env.lab_group_names() == [lab_group(arm_env)]
    code, out = _in_a_terminal(["down", "--force", "--no-save"], "lab")
    assert code == 0 and "is gone" in out, out
    assert arm_env.lab_group_names() == []


def test_two_colleagues_kept_workspaces_of_one_name_are_two_rows(
    arm_env: FakeArm,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for keeper in ("a", "b"):  # A, then B on a computer of B's own: each keeps a workspace of lab "lab"
        if keeper == "b":
            _as_colleague(arm_env, monkeypatch, tmp_path / "b-state")
        provision("lab")
        assert _invoke("down", "--yes", "--keep-workspace").exit_code == 0  # type: ignore[attr-defined]
    login = arm_env.add_principal("colleague-c@contoso.example", "c1c2c3c4-0000-4000-8000-00000000000c")
    for key, value in login.items():  # C, who looks
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LABCTL_STATE_DIR", str(tmp_path / "c-state"))
    labs = json.loads(_invoke("list", "--json").stdout)["labs"]  # type: ignore[attr-defined]
    owners = sorted((lab["owner"], lab["status"]) for lab in labs)
    assert owners == [
        ("colleague-b@contoso.example", "down, workspace kept"),
        ("lab-tests-a", "down, workspace kept"),
    ]
