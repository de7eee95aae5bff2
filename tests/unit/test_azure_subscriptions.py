"""Choosing the subscription: the only usable one, or the Azure CLI's default from its real profile file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labctl.errors import LabctlError, UsageError
from labctl.targets.azure.clients import cli_default_subscription, pick_subscription

A = "11111111-2222-4333-8444-555555555555"
B = "22222222-2222-4333-8444-555555555555"


def _sub(sid: str, state: str = "Enabled", name: str = "sub") -> dict[str, str]:
    return {"subscriptionId": sid, "state": state, "displayName": name}


def _profile(folder: Path, default: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    entries = [
        {"id": sid, "name": f"n{sid[0]}", "state": "Enabled", "isDefault": sid == default, "tenantId": "t"}
        for sid in (A, B)
    ]
    text = json.dumps({"installationId": "x", "subscriptions": entries})
    (folder / "azureProfile.json").write_text(text, encoding="utf-8-sig")  # the CLI writes a byte-order mark


def test_the_cli_default_is_read_from_home_or_azure_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_CONFIG_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cli_default_subscription() is None
    _profile(tmp_path / "home" / ".azure", B)
    assert cli_default_subscription() == B
    _profile(tmp_path / "elsewhere", A)
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(tmp_path / "elsewhere"))
    assert cli_default_subscription() == A
    (tmp_path / "elsewhere" / "azureProfile.json").write_text("{not json")
    assert cli_default_subscription() is None


def test_several_subscriptions_use_the_cli_default_and_say_so() -> None:
    picked = pick_subscription([_sub(A), _sub(B, name="Research")], B.upper())
    assert picked.subscription_id == B
    assert picked.notes == [
        f"Using subscription {B} (Research), the Azure CLI's default; pass --subscription to use another."
    ]
    with pytest.raises(UsageError, match="several subscriptions"):
        pick_subscription([_sub(A), _sub(B)], None)
    with pytest.raises(UsageError) as info:  # the default is disabled: no guess among the others
        pick_subscription([_sub(A), _sub(B, "Disabled"), _sub("3" * 8 + A[8:])], B)
    assert "az account set" in info.value.render()


@pytest.mark.parametrize("state", ["Warned", "PastDue"])
def test_warned_and_past_due_subscriptions_are_usable_with_a_warning(state: str) -> None:
    picked = pick_subscription([_sub(A, state), _sub(B, "Disabled")], None)
    assert picked.subscription_id == A and picked.notes == []
    assert f"is in state {state}" in picked.warnings[0]


@pytest.mark.parametrize("state", ["Disabled", "Deleted", "Expired"])
def test_disabled_and_deleted_subscriptions_are_refused(state: str) -> None:
    with pytest.raises(LabctlError) as info:
        pick_subscription([_sub(A, state)], A)
    assert "no usable subscription" in info.value.render() and f"{A} (sub): {state}" in info.value.render()
