"""`up → push → run-lab → resize → status → pull → down` on Azure as labctl sees it: the fake ARM's VM is a real sshd
in front of a real Docker engine, so the lab container made again after the resize is a real one, and the workspace,
the address and the pinned host key are checked to have stayed, and the run training then to go on from its
checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labctl.cli import app
from labctl.state import StateStore
from tests.e2e.test_full_flow import lab, vm  # noqa: F401
from tests.e2e.test_resume_flow import TRAIN, _past_epoch, _runs
from tests.fakearm import FakeArm
from tests.fakearm.fixtures import arm_env, fake_arm  # noqa: F401
from tests.support.sshd import SSHServer

pytestmark = pytest.mark.e2e


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_a_cpu_lab_resized_keeps_its_disk_workspace_address_and_keys(
    vm: list[SSHServer],  # noqa: F811
    arm_env: FakeArm,  # noqa: F811
    tmp_path: Path,
    lab: str,  # noqa: F811
) -> None:
    up = _cli("up", "--name", lab, "--allow-ip", "203.0.113.7/32", "--yes")
    assert up.exit_code == 0, up.output
    before = StateStore().load(lab)
    notes = tmp_path / "notes.txt"
    notes.write_text("kept across the resize\n")
    assert _cli("push", str(notes)).exit_code == 0
    started = _cli("run-lab", "--detach", "--json", *TRAIN)
    assert started.exit_code == 0, started.output
    run_id = json.loads(started.stdout)["run_id"]
    _past_epoch(run_id, 1)

    arm_env.requests.clear()
    resized = _cli("resize", "--size", "Standard_D8s_v5", "--yes")
    assert resized.exit_code == 0, resized.output
    assert f"Run {run_id} saved its checkpoint: interrupted at epoch " in resized.output
    assert f"Run {run_id} goes on from its checkpoint at epoch " in resized.output
    assert _runs()[run_id]["state"] == "running"
    assert _cli("cancel", run_id).exit_code == 0
    assert "Standard_D8s_v5" in resized.stdout and "stops and starts again" in resized.output
    assert arm_env.count("POST", "deallocate$") == 1 and arm_env.count("POST", "start$") == 1
    [vm_id] = [rid for rid in arm_env.resource_ids("virtualMachines") if "/virtualmachines/" in rid.lower()]
    assert (arm_env.get(vm_id) or {})["properties"]["hardwareProfile"]["vmSize"] == "Standard_D8s_v5"

    after = StateStore().load(lab)
    assert after.status == "ready" and after.target_data["size"] == "Standard_D8s_v5"
    assert (after.nodes[0].host, after.nodes[0].host_key) == (before.nodes[0].host, before.nodes[0].host_key)
    assert after.jupyter_token == before.jupyter_token and after.container_name == before.container_name
    status = _cli("status", "--json")
    assert status.exit_code == 0, status.output
    facts = json.loads(status.stdout)
    assert facts["size"] == "Standard_D8s_v5" and facts["usd_per_hour_when_running"] == pytest.approx(0.384)
    assert facts["jupyter"] == "up"

    pulled = _cli("pull", "notes.txt", "--to", str(tmp_path / "back"))
    assert pulled.exit_code == 0, pulled.output
    assert (tmp_path / "back" / "workspace" / "notes.txt").read_text() == "kept across the resize\n"
    assert _cli("down", "--yes", "--force").exit_code == 0  # the cancelled run's results are not wanted
