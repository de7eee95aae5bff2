"""What each target can do is declared, and a workflow that needs more says so instead of naming the target."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from labctl.cli import app
from labctl.errors import NotFound
from labctl.state import LabRecord, NodeRecord, StateStore
from labctl.targets import get_target
from labctl.targets.base import Target

runner = CliRunner()
OPTIONAL = (
    "power_off",
    "power_on",
    "resize",
    "find_labs",
    "recover_record",
    "explain_unreachable",
    "owner_of",
    "idle_agent",
)


@pytest.mark.parametrize(
    ("kind", "overrides", "owns", "remote"),
    [
        ("azure", set(OPTIONAL), True, True),
        ("ssh", set(), False, True),
        ("local", {"idle_agent"}, False, False),
    ],
)
def test_capabilities(kind: str, overrides: set[str], owns: bool, remote: bool) -> None:
    target = get_target(kind)
    assert isinstance(target, Target)
    assert {op for op in OPTIONAL if getattr(type(target), op) is not getattr(Target, op)} == overrides
    assert (target.owns_machine, target.remote) == (owns, remote)


@pytest.mark.parametrize("kind", ["ssh", "local"])
def test_a_target_without_owners_or_discovery_answers_neutrally(kind: str) -> None:
    target, record = get_target(kind), LabRecord(name="lab", target=kind)
    assert target.find_labs(None) is None  # not searched, so `list` marks none of its labs as gone
    assert target.owner_of(record) is None and target.explain_unreachable(record) is None
    with pytest.raises(NotFound):
        target.recover_record("lab")


@pytest.mark.parametrize("verb", ["stop", "start"])
@pytest.mark.parametrize("kind", ["ssh", "local"])
def test_power_commands_explain_a_target_that_cannot(kind: str, verb: str) -> None:
    StateStore().save(LabRecord(name="lab", target=kind, status="ready", nodes=[NodeRecord(host="203.0.113.7")]))
    result = runner.invoke(app, [verb])
    assert result.exit_code == 2
    assert "needs a target that can switch machines off and on" in result.output
    assert f"target '{kind}'" in result.output and "yourself" in result.output
    assert StateStore().load("lab").status == "ready"  # nothing was changed


@pytest.mark.parametrize("status", ["ready", "stopped"])
def test_ssh_to_a_lab_on_this_computer_points_at_docker_exec(status: str) -> None:
    StateStore().save(LabRecord(name="lab", target="local", status=status))
    result = runner.invoke(app, ["ssh"])
    assert result.exit_code == 2 and "no machine to reach over SSH" in result.output and "docker exec" in result.output


def test_list_names_where_each_recorded_lab_lives() -> None:
    store = StateStore()
    store.save(LabRecord(name="here", target="local"))
    store.save(LabRecord(name="there", target="ssh", nodes=[NodeRecord(host="203.0.113.7")]))
    azure = LabRecord(name="cloud", target="azure", target_data={"region": "westus2", "size": "Standard_D4s_v5"})
    store.save(azure)
    result = runner.invoke(app, ["list", "--local", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: (row["where"], row["size"]) for row in json.loads(result.stdout)["labs"]}
    assert rows == {
        "here": ("this computer", None),
        "there": ("203.0.113.7", None),
        "cloud": ("westus2", "Standard_D4s_v5"),
    }


def test_idle_stop_of_a_stopped_lab_says_how_to_start_it() -> None:
    StateStore().save(LabRecord(name="lab", target="azure", status="stopped", nodes=[NodeRecord(host="203.0.113.7")]))
    result = runner.invoke(app, ["idle-stop", "30"])
    assert result.exit_code == 3 and "is stopped" in result.output and "labctl start --name lab" in result.output
    assert StateStore().load("lab").idle == {}  # nothing was changed
