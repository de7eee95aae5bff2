"""`status` shows cost and uptime from the keys the targets actually return, and leaves unknowns out."""

from __future__ import annotations

from labctl.workflows.status import render


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
    assert lines["up for"].strip() == "1h 05m"
    assert lines["spent since created"].strip() == "$0.57 (estimate)"
    assert lines["public IP"].strip() == "203.0.113.7"
    assert "54.3%" in lines["latest run"]


def test_unreachable_machine_says_so_and_prints_no_none() -> None:
    text = render({"name": "lab", "target": "ssh", "state": "ready", "host": None, "error": "connection refused"})
    assert "None" not in text
    assert "could not reach" in text and "connection refused" in text
