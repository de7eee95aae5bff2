"""Idle stop's settings, what status makes of the agent's files, and the power history behind the spend."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from labctl import idle
from labctl.errors import LabctlError, UsageError
from labctl.pricing import LabPrices
from labctl.state import LabRecord
from labctl.targets.azure.inventory import lab_spend, note_power, power_tag, restore_power
from labctl.workflows.status import render

PRICES = LabPrices("eastus", "Standard_D4s_v5", 0.2, 0.04, 73.0, 0.005, "a fixed table")


@pytest.mark.parametrize(("text", "minutes"), [("60", 60.0), ("off", 0.0), ("0", 0.0), (0.0, 0.0), ("7.5", 7.5)])
def test_idle_windows_in_minutes_or_off(text: object, minutes: float) -> None:
    assert idle.parse_window(text) == minutes


@pytest.mark.parametrize("text", ["-5", "soon", "nan", "100000"])
def test_a_bad_window_names_the_value_and_what_to_give(text: str) -> None:
    with pytest.raises(UsageError) as refused:
        idle.parse_window(text)
    assert f"'{text}'" in refused.value.message and "'off'" in (refused.value.hint or "")


def test_budgets_are_dollars_or_off() -> None:
    assert idle.parse_budget("$12.50") == 12.5 and idle.parse_budget("off") is None
    with pytest.raises(UsageError):
        idle.parse_budget("lots")


def test_status_shows_how_long_idle_when_the_stop_is_due_and_the_last_decision() -> None:
    record = LabRecord(name="lab", target="azure", container_name="c", idle={"window_minutes": 30})
    config = idle.agent_config(record, {"mode": "azure"})
    checked = datetime(2026, 1, 1, 9, 40, tzinfo=timezone.utc).timestamp()
    state = {"idle_since": checked - 600, "checked_at": checked, "last": "labctl-idle: idle 10m of 30m"}
    facts = idle.agent_facts(config, state)
    assert facts["idle_for_seconds"] == 600 and facts["idle_stop_due"] == "2026-01-01T10:00:00+00:00"
    lines = dict(line.split("  ", 1) for line in render({"name": "lab", **facts}).splitlines())
    assert lines["idle for"].strip() == "10:00" and lines["stop due"].strip() == "2026-01-01T10:00:00+00:00"
    assert lines["idle stop after"].strip() == "30 min"
    assert lines["last idle check"].strip() == "idle 10m of 30m (at 2026-01-01T09:40:00+00:00)"
    assert idle.agent_facts(None, None) == {"idle_agent": "not installed"}


def test_spend_counts_only_the_allocated_hours_and_survives_in_the_tag() -> None:
    created = datetime(2026, 1, 1, 8, tzinfo=timezone.utc)
    record = LabRecord(name="lab", target="azure", created_at=created.isoformat())
    record.target_data["created_at"] = created.isoformat()
    assert note_power(record, "running", created.isoformat())
    assert not note_power(record, "PowerState/running", (created + timedelta(hours=1)).isoformat())
    assert note_power(record, "deallocated", (created + timedelta(hours=2)).isoformat())  # the agent stopped it
    assert note_power(record, "running", (created + timedelta(hours=5)).isoformat())  # `labctl start`
    now = created + timedelta(hours=6)
    spent = lab_spend(record, PRICES, now)
    assert spent["allocated_hours"] == 3 and spent["life_hours"] == 6
    assert spent["total_usd"] == pytest.approx(3 * 0.2 + 6 * (73.0 / 730 + 0.005))
    tag = power_tag(record, now)
    assert tag == f"7200;{(created + timedelta(hours=5)).isoformat()}"

    lost = LabRecord(name="lab", target="azure", created_at=created.isoformat())
    lost.target_data["created_at"] = created.isoformat()
    restore_power(lost, tag, created.isoformat())
    assert lab_spend(lost, PRICES, now)["allocated_hours"] == 3


def test_only_azure_machines_stop_themselves_with_their_own_rights() -> None:
    from labctl.targets import get_target

    azure, ssh, local = get_target("azure"), get_target("ssh"), get_target("local")
    record = LabRecord(name="lab", target="azure")
    with pytest.raises(LabctlError, match="cannot stop itself when idle"):
        azure.idle_agent(record)  # no role granted
    record.idle["granted"] = True
    assert azure.idle_agent(record)["mode"] == "azure" and azure.default_idle_minutes == 60
    assert ssh.idle_agent(record) == {"mode": "container"} and ssh.default_idle_minutes == 0
    record.idle["action"] = "shutdown"
    assert ssh.idle_agent(record) == {"mode": "shutdown"}
    with pytest.raises(UsageError, match="no idle agent on this computer"):
        local.idle_agent(record)


def test_status_says_when_the_agent_last_checkpointed_the_runs() -> None:
    record = LabRecord(name="lab", target="azure", container_name="c", idle={"window_minutes": 30})
    config = idle.agent_config(record, {"mode": "azure"})
    at = datetime(2026, 1, 1, 18, 55, tzinfo=timezone.utc).timestamp()
    point = {"reason": "shutdown", "at": at, "interrupted": ["r1"], "timed_out": [], "said": "run r1 checkpointed"}
    facts = idle.agent_facts(config, {"checkpoint": point})
    assert facts["runs_checkpointed"] == "before the daily shutdown (2026-01-01T18:55:00+00:00): run r1 checkpointed"
    lines = dict(line.split("  ", 1) for line in render({"name": "lab", **facts}).splitlines())
    assert lines["runs checkpointed"].strip() == facts["runs_checkpointed"]
    assert "runs_checkpointed" not in idle.agent_facts(config, {"checkpoint": {"reason": "?", "said": "x"}})


def test_an_azure_agent_knows_its_spot_vm_and_its_daily_shutdown() -> None:
    from labctl.targets import get_target
    from labctl.targets.azure.plan import agent_shutdown

    record = LabRecord(name="lab", target="azure", idle={"granted": True})
    record.target_data.update(spot=True, shutdown_at="19:00", shutdown_time_zone="W. Europe Standard Time")
    extras = get_target("azure").idle_agent(record)
    assert extras["spot"] is True
    assert (extras["shutdown_at"], extras["shutdown_zone"]) == ("19:00", "Europe/Berlin")
    # A zone Windows has no name for was scheduled in UTC at the schedule's own time.
    assert agent_shutdown("19:00", "1800", "UTC") == {"shutdown_at": "18:00", "shutdown_zone": "UTC"}
    record.target_data.update(spot=False, shutdown_at=None)
    extras = get_target("azure").idle_agent(record)
    assert extras["spot"] is False and "shutdown_at" not in extras
