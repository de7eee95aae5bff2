"""Faults ARM really produces: throttling, server errors, capacity, races, and interruptions mid-way."""

from __future__ import annotations

from typing import Any

import pytest

from labctl.errors import LabctlError
from labctl.state import LabRecord, StateStore
from tests.fakearm import FakeArm
from tests.fakearm.fixtures import arm_env, destroy, fake_arm, lab_group, provision  # noqa: F401

pytestmark = pytest.mark.usefixtures("arm_env")


def _vms(fake: FakeArm) -> list[dict[str, Any]]:
    return [v for v in (fake.get(i) for i in fake.resource_ids("virtualMachines")) if v is not None]


def test_throttling_with_retry_after_is_waited_out(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.inject(
        method="PUT",
        path="virtualnetworks",
        status=429,
        code="OperationNotAllowed",
        message="The server rejected the request because too many requests have been received for this subscription.",
        headers={"Retry-After": "0.5"},
        times=2,
    )
    record = provision("lab")
    assert record.nodes[0].host
    assert arm_env.count("PUT", "virtualnetworks/lab-vnet$") == 3


def test_server_errors_are_retried_with_backoff(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.inject(method="GET", path="microsoft.compute/skus", status=500, times=2)
    arm_env.inject(method="PUT", path="networkinterfaces", status=503, code="ServiceUnavailable", times=1)
    provision("lab")
    assert arm_env.count("GET", "microsoft.compute/skus") == 3
    assert arm_env.count("PUT", "networkinterfaces") == 2


def test_a_long_throttle_is_explained_not_waited(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.inject(method="GET", path="usages", status=429, code="TooManyRequests", headers={"Retry-After": "1200"})
    with pytest.raises(LabctlError) as info:
        provision("lab")
    assert "throttling" in info.value.render() and "wait 20 min 0 s" in info.value.render()
    assert arm_env.group_names() == []


def test_persistent_server_errors_end_in_a_plain_message(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.inject(method="PUT", path="publicipaddresses", status=500, times=-1)
    with pytest.raises(LabctlError) as info:
        provision("lab")
    text = info.value.render()
    assert "creating the public IP address" in text and "InternalServerError" in text
    assert "Traceback" not in text


def test_allocation_failure_falls_back_to_the_next_size(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.fail_allocation(size="Standard_NC8as_T4_v3")
    record = provision("lab", gpu=True, sizes=["Standard_NC8as_T4_v3", "Standard_NC4as_T4_v3"])
    assert record.target_data["size"] == "Standard_NC4as_T4_v3"
    (vm,) = _vms(arm_env)
    assert vm["properties"]["hardwareProfile"]["vmSize"] == "Standard_NC4as_T4_v3"
    assert vm["properties"]["provisioningState"] == "Succeeded"
    assert arm_env.count("DELETE", "virtualmachines/lab-vm$") == 1  # the failed one was removed first
    assert len(arm_env.resource_ids("disks")) == 2  # the OS disk and the workspace disk, attached again


def test_zonal_allocation_failure_with_region_auto_moves_region(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.fail_allocation(region="eastus", code="ZonalAllocationFailed")
    record = provision("lab", region="auto")
    assert record.target_data["region"] == "eastus2"
    assert {r["location"] for r in (arm_env.get(i) for i in arm_env.resource_ids()) if r} == {"eastus2"}
    assert [arm_env.groups[g.lower()]["location"] for g in arm_env.lab_group_names()] == ["eastus2"]


def test_allocation_failure_without_fallback_leaves_a_lab_up_or_down_can_finish(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.fail_allocation()
    with pytest.raises(LabctlError) as info:
        provision("lab")
    text = info.value.render()
    assert "no capacity" in text and "AllocationFailed" in text and "--size" in text
    assert _vms(arm_env) == []  # the failed VM is not left behind
    assert StateStore().load("lab").target_data["resource_group"] == lab_group(arm_env)
    record = provision("lab")  # capacity is back: the same command converges
    assert record.nodes[0].host and len(_vms(arm_env)) == 1


def test_quota_race_at_create_time_is_explained(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.inject(
        method="PUT",
        path="virtualmachines",
        status=409,
        code="OperationNotAllowed",
        message="Operation results in exceeding quota limits of Core. Maximum allowed: 4, Current in use: 4, "
        "Additional requested: 4.",
    )
    with pytest.raises(LabctlError) as info:
        provision("lab")
    text = info.value.render()
    assert "Maximum allowed: 4, Current in use: 4" in text and "request more" in text


def test_sku_race_at_create_time_falls_back(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.inject(method="PUT", path="virtualmachines", status=409, code="SkuNotAvailable", message="gone")
    record = provision("lab", sizes=["Standard_D4s_v5", "Standard_D2s_v5"])
    assert record.target_data["size"] == "Standard_D2s_v5"


def test_second_up_converges_without_recreating_anything(arm_env: FakeArm) -> None:  # noqa: F811
    first = provision("lab")
    ids = sorted(arm_env.resource_ids())
    second = provision("lab")
    assert sorted(arm_env.resource_ids()) == ids
    assert arm_env.count("PUT", "virtualmachines/lab-vm$") == 1
    assert (second.nodes[0].host, second.nodes[0].host_key, second.ssh_key_path) == (
        first.nodes[0].host,
        first.nodes[0].host_key,
        first.ssh_key_path,
    )


def test_second_up_follows_a_new_caller_address(arm_env: FakeArm) -> None:  # noqa: F811
    provision("lab")
    arm_env.public_ip = "198.51.100.99"
    provision("lab")
    (nsg,) = [arm_env.get(i) for i in arm_env.resource_ids("networkSecurityGroups")]
    assert nsg is not None
    assert [r["properties"]["sourceAddressPrefix"] for r in nsg["properties"]["securityRules"]] == ["198.51.100.99/32"]


class _Crash(KeyboardInterrupt):
    pass


def _crashing_save(after: int) -> Any:
    store = StateStore()
    calls = {"n": 0}

    def save(record: LabRecord) -> None:
        store.save(record)
        calls["n"] += 1
        if calls["n"] == after:
            raise _Crash

    return save


@pytest.mark.parametrize("crash_at", [2, 3, 4, 5])
def test_up_resumes_after_an_interruption_between_steps(arm_env: FakeArm, crash_at: int) -> None:  # noqa: F811
    with pytest.raises(_Crash):
        provision("lab", save=_crashing_save(crash_at))
    assert StateStore().exists("lab")
    record = provision("lab")
    assert record.nodes[0].host and record.nodes[0].host_key
    assert len(_vms(arm_env)) == 1 and arm_env.count("PUT", "virtualmachines/lab-vm$") == 1
    assert arm_env.vm_boots[0].host_public_key == record.nodes[0].host_key


def test_up_resumes_when_the_connection_died_during_the_vm_create(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.latency["virtualmachines"] = 0.3
    arm_env.inject(method="GET", path="^/fakearm/operations/", drop=True, times=-1, skip=4)
    with pytest.raises(LabctlError, match="connection to Azure Resource Manager broke"):
        provision("lab")
    arm_env.faults.clear()
    record = provision("lab")
    assert arm_env.count("PUT", "virtualmachines/lab-vm$") == 1  # the VM being made was kept, not made twice
    assert record.nodes[0].host_key == arm_env.vm_boots[0].host_public_key


@pytest.mark.parametrize("crash_at", [2, 4])
def test_down_removes_a_half_made_lab(arm_env: FakeArm, crash_at: int) -> None:  # noqa: F811
    with pytest.raises(_Crash):
        provision("lab", save=_crashing_save(crash_at))
    assert arm_env.lab_group_names() == [lab_group(arm_env)]
    destroy("lab")
    assert arm_env.group_names() == [] and arm_env.resource_ids() == []


def test_down_waits_out_a_deletion_already_under_way(arm_env: FakeArm) -> None:  # noqa: F811
    provision("lab")
    arm_env.latency["resourcegroups-delete"] = 0.5
    arm_env.inject(method="GET", path="^/fakearm/operationresults/", drop=True, times=-1)
    with pytest.raises(LabctlError):
        destroy("lab")
    assert arm_env.groups[lab_group(arm_env)]["properties"]["provisioningState"] == "Deleting"
    arm_env.faults.clear()
    destroy("lab")
    assert arm_env.group_names() == [] and arm_env.resource_ids() == []
    assert arm_env.count("DELETE", f"resourcegroups/{lab_group(arm_env)}$") == 1


def test_up_waits_for_an_earlier_deletion_then_builds_again(arm_env: FakeArm) -> None:  # noqa: F811
    provision("lab")
    arm_env.latency["resourcegroups-delete"] = 0.3
    arm_env.inject(method="GET", path="^/fakearm/operationresults/", drop=True, times=-1)
    with pytest.raises(LabctlError):
        destroy("lab")
    arm_env.faults.clear()
    record = provision("lab")
    assert record.nodes[0].host and len(_vms(arm_env)) == 1


def test_a_vm_left_failed_by_an_earlier_run_is_replaced(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.fail_allocation()
    arm_env.inject(method="DELETE", path="virtualmachines/lab-vm$", drop=True, times=-1)
    with pytest.raises(LabctlError):
        provision("lab")
    (failed,) = _vms(arm_env)
    assert failed["properties"]["provisioningState"] == "Failed"
    arm_env.faults.clear()
    record = provision("lab")
    (vm,) = _vms(arm_env)
    assert vm["properties"]["provisioningState"] == "Succeeded" and record.nodes[0].host
    assert arm_env.count("PUT", "virtualmachines/lab-vm$") == 2
    assert arm_env.vm_boots[-1].host_public_key == record.nodes[0].host_key
