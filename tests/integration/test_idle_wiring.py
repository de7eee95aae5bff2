"""Idle stop wired into `up`, `idle-stop`, `status` and `down`, against the fake ARM whose VMs are real sshd hosts.

`labctl up` gives the VM a system-assigned identity, the least-privilege role and its assignment at the VM's
scope (checked in the fake's RBAC inventory), and installs the agent from templates/ on the machine (checked in
the machine's files). The agent is then run as its timer would run it, deallocates the VM with the VM's own
identity, and `status` shows what it decided and the spend from a fixed price table. `down` leaves no role and no
assignment. A Contributor is told before anything is created. The fake VM is this computer, but its /etc, /opt,
/var/lib and login home are its own (overlays under the test's folder), so the agent's files never land in this
computer's.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labctl import idle
from labctl.cli import app
from labctl.state import StateStore
from labctl.targets.azure import idlerole
from tests.fakearm import FakeArm
from tests.fakearm.fixtures import arm_env, fake_arm, provision  # noqa: F401
from tests.fakearm.retail_prices import D4S_V5, RetailPrices
from tests.support.fake_vm import serve_vms
from tests.support.sshd import KeyPair, SSHServer, free_port, make_server, sshd_unavailable

pytestmark = pytest.mark.integration

PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
LOGIN_HOME = pwd.getpwuid(os.geteuid()).pw_dir
MACHINE_DIRS = ("/etc", "/opt", "/var/lib", LOGIN_HOME)  # where the agent, its config and state, the marks go


@pytest.fixture
def prices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[RetailPrices]:
    server = RetailPrices(more=D4S_V5).start()
    monkeypatch.setenv("LABCTL_PRICES_URL", server.url)
    monkeypatch.setenv("LABCTL_CACHE_DIR", str(tmp_path / "cache"))
    yield server
    server.stop()


@pytest.fixture
def vm(arm_env: FakeArm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lab_image: str) -> Iterator[list[SSHServer]]:  # noqa: F811
    reason = sshd_unavailable()
    if reason:
        pytest.skip(reason)
    port = free_port()
    monkeypatch.setenv("LABCTL_SSH_PORT", str(port))
    monkeypatch.setenv("LABCTL_ADMIN_USER", pwd.getpwuid(os.geteuid()).pw_name)
    servers = serve_vms(arm_env, tmp_path, port, machine_dirs=MACHINE_DIRS)
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def lab(docker_client: Any) -> Iterator[str]:
    import secrets

    from labctl.container import remove_lab

    name = f"idle{secrets.token_hex(3)}"
    yield name
    remove_lab(docker_client, name)


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _config(machine: SSHServer) -> dict[str, Any]:
    return dict(json.loads(machine.machine_file(idle.CONFIG_PATH).read_text()))


def _tick(fake: FakeArm, machine: SSHServer) -> list[str]:
    """One run of the agent on the machine, as labctl-idle.service runs it; the metadata service is the fake's."""
    assert machine.proc is not None
    env = dict(os.environ, LABCTL_IDLE_IMDS_URL=fake.url, SSL_CERT_FILE=str(fake.ca_path))
    on_machine = ["nsenter", "--target", str(machine.proc.pid), "--mount"]
    argv = [*on_machine, PYTHON, idle.AGENT_PATH, idle.CONFIG_PATH]
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    return done.stdout.strip().splitlines()


def test_up_grants_the_vm_its_role_installs_the_agent_and_down_removes_both(
    vm: list[SSHServer],
    arm_env: FakeArm,  # noqa: F811
    prices: RetailPrices,
    lab: str,
) -> None:
    up = _cli("up", "--name", lab, "--allow-ip", "203.0.113.7/32", "--yes", "--idle-stop", "45", "--budget", "500")
    assert up.exit_code == 0, up.output
    assert "Idle agent (azure): stops the lab after 45 idle minutes" in up.stdout
    [machine] = vm
    record = StateStore().load(lab)
    [vm_id] = arm_env.resource_ids("virtualMachines")
    principal = arm_env.vm_principal(vm_id)
    assert principal and (arm_env.get(vm_id) or {})["identity"]["type"] == "SystemAssigned"

    # RBAC: one custom role that may only read and deallocate, assigned to the VM's identity at the VM alone.
    [role] = arm_env.role_definitions.values()
    assert role["properties"]["permissions"][0]["actions"] == list(idlerole.ROLE_ACTIONS)
    assert role["properties"]["assignableScopes"] == [vm_id.split("/providers/")[0]]
    [assignment] = arm_env.role_assignments.values()
    assert assignment["properties"]["scope"] == vm_id and assignment["properties"]["principalId"] == principal
    assert assignment["properties"]["roleDefinitionId"] == role["id"]

    # The machine: the agent from templates/, its config, the token readable by root alone, the units.
    agent_template = Path(__file__).resolve().parents[2] / "templates" / "idle_agent.py"
    assert machine.machine_file(idle.AGENT_PATH).read_bytes() == agent_template.read_bytes()
    run_state = agent_template.with_name("run_state.py").read_bytes()
    assert machine.machine_file(idle.RUN_STATE_PATH).read_bytes() == run_state
    assert machine.machine_file(idle.TOKEN_PATH).read_text() == record.jupyter_token
    assert machine.machine_file(idle.TOKEN_PATH).stat().st_mode & 0o777 == 0o600
    for unit in idle.UNITS:
        assert machine.machine_file(f"{idle.SYSTEMD_DIR}/{unit}").is_file()
    config = _config(machine)
    assert config["mode"] == "azure" and config["window_minutes"] == 45 and config["budget_usd"] == 500
    # Not Spot; its daily auto-shutdown as the schedule has it (19:00 in this computer's zone, TZ=Europe/Berlin).
    assert config["spot"] is False and (config["shutdown_at"], config["shutdown_zone"]) == ("19:00", "Europe/Berlin")
    assert config["container"] == record.container_name and config["arm_url"] == arm_env.url
    assert config["usd_per_hour"] == 0.192  # the price table's Linux pay-as-you-go D4s v5, not Windows or Spot

    # idle-stop changes the window on the machine.
    changed = _cli("idle-stop", "--name", lab, "20")
    assert changed.exit_code == 0, changed.output
    assert _config(machine)["window_minutes"] == 20

    # The agent's first check; status shows it from the state file on the machine.
    arm_env.imds_vm = vm_id
    assert _tick(arm_env, machine) == ["labctl-idle: idle 0s of 20m"]
    status = _cli("status", "--name", lab, "--json")
    assert status.exit_code == 0, status.output
    facts = json.loads(status.stdout)
    assert facts["idle_agent"] == "azure" and facts["idle_stop_minutes"] == 20
    assert facts["idle_last_decision"] == "idle 0s of 20m" and facts["idle_stop_due"]
    assert facts["price_source"].startswith("Azure Retail Prices API")
    assert 0 <= facts["spend_so_far_usd"] < 0.1 and 499.9 < facts["budget_left_usd"] <= 500
    text = _cli("status", "--name", lab).stdout
    assert "(estimate)" in text and "stop due" in text and "last idle check" in text

    # A short window: the VM deallocates itself with its own identity; the next status records that stop.
    machine.machine_file(idle.CONFIG_PATH).write_text(json.dumps({**_config(machine), "window_seconds": 1}))
    time.sleep(1.5)
    out = _tick(arm_env, machine)
    assert out[0].endswith("deallocating") and out[2].startswith("labctl-idle: deallocate accepted"), out
    assert out[1] == "labctl-idle: checkpoint (idle): no run in progress", out  # asked in the lab container
    arm_env.settle()
    assert arm_env.power[vm_id.lower()] == "deallocated"
    assert set(arm_env.token_principals.values()) == {principal}
    after = json.loads(_cli("status", "--name", lab, "--json").stdout)
    assert after["power_state"] == "deallocated" and after["spend"]["allocated_hours"] < after["spend"]["life_hours"]
    events = StateStore().load(lab).target_data["power_events"]
    assert [event[1] for event in events] == ["running", "deallocated"]
    group = arm_env.groups[record.target_data["resource_group"].lower()]
    assert group["tags"]["labctl-allocated"].endswith(";-")  # the history survives a lost state file

    # A budget already spent: `start` brings the VM back but says the agent will stop it again.
    spent = StateStore().load(lab)
    spent.idle["budget_usd"] = 0.0001
    StateStore().save(spent)
    started = _cli("start", "--name", lab)
    assert started.exit_code == 0, started.output
    assert "has spent its budget" in started.output and "stops it again within minutes" in started.output
    events = StateStore().load(lab).target_data["power_events"]
    assert [event[1] for event in events] == ["running", "deallocated", "running"]

    down = _cli("down", "--name", lab, "--yes", "--force")
    assert down.exit_code == 0, down.output
    assert arm_env.role_definitions == {} and arm_env.role_assignments == {}
    assert arm_env.group_names() == []


def test_a_contributor_asking_for_idle_stop_is_refused_before_anything_is_created(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.caller_role = "Contributor"
    refused = _cli("up", "--name", "lab", "--allow-ip", "203.0.113.7/32", "--idle-stop", "30")
    assert refused.exit_code != 0
    assert "Microsoft.Authorization/roleAssignments/write" in refused.output
    assert "Owner or User Access Administrator" in refused.output and "Nothing was created" in refused.output
    assert arm_env.count("PUT", ".") == 0 and arm_env.group_names() == []


def test_a_contributor_by_default_gets_the_lab_without_identity_or_role(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.caller_role = "Contributor"
    record = provision("lab", idle_stop=60.0, allow_ip="203.0.113.7/32")
    [vm_id] = arm_env.resource_ids("virtualMachines")
    assert "identity" not in (arm_env.get(vm_id) or {})
    assert arm_env.role_definitions == {} and arm_env.role_assignments == {}
    assert "Owner or User Access Administrator" in record.idle["why_not"]
    assert arm_env.resource_ids("schedules"), "the daily auto-shutdown stays"


def test_the_assignment_waits_for_the_new_identity_to_replicate(arm_env: FakeArm) -> None:  # noqa: F811
    fault = arm_env.inject(method="PUT", path="roleassignments/", status=400, code="PrincipalNotFound", times=2)
    record = provision("lab", idle_stop=60.0, allow_ip="203.0.113.7/32")
    assert fault.hits == 2 and record.idle.get("granted") is True
    [assignment] = arm_env.role_assignments.values()
    assert assignment["properties"]["scope"].endswith("/virtualMachines/" + record.target_data["vm_name"])


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SSHServer, KeyPair]]:
    """A user's SSH host: an sshd whose /etc, /opt, /var/lib and login home are its own."""
    reason = sshd_unavailable()
    if reason:
        pytest.skip(reason)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    server, client = make_server(tmp_path / "sshd", machine_dirs=MACHINE_DIRS)
    server.start()
    yield server, client
    server.stop()


def test_an_ssh_host_gets_the_agent_only_when_asked_and_in_the_action_asked_for(
    lab_name: str, host: tuple[SSHServer, KeyPair], lab_image: str
) -> None:
    server, client = host
    ssh_lab = lab_name
    host = f"{server.user}@{server.host}:{server.port}"
    from labctl.keys import fingerprint

    pin = ["--host-key-fingerprint", fingerprint(server.host_key.public)]
    args = ["up", "--target", "ssh", "--host", host, "--ssh-key", str(client.private_path), "-n", ssh_lab, *pin]
    plain = _cli(*args)
    assert plain.exit_code == 0, plain.output
    assert not server.machine_file(idle.CONFIG_PATH).exists(), "a machine labctl did not make gets no agent unasked"

    asked = _cli(*args, "--idle-stop", "5", "--idle-action", "shutdown")
    assert asked.exit_code == 0, asked.output
    assert "Idle agent (shutdown): stops the lab after 5 idle minutes" in asked.stdout
    config = _config(server)
    assert config["mode"] == "shutdown" and config["window_minutes"] == 5 and config["ssh_port"] == server.port
    assert _cli("idle-stop", "-n", ssh_lab, "off").exit_code == 0
    assert _config(server)["window_minutes"] == 0

    # labctl's own connections marked themselves in the login user's home, for the agent to leave them out.
    marks = server.machine_file(f"{LOGIN_HOME}/{idle.SSH_MARKS}")
    assert marks.is_dir() and any(marks.iterdir())
    assert _cli("down", "-n", ssh_lab, "--yes").exit_code == 0


def test_a_size_the_subscription_offers_is_taken_even_when_the_catalog_lacks_it(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.regions["eastus"].limits["standardndsh100v5family"] = 96
    record = provision("lab", sizes=["ND96isr_H100_v5"], allow_ip="203.0.113.7/32")
    [vm_id] = arm_env.resource_ids("virtualMachines")
    assert (arm_env.get(vm_id) or {})["properties"]["hardwareProfile"]["vmSize"] == "Standard_ND96isr_H100_v5"
    assert record.gpu is True and record.target_data["usd_per_hour"] == 0.0  # shape from the SKU; price unknown
    missing = _cli("up", "--name", "other", "--size", "Standard_NV9zz_v9", "--allow-ip", "203.0.113.7/32")
    assert missing.exit_code != 0 and "Standard_NV9zz_v9 is not offered in eastus" in missing.output
