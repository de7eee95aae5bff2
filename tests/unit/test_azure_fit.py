"""Size fitness read from resource SKU capabilities, in the shapes the fake ARM serves them."""

from __future__ import annotations

import pytest

from labctl.errors import LabctlError, UsageError
from labctl.pricing import lookup
from labctl.targets.azure.plan import refuse_grid_only
from labctl.targets.azure.preflight import alternatives, misfit, spot_capable
from tests.fakearm.shapes import sku_json


def test_nvads_a10_sizes_are_refused_with_cuda_alternatives() -> None:
    refuse_grid_only([lookup("Standard_NC4as_T4_v3"), lookup("Standard_D4s_v5")])
    with pytest.raises(UsageError) as info:
        refuse_grid_only([lookup("Standard_NC4as_T4_v3"), lookup("nv36ads_a10_v5")])
    text = info.value.render()
    assert "Standard_NV36ads_A10_v5" in text and "GRID" in text
    for alternative in ("Standard_NC4as_T4_v3", "Standard_NC24ads_A100_v4", "Standard_NC40ads_H100_v5"):
        assert alternative in text


def test_spot_capability_and_alternatives_come_from_the_skus() -> None:
    skus = {name.lower(): sku_json(name, "eastus", None, []) for name in ("Standard_B2s", "Standard_D2s_v5")}
    skus["standard_d4s_v5"] = sku_json("Standard_D4s_v5", "eastus", "NotAvailableForSubscription", [])
    assert not spot_capable(skus["standard_b2s"]) and spot_capable(skus["standard_d2s_v5"])
    assert not spot_capable({"capabilities": []})  # no capability: no Spot
    assert alternatives(skus, lookup("Standard_B2s"), lambda size, sku: spot_capable(sku)) == ["Standard_D2s_v5"]


def test_a_size_that_cannot_boot_the_lab_is_told_from_its_generations_and_disk_controllers() -> None:
    def why(size: str, generation: str = "V2") -> str:
        return misfit(sku_json(size, "eastus", None, []), generation)

    assert why("Standard_D4s_v5") == "" and why("Standard_A4_v2", "V1") == ""
    assert "boots no generation 2 image" in why("Standard_A4_v2") and "(HyperVGenerations V1)" in why("Standard_A4_v2")
    assert "NVMe only" in why("Standard_D4s_v6")
    assert misfit({"capabilities": []}, "V1") == ""  # nothing listed: generation 1 and SCSI, as older sizes are


@pytest.mark.parametrize(
    ("value", "accepted"), [("on", True), ("YES", True), ("1", True), ("off", False), ("0", False)]
)
def test_the_image_terms_knob_is_read_as_yes_or_no(monkeypatch: pytest.MonkeyPatch, value: str, accepted: bool) -> None:
    from unittest import mock

    from labctl.targets.azure import preflight

    azure = mock.MagicMock(subscription_id="sub")
    azure.resources.resources.get_by_id.return_value.as_dict.return_value = {"properties": {"accepted": False}}
    monkeypatch.setattr(preflight, "ensure_providers", lambda *_: None)
    monkeypatch.setattr(preflight, "finish", lambda *_: None)
    monkeypatch.setenv("LABCTL_ACCEPT_IMAGE_TERMS", value)
    plan = {"publisher": "p", "product": "o", "name": "n"}
    if accepted:
        preflight.ensure_terms(azure, plan, "p:o:n:latest")
        assert azure.resources.resources.begin_create_or_update_by_id.called
    else:
        with pytest.raises(LabctlError, match="has not accepted"):
            preflight.ensure_terms(azure, plan, "p:o:n:latest")
