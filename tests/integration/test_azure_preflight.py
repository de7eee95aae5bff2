"""Every check `up` makes before creating anything, each failing with one clear message and nothing created."""

from __future__ import annotations

import pytest

from labctl.errors import LabctlError, UsageError
from tests.fakearm import FakeArm, RegionConfig
from tests.fakearm.fixtures import arm_env, fake_arm, provision  # noqa: F401

pytestmark = pytest.mark.usefixtures("arm_env")


def _nothing_created(fake: FakeArm) -> None:
    assert fake.group_names() == [] and fake.resource_ids() == []
    assert fake.count("PUT", "") == 0


def test_no_quota_names_the_numbers_another_region_and_the_request_page(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.regions["eastus"].limits["standardncasv3_t4family"] = 0
    arm_env.regions["westus2"].limits["standardncasv3_t4family"] = 0
    arm_env.regions["eastus2"].limits["standardncasv3_t4family"] = 8
    with pytest.raises(LabctlError) as info:
        provision("lab", gpu=True)
    text = info.value.render()
    assert "no standardNCASv3_T4Family vCPU quota for Standard_NC4as_T4_v3 in eastus" in text
    assert "(0 of 0 vCPUs in use, 4 needed)" in text
    assert "eastus2 (8 vCPUs free" in text and "westus2" not in text
    assert "https://portal.azure.com/#view/Microsoft_Azure_Capacity/QuotaMenuBlade" in text
    _nothing_created(arm_env)


def test_regional_quota_counts_too(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.regions["eastus"].limits["cores"] = 10
    arm_env.regions["eastus"].used["cores"] = 8
    with pytest.raises(LabctlError, match=r"no regional vCPU quota .* \(8 of 10 vCPUs in use, 4 needed\)"):
        provision("lab")
    _nothing_created(arm_env)


def test_size_restricted_for_the_subscription(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.regions["eastus"].restricted["Standard_D4s_v5"] = "NotAvailableForSubscription"
    with pytest.raises(LabctlError) as info:
        provision("lab")
    text = info.value.render()
    assert "Standard_D4s_v5 is not available in eastus (NotAvailableForSubscription)" in text
    assert "eastus2 (" in text
    _nothing_created(arm_env)


def test_size_not_offered_in_the_region(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.regions["westus3"].offered.discard("Standard_NC4as_T4_v3")
    with pytest.raises(LabctlError, match="Standard_NC4as_T4_v3 is not offered in westus3"):
        provision("lab", gpu=True, region="westus3")
    _nothing_created(arm_env)


def test_a_size_that_cannot_boot_the_lab_is_refused_with_sizes_that_can(arm_env: FakeArm) -> None:  # noqa: F811
    for size, why in (
        ("Standard_D4s_v6", "Standard_D4s_v6 takes its disks over NVMe only"),
        ("Standard_A4_v2", "Standard_A4_v2 boots no generation 2 image"),
    ):
        with pytest.raises(LabctlError) as info:
            provision("lab", sizes=[size])
        text = info.value.render()
        assert why in text and "such as Standard_D4s_v5" in text and "--size" in text
        _nothing_created(arm_env)


def test_unknown_region(arm_env: FakeArm) -> None:  # noqa: F811
    with pytest.raises(LabctlError, match="the region 'marsnorth' offers no VM sizes"):
        provision("lab", region="marsnorth")
    _nothing_created(arm_env)


def test_missing_image(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.images.clear()
    with pytest.raises(LabctlError, match="microsoft-dsvm:ubuntu-2204:2204-gen2"):
        provision("lab")
    _nothing_created(arm_env)


def test_fallback_size_is_used_when_the_first_has_no_quota(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.regions["eastus"].limits["standardncasv3_t4family"] = 6
    record = provision("lab", gpu=True, sizes=["Standard_NC8as_T4_v3", "Standard_NC4as_T4_v3"])
    assert record.target_data["size"] == "Standard_NC4as_T4_v3"


def test_region_auto_picks_the_first_region_with_room(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.regions["eastus"].limits["standardncasv3_t4family"] = 0
    arm_env.regions["eastus2"].restricted["Standard_NC4as_T4_v3"] = "NotAvailableForSubscription"
    record = provision("lab", gpu=True, region="auto")
    assert record.target_data["region"] == "westus2"
    assert {g["location"] for g in arm_env.groups.values()} == {"westus2"}


def test_region_auto_goes_on_past_a_region_it_cannot_read(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.inject(method="GET", path="locations/eastus/usages", status=403, code="AuthorizationFailed", times=-1)
    record = provision("lab", gpu=True, region="auto")
    assert record.target_data["region"] == "eastus2"
    with pytest.raises(LabctlError) as info:  # a region named on its own is told as it is
        provision("other", gpu=True, region="eastus")
    assert "reading the vCPU quota in eastus" in info.value.render()


def test_no_credentials_says_how_to_log_in_and_creates_nothing(
    arm_env: FakeArm,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("PATH", "/nonexistent")  # no az, azd or pwsh to fall back on
    with pytest.raises(LabctlError) as info:
        provision("lab")
    text = info.value.render()
    assert "No usable Azure login" in text and "az login" in text and "AZURE_CLIENT_SECRET" in text
    _nothing_created(arm_env)


def test_wrong_secret_is_a_login_error(arm_env: FakeArm, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "wrong")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LabctlError) as info:
        provision("lab")
    assert "Invalid client secret provided" in info.value.render() and "az login" in info.value.render()
    _nothing_created(arm_env)


def test_several_subscriptions_are_listed_and_nothing_is_chosen(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.subscriptions["99999999-2222-4333-8444-555555555555"] = "Other"
    with pytest.raises(UsageError) as info:
        provision("lab")
    text = info.value.render()
    assert "several subscriptions" in text and "99999999-2222-4333-8444-555555555555 (Other)" in text
    assert "--subscription" in text
    _nothing_created(arm_env)
    record = provision("lab", subscription="99999999-2222-4333-8444-555555555555")
    assert record.target_data["subscription"] == "99999999-2222-4333-8444-555555555555"


def test_unknown_subscription(arm_env: FakeArm) -> None:  # noqa: F811
    with pytest.raises(LabctlError, match="subscription was not found"):
        provision("lab", subscription="00000000-2222-4333-8444-555555555555")
    _nothing_created(arm_env)


def test_unreachable_ip_echo_asks_for_allow_ip(arm_env: FakeArm, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("LABCTL_IP_ECHO_URL", "https://127.0.0.1:9/ip")
    with pytest.raises(LabctlError) as info:
        provision("lab")
    assert "public IP address" in info.value.render() and "--allow-ip" in info.value.render()
    _nothing_created(arm_env)
    assert provision("lab", allow_ip="203.0.113.77").target_data["allow_ip"] == "203.0.113.77/32"


def test_region_config_defaults_are_generous() -> None:
    cfg = RegionConfig()
    assert cfg.limit("cores") == 100 and "Standard_D4s_v5" in cfg.offered


def test_a_managed_identity_is_used_where_one_exists(arm_env: FakeArm, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    for name in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", arm_env.url)  # the metadata endpoint, served by the fake
    arm_env.managed_identity = True
    record = provision("lab")
    assert record.nodes[0].host
    assert arm_env.count("GET", "^/metadata/identity/oauth2/token$") >= 1


def test_spot_uses_the_low_priority_quota(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.regions["eastus"].limits["lowprioritycores"] = 2
    with pytest.raises(LabctlError, match=r"no Spot \(low-priority\) vCPU quota .* \(0 of 2 vCPUs in use, 4 needed\)"):
        provision("lab", spot=True)
    _nothing_created(arm_env)
    arm_env.regions["eastus"].limits["standarddsv5family"] = 0  # the on-demand family quota does not bind Spot
    arm_env.regions["eastus"].limits["lowprioritycores"] = 4
    assert provision("lab", spot=True).target_data["spot"] is True


@pytest.mark.parametrize("body", [b'{"value": [{"name": ', b"<html>Sign in to the proxy</html>", b"null", b""])
def test_an_answer_that_cannot_be_read_is_said_so(arm_env: FakeArm, body: bytes) -> None:  # noqa: F811
    arm_env.inject(method="GET", path="/skus", status=200, body=body, times=-1)
    with pytest.raises(LabctlError) as info:
        provision("lab")
    text = info.value.render()
    assert "Azure's answer could not be read while listing the VM sizes offered in eastus" in text
    assert "run the command again" in text and "proxy" in text
    assert "answered 200" not in text and "offers no VM sizes" not in text
    _nothing_created(arm_env)
