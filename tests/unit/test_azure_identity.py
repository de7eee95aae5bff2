"""Reading who is signed in from an Entra ID access token."""

from __future__ import annotations

import base64
import json

import pytest

from labctl.errors import LabctlError
from labctl.targets.azure.clients import principal_from_token


def _jwt(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'typ': 'JWT', 'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def test_a_users_token_gives_the_object_id_and_sign_in_name() -> None:
    token = _jwt({"oid": "9F3C2A10-aaaa-4bbb-8ccc-0123456789ab", "tid": "t", "upn": "ada@contoso.example"})
    principal = principal_from_token(token)
    assert principal.oid == "9F3C2A10-aaaa-4bbb-8ccc-0123456789ab"
    assert principal.name == "ada@contoso.example" and principal.short == "9f3c2a10"


def test_a_service_principals_token_is_named_by_its_application() -> None:
    principal = principal_from_token(_jwt({"oid": "0123abcd-0000-4000-8000-000000000001", "appid": "app-1"}))
    assert principal.name == "app-1" and principal.short == "0123abcd"


@pytest.mark.parametrize("token", ["opaque-token", _jwt({"tid": "t", "upn": "x"}), "a.!!!.c", _jwt({"oid": "--"})])
def test_a_token_without_an_object_id_is_one_clear_error(token: str) -> None:
    with pytest.raises(LabctlError, match="names no object id"):
        principal_from_token(token)


@pytest.mark.parametrize(("value", "probed"), [("0", False), ("off", False), ("no", False), ("on", True), ("1", True)])
def test_the_managed_identity_knob_is_read_as_yes_or_no(
    monkeypatch: pytest.MonkeyPatch, value: str, probed: bool
) -> None:
    import azure.identity

    from labctl.targets.azure.clients import make_credential

    made: dict[str, object] = {}
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", lambda **options: made.update(options))
    monkeypatch.setenv("LABCTL_MANAGED_IDENTITY", value)
    make_credential()
    assert made["exclude_managed_identity_credential"] is not probed
