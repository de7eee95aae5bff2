"""After the auto-shutdown deallocates a lab's VM, everyday commands say so in seconds, with the way back."""

from __future__ import annotations

import io

from typer.testing import CliRunner

from labctl.cli import app
from labctl.state import RunRecord, StateStore
from labctl.ui import PlainReporter
from tests.fakearm import FakeArm
from tests.fakearm.fixtures import arm_env, fake_arm, provision  # noqa: F401
from tests.support.sshd import free_port


def test_commands_on_a_deallocated_vm_point_to_start(arm_env: FakeArm) -> None:  # noqa: F811
    from labctl.targets.azure import AzureTarget

    record = provision("lab", allow_ip="203.0.113.7/32")
    # The lab was ready; nothing listens at its address now (a loopback port, so no traffic leaves this host).
    record.nodes[0].host, record.nodes[0].port, record.status, record.container_name = (
        "127.0.0.1",
        free_port(),
        "ready",
        "labctl-lab",
    )
    record.runs.append(RunRecord(run_id="20260101-000000-abcd", started_at="2026-01-01T00:00:00+00:00"))
    StateStore().save(record)
    AzureTarget().power_off(record, PlainReporter(io.StringIO()))  # what the 19:00 schedule does

    # the run the record last saw running is not shown as running on a machine that is off
    status = CliRunner().invoke(app, ["status"])
    assert "20260101-000000-abcd (stopped with the VM, deallocated)" in status.output, status.output

    result = CliRunner().invoke(app, ["logs"])
    assert result.exit_code == 3  # not ready: deallocated
    assert "is deallocated" in result.output and "labctl start --name lab" in result.output
    assert "Traceback" not in result.output

    stopped = StateStore().load("lab")
    stopped.status = "stopped"
    StateStore().save(stopped)
    again = CliRunner().invoke(app, ["fetch"])
    assert again.exit_code == 3 and "is stopped" in again.output and "labctl start" in again.output
