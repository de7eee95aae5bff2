"""`status` shows cost and uptime from the keys the targets actually return, and leaves unknowns out."""

from __future__ import annotations

import re

from labctl.workflows.status import render, render_table


def test_azure_facts_show_price_uptime_and_spend() -> None:
    text = render(
        {
            "name": "lab",
            "target": "azure",
            "state": "ready",
            "power_state": "running",
            "public_ip": "203.0.113.7",
            "size": "Standard_NC4as_T4_v3",
            "gpu": "1x NVIDIA T4",
            "region": "eastus",
            "usd_per_hour": 0.526,
            "uptime_seconds": 3900,
            "spend_so_far_usd": 0.57,
            "shutdown_at": "19:00",
            "container": "running",
            "jupyter": "up",
            "latest_run": {"run_id": "20260101-000000-abcd", "state": "succeeded", "accuracy": 0.5432},
        }
    )
    lines = dict(line.split("  ", 1) for line in text.splitlines())
    assert lines["cost per hour"].strip() == "$0.53"
    assert lines["up for"].strip() == "1:05:00"
    assert lines["spent since created"].strip() == "$0.57 (estimate)"
    assert lines["public IP"].strip() == "203.0.113.7"
    assert "54.3%" in lines["latest run"]


def test_unreachable_machine_says_so_and_prints_no_none() -> None:
    text = render({"name": "lab", "target": "ssh", "state": "ready", "host": None, "error": "connection refused"})
    assert "None" not in text
    assert "could not reach" in text and "connection refused" in text


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split("[│┃]", line.strip())[1:-1]]


def _table_rows(text: str) -> dict[str, list[str]]:
    """The table's rows by their first cell (the header's is "name"), cells split on the vertical bars."""
    return {cells[0]: cells for cells in map(_cells, text.splitlines()) if len(cells) > 1}


def test_table_of_several_labs_shows_spend_and_idle() -> None:
    gpu = {
        "name": "gpu-lab",
        "target": "azure",
        "state": "ready",
        "power_state": "running",
        "size": "Standard_NC4as_T4_v3",
        "usd_per_hour": 0.526,
        "spend_so_far_usd": 3.456,
        "idle_agent": "stop",
        "idle_stop_minutes": 60.0,
        "idle_for_seconds": 1500.0,
        "idle_checked_at": "2026-01-01T10:00:00+00:00",
        "latest_run": {"run_id": "20260101-000000-abcd", "state": "succeeded", "accuracy": 0.5432},
    }
    ssh = {
        "name": "box",
        "target": "ssh",
        "state": "ready",
        "idle_agent": "not installed (no systemd on the host)",
    }
    text = render_table([gpu, ssh])
    rows = _table_rows(text)
    assert rows["name"] == [
        "name",
        "target",
        "size",
        "state",
        "$/h",
        "spend",
        "idle",
        "last run",
    ]
    assert rows["gpu-lab"][4:7] == ["$0.53", "$3.46", "25:00"]
    assert "54.3%" in rows["gpu-lab"][7]
    assert rows["box"][4:7] == ["-", "-", "not installed"]
    assert "None" not in text


def test_idle_column_says_when_the_idle_stop_is_off_or_the_lab_is_busy() -> None:
    off = {"name": "a", "target": "azure", "idle_agent": "stop", "idle_stop_minutes": 0.0}
    busy = {"name": "b", "target": "azure", "idle_agent": "stop", "idle_stop_minutes": 30.0, "idle_checked_at": "x"}
    rows = _table_rows(render_table([off, busy]))
    assert rows["a"][6] == "stop off"
    assert rows["b"][6] == "not idle"
