# ruff: noqa: E501  (the table reads best one case a line)
"""The idle agent's rules as a table: observed facts and the previous state in, one decision out."""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import ClassVar

import pytest

AGENT_PATH = Path(__file__).resolve().parents[2] / "templates" / "idle_agent.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("idle_agent", AGENT_PATH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["idle_agent"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


agent = _load()
Activity, Facts, State, decide = agent.Activity, agent.Facts, agent.State, agent.decide

NOW = 1_800_000_000.0
HOUR = 3600.0


def kernel(busy: bool = False, ago: float | None = 2 * HOUR) -> object:
    return Activity("kernel", "abc12345", busy, None if ago is None else NOW - ago)


def terminal(ago: float) -> object:
    return Activity("terminal", "1", False, NOW - ago)


CASES = [
    # (what, facts, previous state, window, budget) -> (action, reason starts with, idle_since)
    ("first look, nothing open", Facts(NOW), State(), HOUR, None, "idle", "idle 0s of 60m", NOW),
    ("kernel busy", Facts(NOW, [kernel(busy=True)]), State(NOW - 5 * HOUR), HOUR, None, "busy", "busy (kernel abc12345 busy)", NOW),
    ("idle kernel, window passed", Facts(NOW, [kernel()]), State(NOW - 2 * HOUR), HOUR, None, "stop", "idle 120m of 60m", NOW - 2 * HOUR),
    ("recent kernel activity", Facts(NOW, [kernel(ago=600)]), State(NOW - 2 * HOUR), HOUR, None, "idle", "idle 10m of 60m", NOW - 600),
    ("recent terminal activity", Facts(NOW, [kernel(), terminal(300)]), State(NOW - 2 * HOUR), HOUR, None, "idle", "idle 5m of 60m", NOW - 300),
    ("activity dated in the future", Facts(NOW, [kernel(ago=-60)]), State(NOW - 2 * HOUR), HOUR, None, "idle", "idle 0s", NOW),
    ("live labctl run", Facts(NOW, live_runs=["20261129-r1"]), State(NOW - 5 * HOUR), HOUR, None, "busy", "busy (run 20261129-r1 in progress)", NOW),
    ("runs cannot be listed", Facts(NOW, runs_error="docker: timeout"), State(NOW - 5 * HOUR), HOUR, None, "busy", "busy (runs unknown", NOW),
    ("ssh session", Facts(NOW, ssh_sessions=["198.51.100.7:50022"]), State(NOW - 5 * HOUR), HOUR, None, "busy", "busy (ssh session from 198.51.100.7:50022)", NOW),
    ("all at once", Facts(NOW, [kernel(busy=True)], ["r1"], None, ["a:1"]), State(), HOUR, None, "busy", "busy (kernel abc12345 busy; run r1 in progress; ssh session from a:1)", NOW),
    ("window just reached", Facts(NOW), State(NOW - HOUR), HOUR, None, "stop", "idle 60m of 60m", NOW - HOUR),
    ("window not yet reached", Facts(NOW), State(NOW - HOUR + 1), HOUR, None, "idle", "idle 59m of 60m", NOW - HOUR + 1),
    ("window 0 is off", Facts(NOW), State(NOW - 50 * HOUR), 0, None, "off", "idle stop off", NOW - 50 * HOUR),
    ("budget passed, even while busy", Facts(NOW, [kernel(busy=True)], spent_usd=10.5), State(), HOUR, 10.0, "stop", "budget passed ($10.50 of $10.00)", None),
    ("budget passed with window off", Facts(NOW, spent_usd=10.0), State(), 0, 10.0, "stop", "budget passed", None),
    ("budget not reached", Facts(NOW, spent_usd=9.99), State(NOW - 600), HOUR, 10.0, "idle", "idle 10m of 60m", NOW - 600),
    ("stop asked a minute ago", Facts(NOW), State(NOW - 2 * HOUR, NOW - 60), HOUR, None, "waiting", "idle 120m of 60m; stop requested 60s ago", NOW - 2 * HOUR),
    ("stop asked long ago", Facts(NOW), State(NOW - 2 * HOUR, NOW - HOUR), HOUR, None, "stop", "idle 120m of 60m", NOW - 2 * HOUR),
    ("jupyter down: no kernels", Facts(NOW, jupyter_error="unreachable"), State(NOW - 600), HOUR, None, "idle", "idle 10m of 60m; jupyter: unreachable", NOW - 600),
    ("container already stopped", Facts(NOW, target_running=False), State(NOW - 5 * HOUR), HOUR, None, "nothing", "lab container not running", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("facts", "state", "window", "budget", "action", "reason", "idle_since"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_rules(
    facts: object,
    state: object,
    window: float,
    budget: float | None,
    action: str,
    reason: str,
    idle_since: float | None,
) -> None:
    decision = decide(facts, state, window, budget)
    assert decision.action == action
    assert decision.reason.startswith(reason), decision.reason
    assert decision.idle_since == idle_since
    assert decision.line == f"labctl-idle: {decision.reason}"


def test_a_stop_records_when_it_was_asked_and_busy_forgets_it() -> None:
    stop = decide(Facts(NOW), State(NOW - 2 * HOUR), HOUR, None)
    assert stop.action == "stop" and stop.stop_requested_at == NOW
    busy = decide(Facts(NOW, live_runs=["r"]), State(NOW - 2 * HOUR, NOW - 60), HOUR, None)
    assert busy.stop_requested_at is None


def test_a_training_run_longer_than_the_window_is_never_stopped() -> None:
    state = State()
    for minute in range(0, 24 * 60, 1):
        now = NOW + minute * 60
        decision = decide(Facts(now, live_runs=["r1"]), state, HOUR, None)
        assert decision.action == "busy"
        state = State(decision.idle_since, decision.stop_requested_at)
    after = decide(Facts(NOW + 24 * HOUR + 600), state, HOUR, None)
    assert after.action == "idle" and after.reason.startswith("idle 11m of 60m")


def test_spend_estimate_counts_every_boot_and_the_fixed_costs_since_creation() -> None:
    boots = {"a": 2 * HOUR, "b": 1.5 * HOUR}
    assert agent.estimate_spend(boots, 1.0, 0.1, NOW - 10 * HOUR, NOW) == pytest.approx(3.5 + 1.0)
    assert agent.estimate_spend({}, 1.0, 0.1, None, NOW) == 0.0


def test_spend_estimate_prices_each_boot_at_the_rate_in_force_when_it_was_last_seen() -> None:
    def iso(when: float) -> str:
        return datetime.fromtimestamp(when, timezone.utc).isoformat()

    boots, seen = {"a": 2 * HOUR, "b": 1.5 * HOUR, "c": HOUR}, {"a": NOW - 5 * HOUR, "b": NOW}
    rates = [[iso(NOW - 10 * HOUR), 1.0], [iso(NOW - 3 * HOUR), 3.0]]  # resized 3 hours ago
    spent = agent.estimate_spend(boots, 2.0, 0.0, None, NOW, (seen, rates))
    assert spent == pytest.approx(2 * 1.0 + 1.5 * 3.0 + 1 * 2.0)  # "c", never seen with a time: today's rate


# ------------------------------------------------------------------------------------------------- observation


def _hex4(address: str, port: int) -> str:
    import socket
    import struct

    (value,) = struct.unpack("=I", socket.inet_aton(address))
    return f"{value:08X}:{port:04X}"


def _hex6(address: str, port: int) -> str:
    import socket
    import struct

    words = struct.unpack("=4I", socket.inet_pton(socket.AF_INET6, address))
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def test_ssh_connections_come_from_the_kernels_tcp_tables(tmp_path: Path) -> None:
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    v4 = tmp_path / "tcp"
    v4.write_text(
        header
        + f"   0: {_hex4('0.0.0.0', 22)} {_hex4('0.0.0.0', 0)} 0A 00000000:00000000 00:00000000 00000000 0 0 1\n"
        + f"   1: {_hex4('10.0.0.4', 22)} {_hex4('198.51.100.7', 50022)} 01 00000000:00000000 00:00000000 0 0 0 2\n"
        + f"   2: {_hex4('10.0.0.4', 22)} {_hex4('198.51.100.7', 50023)} 06 00000000:00000000 00:00000000 0 0 0 3\n"
        + f"   3: {_hex4('127.0.0.1', 8888)} {_hex4('127.0.0.1', 40000)} 01 00000000:00000000 00:00000000 0 0 0 4\n"
        + f"   4: {_hex4('10.0.0.4', 41000)} {_hex4('203.0.113.9', 22)} 01 00000000:00000000 00:00000000 0 0 0 5\n"
    )
    v6 = tmp_path / "tcp6"
    v6.write_text(
        header
        + f"   0: {_hex6('::ffff:10.0.0.4', 22)} {_hex6('::ffff:203.0.113.5', 51000)} 01 0:0 0:0 0 0 0 6\n"
        + f"   1: {_hex6('2001:db8::4', 22)} {_hex6('2001:db8::99', 52000)} 01 0:0 0:0 0 0 0 7\n"
    )
    peers = agent.ssh_connections(22, (str(v4), str(v6), str(tmp_path / "absent")))
    # Only established connections to the local SSH port: not the listener, not TIME_WAIT, not outgoing ssh.
    assert peers == ["198.51.100.7:50022", "203.0.113.5:51000", "2001:db8::99:52000"]


def test_labctls_marks_leave_its_connections_out_and_are_dropped_when_they_close(tmp_path: Path) -> None:
    table = tmp_path / "tcp"
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    rows = [(50022, 1), (50023, 2)]
    table.write_text(
        header
        + "".join(
            f"   {n}: {_hex4('10.0.0.4', 22)} {_hex4('198.51.100.7', p)} 01 00000000:00000000 00:00000000 0 0 0 {n}\n"
            for p, n in rows
        )
    )
    marks = tmp_path / "marks"
    marks.mkdir()
    (marks / "101").write_text("198.51.100.7 50022 10.0.0.4 22\n")
    (marks / "102").write_text("198.51.100.7 49000 10.0.0.4 22\n")  # that connection is gone
    (marks / "103").write_text("garbage")
    assert agent.foreign_sessions(22, str(marks), (str(table),)) == ["198.51.100.7:50023"]
    assert sorted(p.name for p in marks.iterdir()) == ["101"]
    assert agent.foreign_sessions(22, str(tmp_path / "none"), (str(table),)) == [
        "198.51.100.7:50022",
        "198.51.100.7:50023",
    ]


def test_a_connection_that_opens_while_the_agent_looks_keeps_its_mark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()

    def listing(port: int, tables: tuple[str, ...]) -> list[str]:
        # labctl's connection opens and writes its mark just after the kernel's table was read
        (marks / "201").write_text("198.51.100.7 50100 10.0.0.4 22\n")
        return []

    monkeypatch.setattr(agent, "ssh_connections", listing)
    assert agent.foreign_sessions(22, str(marks)) == []
    assert (marks / "201").exists(), "the mark of a connection that just opened is not taken for a closed one's"


def test_runs_in_progress_are_those_without_exit_code_whose_pid_lives(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        for name, files in {
            "live": {"pid": str(sleeper.pid)},
            "done": {"pid": str(sleeper.pid), "exit_code": "0"},
            "lost": {"pid": "999999999"},
            "starting": {},
        }.items():
            (runs / name).mkdir(parents=True)
            for file, text in files.items():
                (runs / name / file).write_text(text)
        old = runs / "stale-start"
        old.mkdir()
        os.utime(old, (time.time() - 3600, time.time() - 3600))
        config = agent.Config(runs_dir=str(runs), container=None)
        live, error = agent.observe_runs(config, True)
        assert error is None and live == ["live", "starting"]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert agent.observe_runs(agent.Config(runs_dir=str(tmp_path / "nothing")), True) == ([], None)


def test_config_is_checked_and_endpoints_follow_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "idle.json"
    path.write_text(json.dumps({"mode": "azure", "window_minutes": 30, "budget_usd": 25}))
    config = agent.Config.load(str(path), {"LABCTL_IDLE_IMDS_URL": "http://127.0.0.1:9", "LABCTL_IDLE_ARM_URL": "x"})
    assert (config.window, config.budget_usd, config.imds_url, config.arm_url) == (1800, 25, "http://127.0.0.1:9", "x")
    assert agent.Config.load(str(path), {}).imds_url == "http://169.254.169.254"
    path.write_text(json.dumps({"window_minutes": 60, "window_seconds": 5}))
    assert agent.Config.load(str(path), {}).window == 5
    for bad, message in [
        ({"mode": "halt"}, "mode must be"),
        ({"mode": "container"}, "needs 'container'"),
        ({"windw_minutes": 5}, "unknown config keys: windw_minutes"),
    ]:
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=message):
            agent.Config.load(str(path), {})


def test_bad_config_is_one_logged_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "idle.json"
    path.write_text("{")
    done = subprocess.run([sys.executable, str(AGENT_PATH), str(path)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout.startswith("labctl-idle: bad config ")


def test_the_agent_uses_the_standard_library_only() -> None:
    import ast

    tree = ast.parse(AGENT_PATH.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported - set(sys.stdlib_module_names)


def test_the_systemd_units_run_the_agent_every_minute() -> None:
    templates = AGENT_PATH.parent
    service = (templates / "labctl-idle.service").read_text()
    timer = (templates / "labctl-idle.timer").read_text()
    assert "Type=oneshot" in service
    assert "ExecStart=/usr/bin/python3 /opt/labctl/idle_agent.py /etc/labctl/idle.json" in service
    assert "OnUnitActiveSec=1min" in timer and "Unit=labctl-idle.service" in timer
    assert "WantedBy=timers.target" in timer


# ------------------------------------------------------------------------------------------------- whole ticks


# Stands in for run_state.py's interrupt: logs its arguments, and names as interrupted the runs listed in "live".
FAKE_RUN_STATE = """
import json, os, sys
base = {base!r}
with open(os.path.join(base, "interrupt.calls"), "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
live = os.path.join(base, "live")
runs = open(live).read().split() if os.path.exists(live) else []
print(json.dumps({{"interrupted": runs, "timed_out": []}}))
"""


def _config(tmp_path: Path, **changes: object) -> object:
    marker = tmp_path / "powered-off"
    (tmp_path / "run_state.py").write_text(FAKE_RUN_STATE.format(base=str(tmp_path)))
    values: dict[str, object] = {
        "mode": "shutdown",
        "window_seconds": 60,
        "jupyter_url": None,
        "runs_dir": str(tmp_path / "runs"),
        "ssh_port": 1,  # nothing listens there
        "state_file": str(tmp_path / "state.json"),
        "shutdown_command": [sys.executable, "-c", "import sys; open(sys.argv[1], 'w')", str(marker)],
        "run_state": str(tmp_path / "run_state.py"),
    }
    values.update(changes)
    return agent.Config(**values)


def test_a_tick_keeps_its_clock_in_the_state_file_and_acts_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    assert agent.tick(config, now=NOW) == 0
    assert agent.tick(config, now=NOW + 59) == 0
    assert not (tmp_path / "powered-off").exists()
    assert agent.tick(config, now=NOW + 61) == 0
    assert (tmp_path / "powered-off").exists()
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "labctl-idle: idle 0s of 60s",
        "labctl-idle: idle 59s of 60s",
        "labctl-idle: idle 61s of 60s: shutting down",
        "labctl-idle: checkpoint (idle): no run in progress",
        "labctl-idle: shutdown done",
    ]
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["idle_since"] is None and state["stop_requested_at"] == NOW + 61
    assert state["last"] == "labctl-idle: idle 61s of 60s" and state["checked_at"] == NOW + 61


def test_a_new_boot_starts_a_new_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    (tmp_path / "state.json").write_text(json.dumps({"idle_since": NOW - 5 * HOUR, "boot_id": "yesterday"}))
    assert agent.tick(config, now=NOW) == 0
    assert capsys.readouterr().out == "labctl-idle: idle 0s of 60s\n"


def test_a_failed_action_is_logged_exits_1_and_is_tried_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, shutdown_command=[sys.executable, "-c", "raise SystemExit('no permission')"])
    agent.tick(config, now=NOW)
    assert agent.tick(config, now=NOW + 61) == 1
    assert agent.tick(config, now=NOW + 121) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [
        "labctl-idle: idle 61s of 60s: shutting down",
        "labctl-idle: checkpoint (idle): no run in progress",
        "labctl-idle: shutdown failed (exit 1: no permission)",
        "labctl-idle: idle 2m of 60s: shutting down",
        "labctl-idle: checkpoint (idle): no run in progress",
        "labctl-idle: shutdown failed (exit 1: no permission)",
    ]


def test_the_budget_guard_counts_this_boots_uptime(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, uptime = agent.boot_facts()
    config = _config(tmp_path, window_seconds=0, budget_usd=1.0, usd_per_hour=3600 / max(uptime, 1.0) * 2)
    assert agent.tick(config, now=NOW) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("labctl-idle: budget passed ($") and out[0].endswith("of $1.00): shutting down"), out
    assert (tmp_path / "powered-off").exists()


# ------------------------------------------------------------------------------------------------- labctl's side


def test_the_config_labctl_writes_is_the_config_the_agent_reads(tmp_path: Path) -> None:
    from labctl import idle
    from labctl.pricing import LabPrices
    from labctl.state import LabRecord, NodeRecord

    prices = LabPrices("eastus", "Standard_NC4as_T4_v3", 0.526, 0.1578, 36.5, 0.005, "test")
    record = LabRecord(
        name="lab",
        target="azure",
        nodes=[NodeRecord(host="203.0.113.7", user="azureuser")],
        container_name="labctl-lab",
        jupyter_port=8890,
        idle={"window_minutes": 45, "budget_usd": 20},
    )
    extras = {
        "mode": "azure",
        "created_at": "2026-11-29T10:00:00+00:00",
        "usd_per_hour": prices.compute_per_hour(True),
        "fixed_usd_per_hour": prices.fixed_per_hour,
    }
    written = idle.agent_config(record, extras)
    files = idle.machine_files(written, "t" * 64)
    by_path = {path: (data, mode) for path, data, mode in files}
    assert by_path[idle.TOKEN_PATH] == (b"t" * 64, 0o600)
    assert "t" * 64 not in by_path[idle.CONFIG_PATH][0].decode(), "the token stays out of the config"
    assert by_path[idle.RUN_STATE_PATH] == ((AGENT_PATH.parent / "run_state.py").read_bytes(), 0o644)
    assert set(by_path) == {idle.AGENT_PATH, idle.RUN_STATE_PATH, idle.CONFIG_PATH, idle.TOKEN_PATH} | {
        f"/etc/systemd/system/{u}" for u in idle.UNITS
    }
    path = tmp_path / "idle.json"
    path.write_bytes(by_path[idle.CONFIG_PATH][0])
    config = agent.Config.load(str(path), {})
    assert (config.mode, config.window, config.budget_usd) == ("azure", 2700, 20)
    assert config.usd_per_hour == 0.1578 and config.fixed_usd_per_hour == pytest.approx(0.055)
    assert config.jupyter_url == "http://127.0.0.1:8890" and config.jupyter_token_file == idle.TOKEN_PATH
    assert config.ssh_marks_dir == "/home/azureuser/.cache/labctl-ssh"
    assert config.imds_url == "http://169.254.169.254" and config.arm_url == "https://management.azure.com"
    assert config.run_state == idle.RUN_STATE_PATH and not config.spot and config.shutdown_at is None
    assert exec_start_path() == idle.AGENT_PATH and idle.CONFIG_PATH in exec_start_line()


def exec_start_line() -> str:
    service = (AGENT_PATH.parent / "labctl-idle.service").read_text()
    return next(line for line in service.splitlines() if line.startswith("ExecStart="))


def exec_start_path() -> str:
    return exec_start_line().split()[1]


def test_the_role_reads_and_deallocates_one_vm_and_nothing_else() -> None:
    from labctl.targets.azure import idlerole as idle

    rg = "/subscriptions/11111111-2222-4333-8444-555555555555/resourceGroups/labctl-lab-rg"
    vm = f"{rg}/providers/Microsoft.Compute/virtualMachines/labctl-lab-vm"
    body = idle.role_definition(rg, vm, "lab")["properties"]
    assert body["permissions"] == [
        {
            "actions": [
                "Microsoft.Compute/virtualMachines/deallocate/action",
                "Microsoft.Compute/virtualMachines/read",
            ],
            "notActions": [],
            "dataActions": [],
            "notDataActions": [],
        }
    ]
    assert body["assignableScopes"] == [rg] and body["type"] == "CustomRole"
    assert idle.role_definition_name(vm) == idle.role_definition_name(vm.upper()), "stable across `up` reruns"
    assert idle.role_definition_name(vm) != idle.role_definition_name(vm + "2")
    assert idle.role_assignment_url(vm).startswith(f"{vm}/providers/Microsoft.Authorization/roleAssignments/")
    assignment = idle.role_assignment("11111111-2222-4333-8444-555555555555", vm, "p")["properties"]
    assert assignment["roleDefinitionId"].endswith(idle.role_definition_name(vm))
    assert assignment["principalType"] == "ServicePrincipal"


# ------------------------------------------------------------------------------------------------- checkpoints


def utc(*when: int) -> float:
    return datetime(*when, tzinfo=timezone.utc).timestamp()


BERLIN_1856 = utc(2026, 12, 7, 17, 56)  # 18:56 in Berlin (CET)


@pytest.mark.parametrize(
    ("now", "at", "zone", "due"),
    [
        (BERLIN_1856, "19:00", "Europe/Berlin", "2026-12-07T18:00:00+00:00"),
        (BERLIN_1856 - 120, "19:00", "Europe/Berlin", None),  # 6 minutes before: not yet
        (BERLIN_1856 + 240, "19:00", "Europe/Berlin", None),  # 19:00 itself: the next one is tomorrow's
        (BERLIN_1856, "18:00", "UTC", "2026-12-07T18:00:00+00:00"),
        (utc(2026, 7, 7, 16, 58), "19:00", "Europe/Berlin", "2026-07-07T17:00:00+00:00"),  # summer time
        (utc(2026, 12, 7, 23, 57), "00:01", "UTC", "2026-12-08T00:01:00+00:00"),  # past midnight
    ],
)
def test_the_daily_shutdown_is_due_within_its_lead_in_its_own_zone(
    now: float, at: str, zone: str, due: str | None
) -> None:
    assert agent.shutdown_due(now, at, zone, 300) == due


# As the Scheduled Events documentation shows a document (api-version 2020-07-01), with a Preempt of this VM.
EVENTS = {
    "DocumentIncarnation": 2,
    "Events": [
        {
            "EventId": "C7061BAC-AFDC-4513-B24B-AA5F13A16123",
            "EventStatus": "Scheduled",
            "EventType": "Freeze",
            "ResourceType": "VirtualMachine",
            "Resources": ["labctl-lab-vm", "other"],
            "NotBefore": "Mon, 07 Dec 2026 21:40:58 GMT",
            "Description": "Virtual machine is being paused because of a memory-preserving Live Migration operation.",
            "EventSource": "Platform",
            "DurationInSeconds": 5,
        },
        {
            "EventId": "5DD55B64-45AD-49D3-BBC9-F57D4EA97BD7",
            "EventStatus": "Scheduled",
            "EventType": "Preempt",
            "ResourceType": "VirtualMachine",
            "Resources": ["labctl-lab-vm"],
            "NotBefore": "Mon, 07 Dec 2026 21:41:28 GMT",
            "Description": "",
            "EventSource": "Platform",
            "DurationInSeconds": -1,
        },
    ],
}


def test_only_a_preempt_of_this_vm_is_its_eviction() -> None:
    preempt = EVENTS["Events"][1]
    assert agent.preempts(EVENTS, "labctl-lab-vm") == [preempt]
    assert agent.preempts(EVENTS, "LABCTL-LAB-VM") == [preempt], "VM names are not case-sensitive"
    assert agent.preempts(EVENTS, "labctl-lab-vm1") == []
    assert agent.preempts(EVENTS, None) == [preempt], "a VM whose name is unknown takes every Preempt as its own"
    assert agent.preempts({"DocumentIncarnation": 1, "Events": []}, "labctl-lab-vm") == []
    assert agent.preempts("not a document", "labctl-lab-vm") == []


def test_a_stop_says_whether_the_idle_window_or_the_budget_caused_it() -> None:
    assert decide(Facts(NOW), State(NOW - 2 * HOUR), HOUR, None).cause == "idle"
    assert decide(Facts(NOW, spent_usd=11.0), State(), HOUR, 10.0).cause == "budget"


def calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "interrupt.calls"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_runs_checkpoint_before_the_stop_and_before_the_daily_shutdown_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "live").write_text("r1")
    config = _config(tmp_path, window_seconds=3600, shutdown_at="19:00", shutdown_zone="Europe/Berlin")
    assert agent.tick(config, now=BERLIN_1856 - 120) == 0
    assert calls(tmp_path) == []
    agent.tick(config, now=BERLIN_1856)
    agent.tick(config, now=BERLIN_1856 + 60)  # the same shutdown: once is enough
    runs = str(tmp_path / "runs")
    assert calls(tmp_path) == [["interrupt", "shutdown", runs, "--wait", "120"]]
    assert agent.tick(config, now=BERLIN_1856 + 3600) == 0  # idle for the window: the stop checkpoints first
    assert calls(tmp_path)[1:] == [["interrupt", "idle", runs, "--wait", "120"]]
    out = capsys.readouterr().out.splitlines()
    assert out[1:3] == [
        "labctl-idle: daily shutdown at 2026-12-07T18:00:00+00:00",
        "labctl-idle: checkpoint (shutdown): run r1 checkpointed",
    ]
    assert out[-3:] == [
        "labctl-idle: idle 62m of 60m: shutting down",
        "labctl-idle: checkpoint (idle): run r1 checkpointed",
        "labctl-idle: shutdown done",
    ]
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["checkpoint"] == {
        "reason": "idle",
        "at": BERLIN_1856 + 3600,
        "interrupted": ["r1"],
        "timed_out": [],
        "said": "run r1 checkpointed",
    }
    assert state["shutdown_done"] == "2026-12-07T18:00:00+00:00"


def test_a_checkpoint_that_fails_is_said_and_the_stop_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, window_seconds=0, budget_usd=0.01, usd_per_hour=1e9, run_state=str(tmp_path / "none"))
    agent.tick(config, now=NOW)
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("labctl-idle: checkpoint (budget): failed ([Errno 2] No such file"), out
    assert out[2] == "labctl-idle: shutdown done"


def test_a_bad_shutdown_time_or_zone_is_a_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "idle.json"
    for bad in ({"shutdown_at": "7pm"}, {"shutdown_at": "19:00", "shutdown_zone": "Mars/Olympus"}):
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError):
            agent.Config.load(str(path), {})


class FakeImds(http.server.BaseHTTPRequestHandler):
    """The metadata service on 127.0.0.1: the instance's name, and EVENTS after one failed poll."""

    seen: ClassVar[list[tuple[str, str, str | None, bytes]]] = []

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, self.headers.get("Metadata"), b""))
        if self.path.startswith("/metadata/instance?"):
            self._answer(200, {"compute": {"name": "labctl-lab-vm"}})
        elif sum(1 for s in self.seen if s[1].startswith("/metadata/scheduledevents")) == 1:
            self._answer(500, {"error": "Internal Server Error"})
        else:
            self._answer(200, EVENTS)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append(("POST", self.path, self.headers.get("Metadata"), body))
        self._answer(200, None)

    def log_message(self, *args: object) -> None:
        pass


def test_a_spot_vm_polls_past_a_failed_poll_checkpoints_on_its_preempt_and_acknowledges_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "live").write_text("r1")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeImds)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        config = _config(tmp_path, imds_url=url, spot=True, poll_seconds=0.1, watch_seconds=5, window_seconds=3600)
        assert agent.tick(config) == 0
        assert agent.tick(config) == 0  # the next minute: the event is answered already
    finally:
        server.shutdown()
    preempt = EVENTS["Events"][1]
    assert capsys.readouterr().out.splitlines()[1:4] == [
        f"labctl-idle: Spot eviction notice {preempt['EventId']} (not before {preempt['NotBefore']})",
        "labctl-idle: checkpoint (spot): run r1 checkpointed",
        f"labctl-idle: eviction {preempt['EventId']} acknowledged",
    ]
    assert calls(tmp_path) == [["interrupt", "spot", str(tmp_path / "runs"), "--wait", "20"]]
    posts = [s for s in FakeImds.seen if s[0] == "POST"]
    assert [json.loads(body) for *_, body in posts] == [{"StartRequests": [{"EventId": preempt["EventId"]}]}]
    assert posts[0][1] == "/metadata/scheduledevents?api-version=2020-07-01"
    assert all(metadata == "true" for _, _, metadata, _ in FakeImds.seen), "IMDS refuses requests without it"
