"""The whole flow a user runs: `up → open → run-lab → status → down`, on Azure as labctl sees it.

Azure is the fake ARM server (the real azure-identity and azure-mgmt clients talk to it over HTTPS). Its "VM"
is real: when the VM is created, the fake boots a real sshd on 127.0.0.1 with the host key labctl generated and
put in cloud-init, and the machine behind it has a real Docker engine, where labctl builds its real lab image
(FROM a local stand-in for the pytorch base image) and trains the real lab on tiny synthetic data.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labctl.cli import app
from labctl.state import StateStore
from tests.fakearm import FakeArm
from tests.fakearm.fixtures import arm_env, fake_arm  # noqa: F401
from tests.support.fake_vm import serve_vms
from tests.support.sshd import SSHServer, free_port, sshd_unavailable

pytestmark = pytest.mark.e2e

TRAIN = ["--data", "synthetic", "--epochs", "1", "--batch-size", "32", "--set", "log_every=0"]


@pytest.fixture
def vm(arm_env: FakeArm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lab_image: str) -> Iterator[list[SSHServer]]:  # noqa: F811
    """Boot a real sshd for each VM the fake ARM creates, with the keys from the VM's cloud-init."""
    reason = sshd_unavailable()
    if reason:
        pytest.skip(reason)
    port = free_port()
    monkeypatch.setenv("LABCTL_SSH_PORT", str(port))
    monkeypatch.setenv("LABCTL_RESULTS_DIR", str(tmp_path / "results"))
    servers = serve_vms(arm_env, tmp_path, port)
    # The stand-in VM is this computer: its admin is whoever runs the tests (sshd logs in existing users only).
    import pwd

    monkeypatch.setenv("LABCTL_ADMIN_USER", pwd.getpwuid(os.geteuid()).pw_name)
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def lab(docker_client: Any) -> Iterator[str]:
    """A lab name of its own; afterwards its container and volume go, as the VM's disk goes with the VM."""
    import secrets

    from labctl.container import remove_lab

    name = f"e2e{secrets.token_hex(3)}"
    yield name
    remove_lab(docker_client, name)


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _json(result: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _nothing_left(fake: FakeArm) -> bool:
    return fake.group_names() == [] and fake.resource_ids() == []


def _ssh_rules(fake: FakeArm) -> list[tuple[str, str, str]]:
    [nsg_id] = fake.resource_ids("networkSecurityGroups")
    nsg = fake.get(nsg_id) or {}
    return [
        (r["properties"]["access"], r["properties"]["destinationPortRange"], r["properties"]["sourceAddressPrefix"])
        for r in nsg["properties"]["securityRules"]
        if r["properties"]["direction"] == "Inbound"
    ]


def _hold_tunnel(port: int) -> tuple[threading.Thread, threading.Event, io.StringIO, dict[str, Any]]:
    from labctl.ui import PlainReporter
    from labctl.workflows.reach import open_lab

    stop, said, outcome = threading.Event(), io.StringIO(), {}
    reporter = PlainReporter(said)
    thread = threading.Thread(target=lambda: outcome.update(open_lab(reporter, port=port, stop=stop).data), daemon=True)
    thread.start()
    return thread, stop, said, outcome


def test_up_open_run_status_down(vm: list[SSHServer], arm_env: FakeArm, tmp_path: Path, lab: str) -> None:  # noqa: F811
    """One lab for the whole flow: each `up` of a VM with Jupyter, and its `down`, cost many seconds. The runs come
    first, in the order the checks of each read them; the outage comes last, as it restarts the machine's sshd."""
    token = _up_and_open(arm_env, lab)
    _first_run_and_status(tmp_path, lab, token)
    _live_progress_kernel_and_data(tmp_path, lab, token)
    _notebook_runs_on_the_lab(lab)
    _dropped_connection_loses_nothing_and_down_protects_results(vm, arm_env, tmp_path, lab)
    assert not StateStore().exists(lab)


def _up_and_open(arm_env: FakeArm, lab: str) -> str:  # noqa: F811
    """`up`, then `open`'s tunnel to Jupyter; the lab's token."""
    # The fake VM's sshd listens on this computer's loopback, and the fake ARM does not filter traffic, so the
    # rule's source is a documentation address: a loopback one is refused, as it could never reach a real VM.
    up = _cli("up", "--name", lab, "--allow-ip", "203.0.113.7/32", "--yes")
    assert up.exit_code == 0, up.output
    assert "labctl open" in up.stdout and "labctl run-lab" in up.stdout
    record = StateStore().load(lab)
    assert record.status == "ready" and record.nodes[0].host == "127.0.0.1"
    token = record.jupyter_token
    assert token and len(token) >= 64  # at least 256 random bits, hex
    assert token not in up.output  # `up` never shows it; `open` does
    # The fake VM runs no cloud-init, so no disk is mounted and the volume is Docker's own: `up` notices, and a
    # workspace on the OS disk is not offered to be kept (it would be lost with the VM).
    assert "is on its VM's OS disk, not on its workspace disk" in up.output
    assert record.target_data["workspace_unbound"] is True
    kept = _cli("down", "--yes", "--keep-workspace")
    assert kept.exit_code == 2 and "cannot outlive it on Azure" in kept.output
    assert StateStore().load(lab).status == "ready"
    assert _ssh_rules(arm_env) == [("Allow", "22", "203.0.113.7/32")]  # nothing but SSH, from one source

    # open: a tunnel to Jupyter on the machine's loopback; Jupyter answers with the token, refuses without.
    thread, stop, said, outcome = _hold_tunnel(free_port())
    try:
        deadline = time.monotonic() + 60
        while "http://" not in said.getvalue() and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        url = next(line for line in said.getvalue().splitlines() if line.startswith("http://"))
        assert f"token={token}" in url
        base = url.split("/lab?")[0]
        assert _get(f"{base}/api/status?token={token}") == 200
        assert _get(f"{base}/api/status") == 403
    finally:
        stop.set()
        thread.join(timeout=30)
    assert outcome.get("tunnel") is True
    printed = _cli("open", "--print", "--json")
    assert printed.exit_code == 0, printed.output
    assert _json(printed)["url"] == f"http://127.0.0.1:8888/lab?token={token}"
    return token


def _first_run_and_status(tmp_path: Path, lab: str, token: str) -> None:
    # run-lab: the real lab trains inside the container; progress streams; results come back verified.
    run = _cli("run-lab", *TRAIN)
    assert run.exit_code == 0, run.output
    assert "Overall accuracy:" in run.stdout and "Accuracy per class" in run.stdout and "Time: " in run.stdout
    assert "Loss curve: " in run.stdout and "Confusion matrix: " in run.stdout
    assert "drawing the loss curve and the confusion matrix ...\n" in run.stdout  # the lab says what it is busy with
    [run_record] = StateStore().load(lab).runs
    assert run_record.state == "succeeded" and run_record.fetched_to
    results = Path(run_record.fetched_to)
    assert results == tmp_path / "results" / lab / run_record.run_id
    for name in ("metrics.json", "checkpoint.pt", "events.jsonl", "train.log", "SHA256SUMS"):
        assert (results / name).is_file(), name
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["status"] == "succeeded" and metrics["device"] == "cpu"

    status = _cli("status", "--json")
    assert status.exit_code == 0, status.output
    facts = _json(status)
    assert facts["power_state"] == "running" and facts["size"] == "Standard_D4s_v5"
    assert facts["latest_run"]["run_id"] == run_record.run_id and facts["latest_run"]["state"] == "succeeded"
    assert token not in status.stdout


def _dropped_connection_loses_nothing_and_down_protects_results(
    vm: list[SSHServer],
    arm_env: FakeArm,  # noqa: F811
    tmp_path: Path,
    lab: str,
) -> None:
    # Long enough (about half a minute) to still be training after the outage below.
    long_run = ["--data", "synthetic:6000", "--epochs", "3", "--batch-size", "8", "--set", "log_every=0"]
    started = _cli("run-lab", "--detach", "--json", *long_run)
    assert started.exit_code == 0, started.output
    run_id = _json(started)["run_id"]

    refused_while_training = _cli("down", "--yes")  # the run started a moment ago and takes half a minute
    assert refused_while_training.exit_code != 0
    assert "still training" in refused_while_training.output
    stop_refused = _cli("stop")  # no terminal to ask in: a run still training is not switched off without --yes
    assert stop_refused.exit_code == 2 and "is training" in stop_refused.output and "--yes" in stop_refused.output
    assert arm_env.count("POST", "deallocate") == 0

    # Follow from another process, then drop every SSH connection to the machine mid-run: a network outage.
    logins = vm[0].log_path.read_text().count("Accepted publickey")
    follower = subprocess.Popen(
        [sys.executable, "-m", "labctl", "logs", "--follow", run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while vm[0].log_path.read_text().count("Accepted publickey") == logins:  # until the follower is connected
        assert follower.poll() is None and time.monotonic() < deadline, follower.communicate()
        time.sleep(0.1)
    vm[0].stop()
    time.sleep(2)
    vm[0].start()  # the network is back; the run went on all along
    out, err = follower.communicate(timeout=900)  # a deadline for a hang: the run ends in about half a minute
    # The follower either rode out the outage by reconnecting or ended with a plain message; never a traceback.
    assert b"Traceback" not in err and b"unexpected" not in err, err.decode()[-2000:]

    follow = _cli("logs", "--follow", run_id)
    assert follow.exit_code == 0, follow.output

    refused = _cli("down", "--yes")
    assert refused.exit_code != 0
    assert "never fetched" in refused.output and f"labctl fetch {run_id}" in refused.output
    assert not _nothing_left(arm_env)

    fetched = _cli("fetch", run_id)
    assert fetched.exit_code == 0, fetched.output
    log = (tmp_path / "results" / lab / run_id / "train.log").read_text()
    assert log.strip() and log.strip() in follow.stdout  # reattaching showed everything, from the start
    if follower.returncode == 0:  # it reconnected by itself: then it, too, showed every line
        assert log.strip() in out.decode()

    down = _cli("down", "--yes")
    assert down.exit_code == 0, down.output
    assert _nothing_left(arm_env)


def _tunnel_base(thread: threading.Thread, said: io.StringIO) -> str:
    """The tunnel's Jupyter address (http://127.0.0.1:PORT), once `open` prints it."""
    deadline = time.monotonic() + 60
    while "http://" not in said.getvalue() and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    url = next(line for line in said.getvalue().splitlines() if line.startswith("http://"))
    return url.split("/lab?")[0]


def _api(method: str, url: str, token: str) -> tuple[int, Any]:
    body = b"{}" if method == "POST" else None
    headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as reply:
        raw = reply.read()
        return int(reply.status), json.loads(raw) if raw else {}


def _execute(ws_url: str, code: str, timeout: float = 180) -> str:
    """Run ``code`` in the kernel behind ``ws_url`` (its channels websocket); return what it printed."""
    import asyncio
    import uuid

    from tornado.websocket import websocket_connect

    async def go() -> str:
        conn = await asyncio.wait_for(websocket_connect(ws_url), timeout=60)
        msg_id, printed = uuid.uuid4().hex, []
        header = {"msg_id": msg_id, "username": "e2e", "session": uuid.uuid4().hex, "date": ""}
        content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False}
        request = {
            "header": {**header, "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {},
            "metadata": {},
            "content": content,
            "channel": "shell",
            "buffers": [],
        }
        await conn.write_message(json.dumps(request))
        while True:
            raw = await asyncio.wait_for(conn.read_message(), timeout=timeout)
            assert raw is not None, "the kernel's websocket closed before the cell finished"
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                printed.append(msg["content"]["text"])
            elif kind == "error":
                raise AssertionError("\n".join(msg["content"]["traceback"]))
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                conn.close()
                return "".join(printed)

    return asyncio.run(go())


def _image_folder(root: Path, classes: tuple[str, ...], per_class: int) -> Path:
    """train/<class>/*.jpg of small solid-ish images, a different colour per class."""
    from PIL import Image

    for k, name in enumerate(classes):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            colour = (200 * (k == 0) + i, 200 * (k == 1) + i, 40)
            Image.new("RGB", (32, 32), colour).save(folder / f"{i:04d}.jpg")
    return root


def _progress_while_running(run_id: str) -> tuple[str, str]:
    """Follow a detached run from another process; at its first progress line, ask the lab for the run's state."""
    follower = subprocess.Popen(
        [sys.executable, "-m", "labctl", "logs", "--follow", run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert follower.stdout is not None
    try:
        for line in follower.stdout:
            if " step " in line and " loss " in line:
                runs = _cli("runs", "--json")
                assert runs.exit_code == 0, runs.output
                [state] = [r["state"] for r in _json(runs)["runs"] if r["run_id"] == run_id]
                return line, state
        raise AssertionError(
            f"no progress line arrived; the follower said: {follower.stderr.read()[-2000:] if follower.stderr else ''}"
        )
    finally:
        follower.communicate(timeout=300)
        assert follower.returncode == 0


def _live_progress_kernel_and_data(tmp_path: Path, lab: str, token: str) -> None:
    # Progress streams while the run trains: a progress line arrives while the lab still says "running".
    long_run = ["--data", "synthetic:4000", "--epochs", "2", "--batch-size", "8", "--set", "log_every=1"]
    started = _cli("run-lab", "--detach", "--json", *long_run)
    assert started.exit_code == 0, started.output
    run_id = _json(started)["run_id"]
    line, state = _progress_while_running(run_id)
    assert state == "running", line
    assert _cli("fetch", run_id).exit_code == 0

    # A cell runs in a Jupyter kernel reached through the SSH tunnel, and the kernel goes when asked.
    thread, stop, said, _ = _hold_tunnel(free_port())
    try:
        base = _tunnel_base(thread, said)
        code, kernel = _api("POST", f"{base}/api/kernels", token)
        assert code == 201, kernel
        ws = base.replace("http://", "ws://") + f"/api/kernels/{kernel['id']}/channels?token={token}"
        printed = _execute(ws, "import torch; print(torch.__version__, 6 * 7)")
        assert printed.split()[-1] == "42", printed
        assert _api("DELETE", f"{base}/api/kernels/{kernel['id']}", token)[0] == 204
        assert kernel["id"] not in [k["id"] for k in _api("GET", f"{base}/api/kernels", token)[1]]
    finally:
        stop.set()
        thread.join(timeout=30)

    # --data PATH: a folder on this computer goes up to the lab, and the run trains on its classes and images.
    pets = _image_folder(tmp_path / "pets", ("cat", "dog"), 16)
    run = _cli("run-lab", "--data", str(pets), "--epochs", "1", "--batch-size", "8", "--set", "log_every=0")
    assert run.exit_code == 0, run.output
    results = Path(StateStore().load(lab).runs[-1].fetched_to or "")
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["status"] == "succeeded" and metrics["classes"] == ["cat", "dog"]
    assert metrics["data"]["n_train"] + metrics["data"]["n_test"] == 32 and metrics["data"]["n_test"] > 0
    assert "pets" in metrics["data"]["source"]


def _notebook_runs_on_the_lab(lab: str) -> None:
    # --notebook: the tutorial notebook runs headless on the lab, tiny, and its executed copy comes back.
    notebook = _cli(
        "run-lab",
        "--notebook",
        "--data",
        "synthetic:64",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--set",
        "max_steps=4",
        "--set",
        "workers=0",
        "--set",
        "print_every=1",
    )
    assert notebook.exit_code == 0, notebook.output
    assert "Overall accuracy:" in notebook.stdout and "Accuracy per class" in notebook.stdout
    # one line as each code cell starts and one when it ends, streamed from the lab
    started = [line for line in notebook.stdout.splitlines() if line.startswith("cell 1/") and line.endswith(" ...")]
    assert started and started[0].startswith("cell 1/18: def env(name, default=None, kind=str):"), notebook.stdout
    assert "cell 18/18 done in " in notebook.stdout
    record = StateStore().load(lab).runs[-1]
    assert record.state == "succeeded" and record.fetched_to
    executed = list(Path(record.fetched_to).rglob("first_pytorch_classifier*.ipynb"))
    assert executed, sorted(p.name for p in Path(record.fetched_to).rglob("*"))
    cells = json.loads(executed[0].read_text())["cells"]
    assert any(cell.get("outputs") for cell in cells if cell["cell_type"] == "code")
