"""Re-running `up` with no region converges on the region the lab was made in, whatever the default is."""

from __future__ import annotations

from tests.fakearm import FakeArm
from tests.fakearm.fixtures import arm_env, fake_arm, lab_group, provision  # noqa: F401


def test_rerun_without_region_keeps_the_labs_region(arm_env: FakeArm) -> None:  # noqa: F811
    from labctl.spec import LabSpec, Settings
    from labctl.workflows.lifecycle import build_spec

    first = provision("lab", region="westus2", allow_ip="203.0.113.7/32")
    assert first.target_data["region"] == "westus2"
    spec = build_spec(LabSpec(allow_ip="203.0.113.7/32"), Settings())
    assert spec.region is None
    again = provision("lab", allow_ip="203.0.113.7/32", region=spec.region)
    assert again.target_data["region"] == "westus2"
    assert arm_env.lab_group_names() == [lab_group(arm_env)]
