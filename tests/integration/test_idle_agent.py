"""The idle agent against real parts: the lab's Jupyter container, a real sshd, and the fake ARM with its IMDS.

The agent runs here as the systemd timer runs it on the machine: ``python3 templates/idle_agent.py CONFIG``, once
per "minute", with the machine's own python3 (no labctl, no virtual environment). The window is a few seconds
(``window_seconds``) so each test takes seconds, not hours. Nothing goes to 169.254.169.254 or Azure: the config
points the metadata service and ARM at the fake on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from labctl import idle
from labctl.container import LabContainer
from labctl.labhost import prepare_lab
from labctl.machine.base import SSH_MARK_COMMAND
from labctl.machine.ssh import SSHMachine
from labctl.runs import RUNS_DIR, LabRuns, new_run_id
from labctl.state import LabRecord
from labctl.targets.azure import idlerole
from labctl.ui import PlainReporter
from tests.fakearm.fixtures import fake_arm  # noqa: F401
from tests.fakearm.server import FakeArm
from tests.support.sshd import KeyPair, SSHServer, free_port

pytestmark = pytest.mark.integration

AGENT = Path(__file__).resolve().parents[2] / "templates" / "idle_agent.py"
RUN_STATE = AGENT.parent / "run_state.py"  # checkpoints the runs before a stop, from stdin as on the machine
PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable  # the machine's python, stdlib only
WINDOW = 1.0  # short: the tests wait it out, some more than once; a slow tick is allowed for (idle_out)
AUTH = "providers/Microsoft.Authorization"
API = idlerole.AUTHORIZATION_API_VERSION
NETWORK_API = "2026-03-01"  # what azure-mgmt-network sends, as labctl's own network calls do
DEALLOCATE = "Microsoft.Compute/virtualMachines/deallocate/action"
VM_READ = "Microsoft.Compute/virtualMachines/read"


# ------------------------------------------------------------------------------------------------- fake Azure


class Arm:
    """labctl's side of the fake ARM: a user login that makes the VM, its identity and the role, over HTTPS."""

    def __init__(self, fake: FakeArm) -> None:
        self.fake = fake
        self.http = requests.Session()
        self.http.verify = str(fake.ca_path)
        self.http.trust_env = False  # a REQUESTS_CA_BUNDLE of the machine would win over verify otherwise
        form = {"client_id": fake.client_id, "client_secret": fake.client_secret, "grant_type": "client_credentials"}
        token = self.http.post(f"{fake.url}/{fake.tenant}/oauth2/v2.0/token", data=form).json()["access_token"]
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.sub = f"/subscriptions/{fake.subscription}"
        self.rg = f"{self.sub}/resourceGroups/labctl-idle-rg"

    def put(self, path: str, body: dict[str, Any], api: str = "2024-07-01") -> dict[str, Any]:
        answer = self.http.put(f"{self.fake.url}{path}", params={"api-version": api}, json=body)
        assert answer.status_code in (200, 201), answer.text
        return dict(answer.json())

    def assign(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A role assignment, retried while its new role replicates, as labctl's ``idlerole._assign`` does."""
        deadline = time.monotonic() + 10
        while True:
            answer = self.http.put(f"{self.fake.url}{path}", params={"api-version": API}, json=body)
            replicating = answer.status_code == 400 and answer.json()["error"]["code"] == "RoleDefinitionDoesNotExist"
            if not replicating or time.monotonic() > deadline:
                assert answer.status_code in (200, 201), answer.text
                return dict(answer.json())
            time.sleep(0.05)

    def make_vm(self) -> tuple[str, str]:
        """A VM with a system-assigned identity; returns its id and its identity's principal id."""
        net = f"{self.rg}/providers/Microsoft.Network"
        self.put(self.rg, {"location": "eastus"}, "2025-04-01")
        vnet = {"location": "eastus", "properties": {"subnets": [{"name": "default"}]}}
        vnet["properties"]["addressSpace"] = {"addressPrefixes": ["10.42.0.0/16"]}
        self.put(f"{net}/virtualNetworks/vnet", vnet, NETWORK_API)
        subnet = {"id": f"{net}/virtualNetworks/vnet/subnets/default"}
        nic = {
            "location": "eastus",
            "properties": {"ipConfigurations": [{"name": "ip", "properties": {"subnet": subnet}}]},
        }
        self.put(f"{net}/networkInterfaces/nic", nic, NETWORK_API)
        vm_id = f"{self.rg}/providers/Microsoft.Compute/virtualMachines/vm"
        image = {"publisher": "microsoft-dsvm", "offer": "ubuntu-2204", "sku": "2204-gen2", "version": "latest"}
        body = {
            "location": "eastus",
            "identity": {"type": "SystemAssigned"},
            "properties": {
                "hardwareProfile": {"vmSize": "Standard_NC4as_T4_v3"},
                "storageProfile": {"imageReference": image},
                "osProfile": {"computerName": "vm", "adminUsername": "azureuser"},
                "networkProfile": {"networkInterfaces": [{"id": f"{net}/networkInterfaces/nic"}]},
            },
        }
        vm = self.put(vm_id, body)
        assert vm["identity"]["type"] == "SystemAssigned"
        return vm_id, str(vm["identity"]["principalId"])

    def grant(self, vm_id: str, principal: str, actions: list[str] | None = None) -> str:
        """Give the VM's identity a role at the VM's scope: labctl's own (``actions`` None) or one with ``actions``."""
        if actions is None:
            self.put(idlerole.role_definition_url(self.rg, vm_id), idlerole.role_definition(self.rg, vm_id, "lab"), API)
            body = idlerole.role_assignment(self.fake.subscription, vm_id, principal)
            assigned = self.assign(idlerole.role_assignment_url(vm_id), body)
            assert assigned["properties"]["roleDefinitionId"] == idlerole.role_definition_url(
                f"/subscriptions/{self.fake.subscription}", vm_id
            )
            return str(assigned["id"])
        role_guid = str(uuid.uuid4())
        role = {
            "properties": {
                "roleName": f"test role {role_guid[:8]}",
                "type": "CustomRole",
                "permissions": [{"actions": actions, "notActions": []}],
                "assignableScopes": [self.rg],
            }
        }
        made = self.put(f"{self.rg}/{AUTH}/roleDefinitions/{role_guid}", role, API)
        props = {"roleDefinitionId": made["id"], "principalId": principal, "principalType": "ServicePrincipal"}
        assigned = self.assign(f"{vm_id}/{AUTH}/roleAssignments/{uuid.uuid4()}", {"properties": props})
        assert assigned["properties"]["scope"] == vm_id
        return str(assigned["id"])


@pytest.fixture
def azure(fake_arm: FakeArm) -> tuple[Arm, str, str]:  # noqa: F811
    arm = Arm(fake_arm)
    vm_id, principal = arm.make_vm()
    fake_arm.imds_vm = vm_id  # the agent below runs "on" this VM
    return arm, vm_id, principal


def power(fake: FakeArm, vm_id: str) -> str:
    fake.settle()
    return fake.power.get(vm_id.lower(), "?")


# ------------------------------------------------------------------------------------------------- the lab


@dataclass
class Agent:
    config: Path
    lab: LabRecord
    lines: list[str]

    def tick(self) -> tuple[int, list[str]]:
        done = subprocess.run([PYTHON, str(AGENT), str(self.config)], capture_output=True, text=True, timeout=120)
        out = done.stdout.strip().splitlines()
        assert all(line.startswith("labctl-idle: ") for line in out), done.stdout + done.stderr
        self.lines += out
        return done.returncode, out

    def update(self, **changes: Any) -> None:
        data = json.loads(self.config.read_text())
        data.update(changes)
        self.config.write_text(json.dumps(data))


@pytest.fixture
def agent(shared_lab: LabRecord, fake_arm: FakeArm, tmp_path: Path) -> Agent:  # noqa: F811
    """An agent that only watches the session's lab; each agent keeps its own state."""
    return _agent(shared_lab, fake_arm, tmp_path)


@pytest.fixture
def own_agent(lab_image: str, lab_name: str, fake_arm: FakeArm, tmp_path: Path) -> Agent:  # noqa: F811
    """An agent over a lab of its own, for a test that leaves a kernel in it or in which the agent stops it."""
    lab = prepare_lab(LabRecord(name=lab_name, target="local", jupyter_port=free_port()), PlainReporter(quiet=True))
    return _agent(lab, fake_arm, tmp_path)


def _agent(lab: LabRecord, fake_arm: FakeArm, tmp_path: Path) -> Agent:  # noqa: F811
    assert lab.jupyter_token and lab.container_name
    token_file = tmp_path / "jupyter-token"
    token_file.write_text(lab.jupyter_token)
    token_file.chmod(0o600)
    config = {
        "mode": "azure",
        "window_minutes": 1,
        "window_seconds": WINDOW,
        "jupyter_url": f"http://127.0.0.1:{lab.jupyter_port}",
        "jupyter_token_file": str(token_file),
        "container": lab.container_name,
        "runs_dir": "/workspace/runs",
        "ssh_port": free_port(),  # no sshd there unless a test says otherwise
        "ssh_marks_dir": str(tmp_path / "marks"),
        "state_file": str(tmp_path / "state" / "idle.json"),
        "imds_url": fake_arm.url,
        "arm_url": fake_arm.url,
        "ca_file": str(fake_arm.ca_path),
        "run_state": str(RUN_STATE),
    }
    path = tmp_path / "idle.json"
    path.write_text(json.dumps(config))
    return Agent(path, lab, [])


def idle_out(agent: Agent) -> list[str]:
    """Tick until the window has passed without anything happening; return the lines of the tick that acted.

    The window runs from the last busy tick, so on a slow machine it may have passed by the first tick here: that
    tick acts (a second line says how it went), and one more would only begin the next window."""
    code, out = agent.tick()
    assert code == 0 and out[0].startswith("labctl-idle: idle "), out
    if len(out) == 1:
        time.sleep(WINDOW + 0.3)
        code, out = agent.tick()
    return out


# ------------------------------------------------------------------------------------------------- Jupyter


def jupyter(lab: LabRecord, method: str, path: str) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{lab.jupyter_port}{path}",
        method=method,
        headers={"Authorization": f"token {lab.jupyter_token}"},
    )
    with urllib.request.urlopen(request, data=b"{}" if method == "POST" else None, timeout=30) as answer:
        body = answer.read()
    return json.loads(body) if body else None


def execute(lab: LabRecord, kernel_id: str, code: str) -> None:
    """Send an execute_request over the kernel's websocket (Jupyter's own protocol) and hang up."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    async def send() -> None:
        url = f"ws://127.0.0.1:{lab.jupyter_port}/api/kernels/{kernel_id}/channels"
        ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {lab.jupyter_token}"}))
        session = uuid.uuid4().hex
        header = {
            "msg_id": uuid.uuid4().hex,
            "username": "test",
            "session": session,
            "msg_type": "execute_request",
            "version": "5.3",
            "date": datetime.now(timezone.utc).isoformat(),
        }
        content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False}
        message = {"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": "shell"}
        await ws.write_message(json.dumps(message))
        await asyncio.sleep(1.0)
        ws.close()

    asyncio.run(send())


def wait_state(lab: LabRecord, kernel_id: str, wanted: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    state = "?"
    while time.monotonic() < deadline:
        state = jupyter(lab, "GET", f"/api/kernels/{kernel_id}")["execution_state"]
        if state == wanted:
            return
        time.sleep(0.3)
    raise AssertionError(f"kernel {kernel_id} stayed {state}, not {wanted}")


# ------------------------------------------------------------------------------------------------- tests


def test_idle_lab_deallocates_itself_with_its_own_identity(azure: tuple[Arm, str, str], agent: Agent) -> None:
    arm, vm_id, principal = azure
    arm.grant(vm_id, principal)  # the role and assignment labctl makes
    code, out = agent.tick()
    assert code == 0 and out == [f"labctl-idle: idle 0s of {WINDOW:.0f}s"]
    assert power(arm.fake, vm_id) == "running"
    out = idle_out(agent)
    assert out[0].startswith("labctl-idle: idle ") and out[0].endswith(f" of {WINDOW:.0f}s: deallocating"), out
    assert out[1] == "labctl-idle: checkpoint (idle): no run in progress", out  # in the lab container
    assert out[2].startswith("labctl-idle: deallocate accepted (202)"), out
    assert power(arm.fake, vm_id) == "deallocated"
    # It was the VM's identity that asked, with a token from the metadata service, not a user login.
    assert arm.fake.count("GET", r"^/metadata/identity/oauth2/token$") == 1
    assert arm.fake.count("GET", r"^/metadata/instance$") == 1
    assert set(arm.fake.token_principals.values()) == {principal}
    [posted] = [h for m, p, h in arm.fake.request_headers if m == "POST" and p.endswith("/deallocate")]
    assert posted["content-type"] == "application/json", posted  # ARM takes JSON bodies only


def test_a_worker_deallocates_itself_once_node_0_is_gone(azure: tuple[Arm, str, str], tmp_path: Path) -> None:
    arm, vm_id, principal = azure  # the worker's VM, with its own identity and role
    arm.grant(vm_id, principal)
    config = {"mode": "azure", "window_seconds": WINDOW, "state_file": str(tmp_path / "state.json")}
    config["run_state"] = str(RUN_STATE)  # no container on this "worker": its runs directory is here
    config.update(imds_url=arm.fake.url, arm_url=arm.fake.url, ca_file=str(arm.fake.ca_path))
    worker = Agent(tmp_path / "idle.json", LabRecord(name="w", target="azure"), [])
    with socket.create_server(("127.0.0.1", 0)) as head:  # node 0's SSH port, answering
        address = f"127.0.0.1:{head.getsockname()[1]}"
        worker.config.write_text(json.dumps({**config, "head": address}))
        assert worker.tick() == (0, [f"labctl-idle: busy (node 0 ({address}) answers)"])
    out = idle_out(worker)  # node 0 gone (evicted, deallocated): the worker is idle, and after the window it goes
    assert out[0].endswith(f" of {WINDOW:.0f}s: deallocating") and out[2].startswith(
        "labctl-idle: deallocate accepted"
    ), out
    assert power(arm.fake, vm_id) == "deallocated"


def test_a_busy_kernel_keeps_the_lab_and_its_activity_restarts_the_window(
    azure: tuple[Arm, str, str], own_agent: Agent
) -> None:
    arm, vm_id, principal = azure
    arm.grant(vm_id, principal, [DEALLOCATE])
    kernel = jupyter(own_agent.lab, "POST", "/api/kernels")["id"]
    execute(own_agent.lab, kernel, "import time; time.sleep(120)")
    wait_state(own_agent.lab, kernel, "busy")
    for _ in range(3):
        code, out = own_agent.tick()
        assert code == 0 and out == [f"labctl-idle: busy (kernel {kernel[:8]} busy)"], out
        time.sleep(WINDOW / 2)
    assert power(arm.fake, vm_id) == "running"

    jupyter(own_agent.lab, "POST", f"/api/kernels/{kernel}/interrupt")
    wait_state(own_agent.lab, kernel, "idle")
    out = idle_out(own_agent)
    assert out[0].endswith("deallocating") and power(arm.fake, vm_id) == "deallocated", out


def test_a_labctl_run_in_progress_keeps_the_lab(azure: tuple[Arm, str, str], agent: Agent, docker_client: Any) -> None:
    arm, vm_id, principal = azure
    arm.grant(vm_id, principal, [DEALLOCATE])
    box = docker_client.containers.get(agent.lab.container_name)
    # A run as lab-run.sh leaves it: its directory, its pid (in the container), no exit_code yet.
    start = "mkdir -p /workspace/runs/r1 && echo $$ > /workspace/runs/r1/pid && exec sleep 600"
    box.exec_run(["sh", "-c", start], detach=True)
    box.exec_run(["sh", "-c", "mkdir -p /workspace/runs/r0 && echo 0 > /workspace/runs/r0/exit_code"])
    deadline = time.monotonic() + 30
    while box.exec_run(["test", "-s", "/workspace/runs/r1/pid"]).exit_code != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    for _ in range(3):
        _, out = agent.tick()
        assert out == ["labctl-idle: busy (run r1 in progress)"], out
        time.sleep(WINDOW / 2)
    assert power(arm.fake, vm_id) == "running"

    box.exec_run(["sh", "-c", "echo 0 > /workspace/runs/r1/exit_code; kill $(cat /workspace/runs/r1/pid)"])
    out = idle_out(agent)
    assert out[0].endswith("deallocating") and power(arm.fake, vm_id) == "deallocated", out


def _ssh(server: SSHServer, client: KeyPair) -> SSHMachine:
    """An SSH connection that does not mark itself (a user's); the test marks labctl's own where the agent looks."""
    machine = SSHMachine(server.host, server.port, server.user, client.private_path, server.host_key.public, mark=False)
    return machine.connect()


def test_an_ssh_session_keeps_the_lab_but_labctls_own_connections_do_not(
    azure: tuple[Arm, str, str], agent: Agent, sshd: tuple[SSHServer, KeyPair], tmp_path: Path
) -> None:
    arm, vm_id, principal = azure
    arm.grant(vm_id, principal, [DEALLOCATE])
    server, client = sshd
    agent.update(ssh_port=server.port)
    user = _ssh(server, client)
    try:
        for _ in range(3):
            _, out = agent.tick()
            assert len(out) == 1 and out[0].startswith("labctl-idle: busy (ssh session from 127.0.0.1:"), out
            time.sleep(WINDOW / 2)
        assert power(arm.fake, vm_id) == "running"
    finally:
        user.close()

    # labctl marks its own connection with the connection's $SSH_CONNECTION; the agent leaves it out.
    own = _ssh(server, client)
    try:
        home = tmp_path / "home"  # the admin's home on a lab machine; here a directory of the test's
        agent.update(ssh_marks_dir=str(home / idle.SSH_MARKS))
        own.run(f"HOME={shlex.quote(str(home))} sh -c {shlex.quote(SSH_MARK_COMMAND)}")
        marks = home / idle.SSH_MARKS
        assert len(list(marks.iterdir())) == 1
        out = idle_out(agent)
        assert out[0].endswith("deallocating") and power(arm.fake, vm_id) == "deallocated", out
    finally:
        own.close()
    agent.tick()
    assert list(marks.iterdir()) == [], "the mark of a closed connection is removed"


def test_without_the_role_the_deallocate_is_refused_and_logged(azure: tuple[Arm, str, str], agent: Agent) -> None:
    arm, vm_id, principal = azure
    arm.grant(vm_id, principal, [VM_READ])  # a role, but not the one that deallocates
    out = idle_out(agent)
    assert out[0].endswith("deallocating"), out
    assert out[2].startswith("labctl-idle: deallocate refused: 403 AuthorizationFailed: The client "), out
    assert DEALLOCATE in out[2] and vm_id in out[2]
    assert power(arm.fake, vm_id) == "running"
    code, _ = agent.tick()  # still idle, still refused: the failure shows in systemd's unit state too
    assert code == 1

    arm.grant(vm_id, principal)
    code, out = agent.tick()  # the next minute tries again
    assert code == 0 and out[2].startswith("labctl-idle: deallocate accepted"), out
    assert power(arm.fake, vm_id) == "deallocated"


def test_a_user_token_still_deallocates_and_an_identity_is_held_to_its_scope(azure: tuple[Arm, str, str]) -> None:
    arm, vm_id, principal = azure
    url = f"{arm.fake.url}{vm_id}/deallocate"
    # The identity's role is assigned at its own VM: another VM in the group is out of its reach.
    other = vm_id[: -len("vm")] + "other"
    arm.grant(vm_id, principal, [DEALLOCATE])
    token = arm.http.get(
        f"{arm.fake.url}/metadata/identity/oauth2/token",
        params={"api-version": "2018-02-01", "resource": "https://management.azure.com/"},
        headers={"Metadata": "true"},
    ).json()["access_token"]
    mine = {"Authorization": f"Bearer {token}"}
    refused = requests.post(
        f"{arm.fake.url}{other}/deallocate", params={"api-version": "2024-07-01"}, headers=mine, verify=arm.http.verify
    )
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "AuthorizationFailed"
    assert arm.http.post(url, params={"api-version": "2024-07-01"}).status_code == 202  # the user's login
    assert power(arm.fake, vm_id) == "deallocated"


def test_container_mode_stops_the_lab_container_once(own_agent: Agent, docker_client: Any) -> None:
    own_agent.update(mode="container")
    out = idle_out(own_agent)
    assert out[1:] == [
        "labctl-idle: checkpoint (idle): no run in progress",
        f"labctl-idle: docker stop {own_agent.lab.container_name} done",
    ], out
    assert out[0].endswith(": stopping the lab container"), out
    box = docker_client.containers.get(own_agent.lab.container_name)
    assert box.status == "exited"
    code, out = own_agent.tick()
    assert code == 0 and out == ["labctl-idle: lab container not running; nothing to stop"]


def test_roles_and_assignments_answer_as_arm_does(azure: tuple[Arm, str, str]) -> None:
    arm, vm_id, principal = azure
    url = arm.fake.url
    assignment_id = arm.grant(vm_id, principal)
    assignment = arm.http.get(f"{url}{assignment_id}", params={"api-version": "2022-04-01"}).json()
    role_id = assignment["properties"]["roleDefinitionId"]
    assert role_id.startswith(f"{arm.sub}/{AUTH}/roleDefinitions/"), "a custom role's id is subscription-level"
    role = arm.http.get(
        f"{url}{arm.rg}/{AUTH}/roleDefinitions/{role_id.rsplit('/', 1)[1]}", params={"api-version": "2022-04-01"}
    ).json()
    assert role["properties"]["type"] == "CustomRole"
    assert role["properties"]["permissions"][0]["actions"] == [DEALLOCATE, VM_READ]
    name = role["properties"]["roleName"]
    found = arm.http.get(
        f"{url}{arm.sub}/{AUTH}/roleDefinitions",
        params={"api-version": "2022-04-01", "$filter": f"roleName eq '{name}'"},
    ).json()["value"]
    assert [r["id"] for r in found] == [role_id]
    listed = arm.http.get(
        f"{url}{vm_id}/{AUTH}/roleAssignments",
        params={"api-version": "2022-04-01", "$filter": f"principalId eq '{principal}'"},
    ).json()["value"]
    assert [a["id"] for a in listed] == [assignment_id]

    def put(path: str, body: dict[str, Any]) -> requests.Response:
        return arm.http.put(f"{url}{path}", params={"api-version": "2022-04-01"}, json=body)

    same = {"properties": {"roleDefinitionId": role_id, "principalId": principal}}
    twice = put(f"{vm_id}/{AUTH}/roleAssignments/{uuid.uuid4()}", same)
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "RoleAssignmentExists"
    nobody = {"properties": {"roleDefinitionId": role_id, "principalId": str(uuid.uuid4())}}
    missing = put(f"{vm_id}/{AUTH}/roleAssignments/{uuid.uuid4()}", nobody)
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "PrincipalNotFound"
    busy = arm.http.delete(f"{url}{role_id}", params={"api-version": "2022-04-01"})
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "RoleDefinitionHasAssignments"

    # Deleting the VM leaves its assignment behind, orphaned, as Azure does; the role goes once that is deleted.
    assert arm.http.delete(f"{url}{vm_id}", params={"api-version": "2024-07-01"}).status_code == 202
    arm.fake.settle()
    assert arm.http.get(f"{url}{assignment_id}", params={"api-version": "2022-04-01"}).status_code == 200
    still = arm.http.delete(f"{url}{role_id}", params={"api-version": "2022-04-01"})
    assert still.status_code == 409 and still.json()["error"]["code"] == "RoleDefinitionHasAssignments"
    assert arm.http.delete(f"{url}{assignment_id}", params={"api-version": "2022-04-01"}).status_code == 200
    gone = arm.http.get(f"{url}{assignment_id}", params={"api-version": "2022-04-01"})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "RoleAssignmentNotFound"
    assert arm.http.delete(f"{url}{role_id}", params={"api-version": "2022-04-01"}).status_code == 200
    assert arm.http.delete(f"{url}{role_id}", params={"api-version": "2022-04-01"}).status_code == 204
    assert arm.fake.role_definitions == {}


# ------------------------------------------------------------------------------------------------- checkpoints

# A run that saves its checkpoint on SIGTERM, as cifarlab's trainer does; started as labctl starts every run.
TRAINING = """
import signal, sys, time
def stop(signum, frame):
    open("checkpoint.pt", "wb").write(b"weights")
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
print("training", flush=True)
time.sleep(600)
"""


def start_run(lab: LabRecord, docker_client: Any) -> tuple[str, LabRuns]:
    box = LabContainer(docker_client.containers.get(lab.container_name))
    lab_runs, run_id = LabRuns(box), new_run_id()
    lab_runs.start(run_id, ["python", "-c", TRAINING], path="/workspace", resumable=True)  # as the lab trains
    deadline = time.monotonic() + 60
    while b"training" not in lab_runs.read_from(RUNS_DIR / run_id / "train.log", 0):
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.2)
    return run_id, lab_runs


def test_a_spot_eviction_notice_checkpoints_the_run_and_is_acknowledged(
    azure: tuple[Arm, str, str], agent: Agent, docker_client: Any
) -> None:
    arm, vm_id, principal = azure
    arm.grant(vm_id, principal)
    agent.update(spot=True, watch_seconds=6, poll_seconds=0.3, window_seconds=3600)
    run_id, lab_runs = start_run(agent.lab, docker_client)
    assert agent.tick() == (0, [f"labctl-idle: busy (run {run_id} in progress)"])  # a minute without notice

    # The notice comes while the next minute's run polls, 30 s before the eviction, as Azure gives it.
    ticking = threading.Thread(target=agent.tick)
    ticking.start()
    time.sleep(1.5)
    event_id = arm.fake.scheduled_events.preempt("vm")
    ticking.join(60)
    out = agent.lines[1:]
    assert out[0] == f"labctl-idle: busy (run {run_id} in progress)", out
    assert out[1].startswith(f"labctl-idle: Spot eviction notice {event_id} (not before "), out
    assert out[2:] == [
        f"labctl-idle: checkpoint (spot): run {run_id} checkpointed",
        f"labctl-idle: eviction {event_id} acknowledged",
    ]
    assert lab_runs.info(run_id).state == "interrupted"
    files = lab_runs.files(run_id)
    assert "checkpoint.pt" in files and "resume.json" in files, files
    assert json.loads(lab_runs.read_from(RUNS_DIR / run_id / "resume.json", 0))["reason"] == "spot"
    # Acknowledged once checkpointed: Azure evicts at once instead of at the end of the notice.
    assert arm.fake.scheduled_events.approved == [event_id]
    assert power(arm.fake, vm_id) == "deallocated"
    asked = [h for m, p, h in arm.fake.request_headers if p == "/metadata/scheduledevents"]
    assert asked and all(h.get("metadata") == "true" for h in asked)
    state = json.loads(Path(json.loads(agent.config.read_text())["state_file"]).read_text())
    assert state["events_done"] == [event_id] and state["checkpoint"]["reason"] == "spot"
    _, out = agent.tick()
    assert len(out) == 1 and out[0].startswith("labctl-idle: idle "), "an event is answered once"


def test_the_budget_stop_checkpoints_a_training_run_before_it_deallocates(
    azure: tuple[Arm, str, str], agent: Agent, docker_client: Any
) -> None:
    arm, vm_id, principal = azure
    arm.grant(vm_id, principal)
    spent = {"budget_usd": 0.01, "usd_per_hour": 1e6, "created_at": "2026-01-01T00:00:00+00:00"}
    run_id, lab_runs = start_run(agent.lab, docker_client)
    agent.update(**spent)
    code, out = agent.tick()
    assert code == 0 and out[0].endswith(": deallocating"), out
    assert out[1:] == [
        f"labctl-idle: checkpoint (budget): run {run_id} checkpointed",
        f"labctl-idle: deallocate accepted (202) for {vm_id}",
    ]
    assert lab_runs.info(run_id).state == "interrupted" and "checkpoint.pt" in lab_runs.files(run_id)
    assert power(arm.fake, vm_id) == "deallocated"
