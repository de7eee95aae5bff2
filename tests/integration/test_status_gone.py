"""`status` of an Azure lab that is not (or no longer) the user's to see: deleted by a colleague, or a name only
colleagues' labs have. Against the fake ARM, with colleagues as principals of their own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labctl.state import StateStore
from tests.fakearm import FakeArm
from tests.fakearm.fixtures import arm_env, fake_arm, lab_group, provision  # noqa: F401

runner = CliRunner()


def _invoke(*args: str) -> object:
    from labctl.cli import app

    return runner.invoke(app, list(args))


def _sign_in(fake: FakeArm, monkeypatch: pytest.MonkeyPatch, who: str, oid: str, state: Path) -> None:
    for key, value in fake.add_principal(who, oid).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LABCTL_STATE_DIR", str(state))


def test_a_lab_deleted_outside_labctl_is_gone_and_up_makes_a_new_one(
    arm_env: FakeArm,  # noqa: F811
) -> None:
    provision("lab")
    arm_env.remove_group(lab_group(arm_env))  # deleted in the portal, or by a colleague's forced down
    result = _invoke("status", "--json")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    data = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert data["power_state"] == "missing"
    assert "gone" in data["hint"] and "then 'labctl up --name lab' makes a new one" in data["hint"]
    assert "start" not in data["hint"]
    assert "gone" in _invoke("status").stdout  # type: ignore[attr-defined]
    forgotten = _invoke("down", "--no-save", "--yes", "--name", "lab")  # as the hint says
    assert forgotten.exit_code == 0, forgotten.output  # type: ignore[attr-defined]
    assert not StateStore().exists("lab")


def test_down_of_a_name_only_colleagues_labs_have_says_azure_was_searched(
    arm_env: FakeArm,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for who, oid in (
        ("colleague-b", "b1b2b3b4-0000-4000-8000-00000000000b"),
        ("colleague-c", "c1c2c3c4-0000-4000-8000-00000000000c"),
    ):
        _sign_in(arm_env, monkeypatch, f"{who}@contoso.example", oid, tmp_path / who)
        provision("lab")
    _sign_in(arm_env, monkeypatch, "me@contoso.example", "d1d2d3d4-0000-4000-8000-00000000000d", tmp_path / "me")
    result = _invoke("down", "--yes")
    assert result.exit_code == 3, result.output  # type: ignore[attr-defined]
    out = " ".join(result.output.split())  # type: ignore[attr-defined]
    assert "not searched" not in out
    assert "You have no lab named 'lab' in subscription" in out and "colleague-b@contoso.example" in out
    assert "colleague-c@contoso.example" in out
    assert sorted(arm_env.lab_group_names()) == ["labctl-lab-b1b2b3b4", "labctl-lab-c1c2c3c4"]  # nothing deleted
