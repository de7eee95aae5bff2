"""`up --dry-run`, `down`, `list`, `stop` and `start` for Azure labs, through the CLI against the fake ARM."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labctl.cli import app
from labctl.state import StateStore
from labctl.targets.azure import AzureTarget
from labctl.ui import PlainReporter
from tests.fakearm import FakeArm
from tests.fakearm.fixtures import arm_env, fake_arm, provision  # noqa: F401

pytestmark = pytest.mark.usefixtures("arm_env")
runner = CliRunner()


def test_dry_run_prints_the_plan_and_creates_nothing(arm_env: FakeArm) -> None:  # noqa: F811
    result = runner.invoke(app, ["up", "--dry-run", "--gpu", "--region", "westus2", "--shutdown-at", "20:15"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Standard_NC4as_T4_v3" in out and "NVIDIA T4" in out and "$0.53/h" in out
    assert "TCP 22 (SSH) from 198.51.100.23/32 only" in out
    assert "daily at 20:15 (W. Europe Standard Time)" in out
    for kind in ("resourceGroups", "virtualNetworks", "networkSecurityGroups", "publicIPAddresses", "schedules"):
        assert kind in out
    assert arm_env.count("PUT", "") == 0 and arm_env.group_names() == []


def test_dry_run_json(arm_env: FakeArm) -> None:  # noqa: F811
    result = runner.invoke(app, ["up", "--dry-run", "--json", "--size", "D8s_v5", "--size", "D4s_v5", "--spot"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [s["name"] for s in data["sizes"]] == ["Standard_D8s_v5", "Standard_D4s_v5"]
    assert data["spot"] is True and data["sizes"][0]["usd_per_hour"] < 0.384
    (rule,) = data["inbound_rules"]
    assert rule["properties"]["destinationPortRange"] == "22"
    assert rule["properties"]["sourceAddressPrefix"] == "198.51.100.23/32"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--allow-ip", "0.0.0.0/0"], "whole internet"),
        (["--size", "Standard_NC6s_v3"], "retired NCv3 (V100)"),
        (["--size", "Standard Q9!"], "does not know the VM size"),
        (["--region", "East US!"], "not an Azure region"),
        (["--gpu", "--size", "Standard_D4s_v5"], "has no GPU"),
    ],
)
def test_bad_input_is_one_paragraph_and_exit_2(args: list[str], words: str) -> None:
    result = runner.invoke(app, ["up", "--dry-run", *args])
    assert result.exit_code == 2
    assert words in result.output and "Traceback" not in result.output


def test_allow_any_must_be_typed_out_and_is_warned_about() -> None:
    result = runner.invoke(app, ["up", "--dry-run", "--allow-ip", "any"])
    assert result.exit_code == 0
    assert "anywhere (--allow-ip any)" in result.stdout and "whole internet" in result.stdout


def test_down_through_the_cli_leaves_nothing(arm_env: FakeArm) -> None:  # noqa: F811
    provision("lab")
    result = runner.invoke(app, ["down", "--yes"])
    assert result.exit_code == 0, result.output
    assert "is gone" in result.stdout
    assert arm_env.group_names() == [] and arm_env.resource_ids() == []
    assert not StateStore().exists("lab")


def test_down_finds_a_lab_by_its_tags_when_local_state_is_lost(arm_env: FakeArm) -> None:  # noqa: F811
    provision("lost")
    StateStore().delete("lost")
    listed = runner.invoke(app, ["list", "--json"])
    assert listed.exit_code == 0, listed.output
    (lab,) = json.loads(listed.stdout)["labs"]
    assert lab["name"] == "lost" and lab["recorded_here"] is False and lab["in_azure"] is True
    # Its tags hold no address, admin user or pinned host key: its work cannot be saved, so it is kept.
    refused = runner.invoke(app, ["down", "--name", "lost", "--yes"])
    assert refused.exit_code == 2 and "--no-save" in refused.output and "pinned host key" in refused.output
    assert arm_env.count("DELETE", "") == 0
    result = runner.invoke(app, ["down", "--name", "lost", "--yes", "--no-save"])
    assert result.exit_code == 0, result.output
    assert arm_env.group_names() == [] and arm_env.resource_ids() == []


def test_down_of_an_unknown_lab_is_not_found(arm_env: FakeArm) -> None:  # noqa: F811
    result = runner.invoke(app, ["down", "--name", "nosuch", "--yes"])
    assert result.exit_code == 3
    assert "no lab named 'nosuch'" in result.output


def test_list_merges_local_records_and_azure(arm_env: FakeArm) -> None:  # noqa: F811
    provision("alpha")
    provision("beta", allow_ip="203.0.113.5")
    StateStore().delete("beta")
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    assert "alpha" in result.stdout and "beta" in result.stdout and "eastus" in result.stdout
    assert "Not recorded on this computer: beta" in result.stdout
    local = runner.invoke(app, ["list", "--local", "--json"])
    assert [lab["name"] for lab in json.loads(local.stdout)["labs"]] == ["alpha"]


def test_list_warns_about_an_unreadable_state_file_and_finds_its_lab_by_tags(arm_env: FakeArm) -> None:  # noqa: F811
    provision("alpha")
    path = StateStore().labs_dir / "alpha.json"
    path.write_text('{"name": "alpha", "target": "azure", "runs": 3}')
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    assert f"The state file {path} could not be read" in result.stderr
    assert "alpha" in result.stdout and "Not recorded on this computer: alpha" in result.stdout


def test_list_without_azure_login_still_shows_local_labs(arm_env: FakeArm, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    provision("alpha")
    monkeypatch.delenv("AZURE_CLIENT_SECRET")
    monkeypatch.setenv("PATH", "/nonexistent")
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0
    assert "alpha" in result.stdout and "Azure labs are not listed" in result.output


def test_stop_deallocates_and_start_brings_it_back_with_the_same_ip(arm_env: FakeArm) -> None:  # noqa: F811
    record = provision("lab")
    vm_id = record.target_data["vm_id"].lower()
    result = runner.invoke(app, ["stop", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["power_state"] == "deallocated" and data["usd_per_hour"] == 0.0
    assert arm_env.power[vm_id] == "deallocated"
    assert StateStore().load("lab").status == "stopped"
    result = runner.invoke(app, ["start"])
    assert result.exit_code == 0, result.output
    assert f"running again at {record.nodes[0].host}" in result.stdout
    assert arm_env.power[vm_id] == "running"
    after = StateStore().load("lab")
    assert (after.status, after.nodes[0].host, after.nodes[0].host_key) == (
        "ready",
        record.nodes[0].host,
        record.nodes[0].host_key,
    )


def test_describe_reports_power_price_and_shutdown(arm_env: FakeArm) -> None:  # noqa: F811
    record = provision("lab", gpu=True)
    info = AzureTarget().describe(record)
    assert info["power_state"] == "running" and info["public_ip"] == record.nodes[0].host
    assert info["size"] == "Standard_NC4as_T4_v3" and info["gpu"] == "1x NVIDIA T4"
    assert info["region"] == "eastus" and info["usd_per_hour"] == 0.526 and info["shutdown_at"] == "19:00"
    assert isinstance(info["uptime_seconds"], int) and info["uptime_seconds"] >= 0


def test_list_help_stays_light() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from labctl.cli import app\n"
        "CliRunner().invoke(app, ['list', '--help'])\n"
        "print(','.join(m for m in ('azure', 'msal', 'cryptography') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_down_of_a_lab_that_never_reached_azure_needs_no_login(
    arm_env: FakeArm,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arm_env.regions["eastus"].limits["cores"] = 0
    with pytest.raises(Exception, match="quota"):
        provision("lab")
    monkeypatch.delenv("AZURE_CLIENT_SECRET")
    requests_before = len(arm_env.requests)
    result = runner.invoke(app, ["down", "--yes"])
    assert result.exit_code == 0, result.output
    assert not StateStore().exists("lab") and len(arm_env.requests) == requests_before


def test_dry_run_without_the_ip_echo_still_shows_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABCTL_IP_ECHO_URL", "https://127.0.0.1:9/ip")
    result = runner.invoke(app, ["up", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "from <your public IP>/32 only" in result.stdout and "--allow-ip" in result.stdout


def test_list_flags_a_local_lab_that_is_gone_from_azure(arm_env: FakeArm) -> None:  # noqa: F811
    provision("lab")
    arm_env.groups.clear()
    arm_env.resources.clear()
    result = runner.invoke(app, ["list", "--json"])
    (lab,) = json.loads(result.stdout)["labs"]
    assert lab["in_azure"] is False and "gone from Azure" in lab["status"]


def test_describe_a_stopped_lab_costs_nothing_per_hour(arm_env: FakeArm) -> None:  # noqa: F811
    record = provision("lab")
    AzureTarget().power_off(record, PlainReporter(io.StringIO()))
    info = AzureTarget().describe(record)
    assert info["power_state"] == "deallocated" and info["usd_per_hour"] == 0.0 and info["uptime_seconds"] is None
    assert info["usd_per_hour_when_running"] == 0.192


def test_a_cloned_project_file_decides_nothing_billed_until_trusted(
    arm_env: FakeArm,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "labctl.toml").write_text(
        '[labctl]\nsize = "Standard_NC24ads_A100_v4"\nidle_stop = "off"\n'
        'subscription = "99999999-9999-9999-9999-999999999999"\n'
    )
    monkeypatch.chdir(tmp_path)
    refused = runner.invoke(app, ["up", "--yes", "--gpu"])
    assert refused.exit_code == 2, refused.output
    assert "Standard_NC24ads_A100_v4" in refused.output and "labctl config --trust" in refused.output
    assert arm_env.count("PUT", "") == 0 and arm_env.group_names() == [] and not StateStore().exists("lab")

    assert runner.invoke(app, ["config", "--trust"]).exit_code == 0
    (tmp_path / "labctl.toml").write_text('[labctl]\nsize = "Standard_NC24ads_A100_v4"\nidle_stop = "off"\n')
    assert runner.invoke(app, ["up", "--yes", "--gpu"]).exit_code == 2  # an edit revokes the trust
    assert runner.invoke(app, ["config", "--trust"]).exit_code == 0
    planned = runner.invoke(app, ["up", "--dry-run", "--yes", "--gpu"])
    assert planned.exit_code == 0, planned.output
    assert "Standard_NC24ads_A100_v4" in planned.stdout and "$3.673/h while running" in planned.stdout
    assert "idle stop:      off" in planned.stdout
