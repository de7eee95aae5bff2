"""`up` shows no plan, so every warning the plan carries is said in the terminal while it runs."""

from __future__ import annotations

import io

import pytest

from labctl.spec import LabSpec
from labctl.state import LabRecord, StateStore
from labctl.targets.azure import AzureTarget
from labctl.ui import PlainReporter
from tests.fakearm import FakeArm
from tests.fakearm.fixtures import arm_env, fake_arm  # noqa: F401


def _up(**fields: object) -> str:
    out = io.StringIO()
    store = StateStore()
    record = LabRecord(name="lab", target="azure")
    store.save(record)
    spec = LabSpec(name="lab", **fields).validate()  # type: ignore[arg-type]
    AzureTarget().provision(spec, record, PlainReporter(out), store.save)
    return out.getvalue()


@pytest.mark.usefixtures("arm_env")
def test_no_shutdown_and_a_range_wider_than_one_address_are_warned_about() -> None:
    out = _up(allow_ip="203.0.113.0/28", no_shutdown=True)
    assert "warning: SSH is open to 203.0.113.0/28, 16 addresses" in out
    assert "warning: No auto-shutdown" in out


def test_a_discovered_address_with_a_schedule_warns_of_nothing(arm_env: FakeArm) -> None:  # noqa: F811
    out = _up()
    assert "warning:" not in out, out
    assert f"SSH from {arm_env.public_ip}/32 only" in out
