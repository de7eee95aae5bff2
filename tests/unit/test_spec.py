"""`up` refuses impossible requests before anything is created."""

from __future__ import annotations

from pathlib import Path

import pytest

from labctl.errors import UsageError
from labctl.spec import HostAddress, LabSpec, Settings, parse_host
from labctl.workflows.lifecycle import build_spec


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("LABCTL_CONFIG", str(tmp_path / "none.toml"))
    for var in ("LABCTL_REGION", "LABCTL_TARGET", "LABCTL_NAME", "LABCTL_SHUTDOWN_AT", "LABCTL_SIZE"):
        monkeypatch.delenv(var, raising=False)
    return Settings(tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("azureuser@203.0.113.7", HostAddress("azureuser", "203.0.113.7", 22)),
        ("me@host.example:2222", HostAddress("me", "host.example", 2222)),
        ("host", HostAddress(None, "host", 22)),
        ("u@[2001:db8::1]:22", HostAddress("u", "2001:db8::1", 22)),
    ],
)
def test_parse_host(text: str, expected: HostAddress) -> None:
    assert parse_host(text) == expected


@pytest.mark.parametrize("bad", ["", "a@b@c", "host:0", "host:70000", "user@", "@host"])
def test_parse_host_refuses(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_host(bad)


def test_defaults(settings: Settings) -> None:
    spec = build_spec(LabSpec(), settings)
    # No region given: the Azure target picks its default for a new lab and keeps an existing lab's region.
    assert (spec.name, spec.target, spec.shutdown_at, spec.region) == ("lab", "azure", "19:00", None)


def test_host_implies_ssh_target(settings: Settings) -> None:
    spec = build_spec(LabSpec(host=parse_host("me@box:2200")), settings)
    assert spec.target == "ssh"
    assert spec.host == HostAddress("me", "box", 2200)


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (LabSpec(target="ssh"), "needs --host"),
        (LabSpec(target="local", host=parse_host("me@box")), "--host applies only to --target ssh"),
        (LabSpec(target="local", region="westus2"), "--region applies only to --target azure"),
        (LabSpec(target="local", sizes=["Standard_D4s_v5"], spot=True), "--size, --spot apply only"),
        (LabSpec(target="azure", idle_action="shutdown"), r"not to --target azure \(on Azure .* keep billing\)"),
        (LabSpec(target="azure", host_key_fingerprint="SHA256:x"), r"Azure VM's host key itself\)"),
        (LabSpec(shutdown_at="25:00"), "not a time of day"),
        (LabSpec(shutdown_at="19:00", no_shutdown=True), "contradict"),
        (LabSpec(name="Bad_Name"), "not a valid lab name"),
        (LabSpec(target="moon"), "--target .moon. is not a target"),
        (LabSpec(ssh_key=Path("/nonexistent/key")), "does not exist"),
    ],
)
def test_refusals(settings: Settings, opts: LabSpec, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_spec(opts, settings)


def test_no_shutdown(settings: Settings) -> None:
    assert build_spec(LabSpec(no_shutdown=True), settings).shutdown_at is None


def test_azure_settings_do_not_leak_into_local_labs(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABCTL_REGION", "westus2")
    assert build_spec(LabSpec(target="local"), Settings()).region is None
    assert build_spec(LabSpec(), Settings()).region == "westus2"
