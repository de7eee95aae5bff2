"""ARM's answers that labctl's first design did not expect (issue 20), modelled in the fake.

Each finding has two tests: the fake answers as ARM does (through the real azure-mgmt clients), and labctl copes.
Where labctl does not cope yet, the fake's behaviour is behind a switch that is off by default (see
tests/fakearm/README.md) and the labctl test is an expected failure naming the fix it waits for: it turns into an
unexpected pass, which fails the suite, the day the fix lands, so the switch can then be turned on by default.
"""

from __future__ import annotations

import io
import time
import uuid
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from labctl.errors import LabctlError
from labctl.targets.azure.clients import Azure, connect
from labctl.ui import PlainReporter
from tests.fakearm import FakeArm
from tests.fakearm.fixtures import arm_env, destroy, fake_arm, provision  # noqa: F401
from tests.fakearm.server import DSVM

pytestmark = pytest.mark.usefixtures("arm_env")
RG = "findings-rg"
SUBNET_PREFIX = "10.9.0.0/24"


@pytest.fixture
def azure(arm_env: FakeArm) -> Azure:  # noqa: F811
    azure = connect()
    azure.resources.resource_groups.create_or_update(RG, {"location": "eastus"})
    return azure


def _code(exc: BaseException) -> str:
    return str(getattr(getattr(exc, "error", None), "code", ""))


def _subnet(azure: Azure, **subnet_props: Any) -> dict[str, Any]:
    props = {"addressPrefix": SUBNET_PREFIX, **subnet_props}
    vnet = {
        "location": "eastus",
        "properties": {
            "addressSpace": {"addressPrefixes": ["10.9.0.0/16"]},
            "subnets": [{"name": "default", "properties": props}],
        },
    }
    made = azure.network.virtual_networks.begin_create_or_update(RG, "vnet", vnet).result().as_dict()
    return dict(made["properties"]["subnets"][0])


# ------------------------------------------------------------------ 1. private subnets (network 2025-07-01 and on)


def test_a_subnet_is_private_unless_it_says_otherwise(azure: Azure) -> None:
    subnet = _subnet(azure)
    assert subnet["properties"]["defaultOutboundAccess"] is False
    ip = {"location": "eastus", "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Static"}}
    ip_id = azure.network.public_ip_addresses.begin_create_or_update(RG, "nat-ip", ip).result().id
    nat = {"location": "eastus", "sku": {"name": "Standard"}, "properties": {"publicIpAddresses": [{"id": ip_id}]}}
    nat_id = azure.network.nat_gateways.begin_create_or_update(RG, "nat", nat).result().id
    with_nat = _subnet(azure, natGateway={"id": nat_id})
    assert with_nat["properties"]["natGateway"]["id"] == nat_id


def test_a_vm_without_public_ip_on_a_private_subnet_has_no_way_out(arm_env: FakeArm) -> None:  # noqa: F811
    provision("lab", nodes=2)
    ways_out = {boot.name: boot.outbound for boot in arm_env.vm_boots}
    assert ways_out["lab-vm"] is True  # node 0 goes out through its public IP
    assert ways_out["lab-vm1"] is bool(arm_env.resource_ids("natGateways"))  # a worker only through a NAT gateway


def test_every_node_of_a_lab_can_reach_the_internet(arm_env: FakeArm) -> None:  # noqa: F811
    provision("lab", nodes=2)
    assert [boot.outbound for boot in arm_env.vm_boots] == [True, True]
    destroy("lab")  # the NAT gateway and its address go with the group
    assert arm_env.resource_ids() == []


def test_a_lab_of_one_node_has_no_nat_gateway(arm_env: FakeArm) -> None:  # noqa: F811
    provision("lab")
    assert not arm_env.resource_ids("natGateways") and len(arm_env.resource_ids("publicIPAddresses")) == 1


@pytest.mark.parametrize(
    ("kind", "body", "refused"),
    [
        ("public_ip_addresses", {"sku": {"name": "Premium"}}, "'sku.name' has the value 'Premium'"),
        ("nat_gateways", {"properties": {"subnets": [{"id": "x"}]}}, "'properties.subnets' is read-only"),
    ],
)
def test_nat_gateway_and_public_ip_bodies_follow_the_spec(azure: Azure, kind: str, body: Any, refused: str) -> None:
    with pytest.raises(HttpResponseError) as info:
        getattr(azure.network, kind).begin_create_or_update(RG, "x", {"location": "eastus", **body}).result()
    assert _code(info.value) == "InvalidRequestContent" and refused in str(info.value)


# ------------------------------------------------------------------ 2. Trusted Launch only where the image says so


def test_the_image_serves_its_features(azure: Azure) -> None:
    image = azure.compute.virtual_machine_images.get("eastus", *DSVM, "25.03.10").as_dict()
    assert {"name": "SecurityType", "value": "TrustedLaunchSupported"} in image["properties"]["features"]


@pytest.mark.parametrize("features", [[], [{"name": "SecurityType", "value": "Standard"}]])
def test_an_image_without_trusted_launch_gets_a_standard_vm(arm_env: FakeArm, features: list[Any]) -> None:  # noqa: F811
    arm_env.image_features[DSVM] = features
    provision("lab")
    (vm_id,) = arm_env.resource_ids("virtualMachines")
    assert (arm_env.get(vm_id) or {})["properties"]["securityProfile"] == {"securityType": "Standard"}


# ------------------------------------------------------------------ 3. a new role replicates for a while


def _role(azure: Azure, fake: FakeArm) -> str:
    from labctl.targets.azure.idlerole import call

    scope = f"/subscriptions/{fake.subscription}/resourceGroups/{RG}"
    role_id = f"/subscriptions/{fake.subscription}/providers/Microsoft.Authorization/roleDefinitions/{uuid.uuid4()}"
    body = {"properties": {"roleName": "r", "permissions": [{"actions": ["*/read"]}], "assignableScopes": [scope]}}
    call(azure, "PUT", role_id, body)
    return role_id


def _assign(azure: Azure, fake: FakeArm, role_id: str, retry: bool = True) -> None:
    """``retry``: while the new role replicates, as labctl's ``idlerole._assign`` does."""
    from labctl.targets.azure import idlerole

    scope = f"/subscriptions/{fake.subscription}/resourceGroups/{RG}"
    url = f"{scope}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}"
    body = {"properties": {"roleDefinitionId": role_id, "principalId": fake.client_id}}
    if retry:
        idlerole._assign(azure, url, body, PlainReporter(io.StringIO()))
    else:
        idlerole.call(azure, "PUT", url, body)


def test_a_new_role_is_unknown_to_assignments_for_a_while(arm_env: FakeArm, azure: Azure) -> None:  # noqa: F811
    arm_env.role_replication_s = 0.5
    role_id = _role(azure, arm_env)
    with pytest.raises(HttpResponseError) as refused:
        _assign(azure, arm_env, role_id, retry=False)
    assert _code(refused.value) == "RoleDefinitionDoesNotExist"
    time.sleep(0.6)
    _assign(azure, arm_env, role_id, retry=False)


def test_the_assignment_waits_for_a_new_role_to_replicate(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.role_replication_s = 0.3
    record = provision("lab", idle_stop=60.0, allow_ip="203.0.113.7/32")
    assert record.idle.get("granted") is True


# ------------------------------------------------------------------ 5. accelerated networking where the size has it


def test_a_size_says_whether_it_has_accelerated_networking(arm_env: FakeArm, azure: Azure) -> None:  # noqa: F811
    skus = {s.name: s.as_dict() for s in azure.compute.resource_skus.list(filter="location eq 'eastus'")}
    has = {
        n: {c["name"]: c["value"] for c in s["capabilities"]}["AcceleratedNetworkingEnabled"] for n, s in skus.items()
    }
    assert has["Standard_D4s_v5"] == "True" and has["Standard_B2s"] == "False"


@pytest.mark.parametrize(("size", "accelerated"), [("Standard_D4s_v5", True), ("Standard_B2s", False)])
def test_every_nic_has_accelerated_networking_where_the_size_does(
    arm_env: FakeArm,  # noqa: F811
    size: str,
    accelerated: bool,
) -> None:
    provision("lab", nodes=2, sizes=[size])
    nics = [arm_env.get(nic) or {} for nic in arm_env.resource_ids("networkInterfaces")]
    assert [nic["properties"].get("enableAcceleratedNetworking") for nic in nics] == [accelerated, accelerated]


def test_new_workers_get_nics_as_node_0_has_them(arm_env: FakeArm) -> None:  # noqa: F811
    provision("lab")
    (nic,) = arm_env.resource_ids("networkInterfaces")
    (arm_env.get(nic) or {})["properties"]["enableAcceleratedNetworking"] = False  # a lab made before it was set
    provision("lab", nodes=2)  # changing it on node 0's NIC would need the VM deallocated
    nics = [arm_env.get(nic) or {} for nic in arm_env.resource_ids("networkInterfaces")]
    assert [nic["properties"].get("enableAcceleratedNetworking") for nic in nics] == [False, False]


def test_accelerated_networking_on_a_size_without_it_is_refused(arm_env: FakeArm) -> None:  # noqa: F811
    provision("lab", sizes=["Standard_D4s_v5"])
    (nic,) = arm_env.resource_ids("networkInterfaces")  # accelerated, as a D4s_v5 may be
    group, image = nic.split("/")[4], dict(zip(("publisher", "offer", "sku"), DSVM, strict=True), version="latest")
    body = {
        "location": "eastus",
        "properties": {
            "hardwareProfile": {"vmSize": "Standard_B2s"},
            "storageProfile": {"imageReference": image},
            "osProfile": {"computerName": "other", "adminUsername": "azureuser"},
            "networkProfile": {"networkInterfaces": [{"id": nic}]},
        },
    }
    with pytest.raises(HttpResponseError) as refused:
        connect().compute.virtual_machines.begin_create_or_update(group, "other", body).result()
    assert _code(refused.value) == "VMSizeIsNotPermittedToEnableAcceleratedNetworking"


def test_the_plan_says_nccl_goes_over_tcp_on_infiniband_sizes() -> None:
    from labctl.spec import LabSpec
    from labctl.targets.azure.plan import make_plan

    plan = make_plan(LabSpec(name="lab", nodes=2, gpu=True, sizes=["Standard_ND96asr_v4"]).validate(), False)
    assert any("NCCL goes between them over TCP" in w for w in plan.warnings)
    one = make_plan(LabSpec(name="lab", gpu=True, sizes=["Standard_ND96asr_v4"]).validate(), False)
    assert not any("InfiniBand" in w for w in one.warnings)


# ------------------------------------------------------------------ 6. every node stops, even without node 0


def test_every_worker_may_deallocate_itself_alone(arm_env: FakeArm) -> None:  # noqa: F811
    from tests.fakearm.rbac import permitted

    provision("lab", nodes=3, idle_stop=60.0, allow_ip="203.0.113.7/32")
    vms = {rid.rsplit("/", 1)[1]: rid for rid in arm_env.resource_ids("virtualMachines")}
    deallocate = "Microsoft.Compute/virtualMachines/deallocate/action"
    for worker in ("lab-vm1", "lab-vm2"):
        principal = (arm_env.get(vms[worker]) or {})["identity"]["principalId"]
        assert permitted(arm_env, principal, deallocate, vms[worker])  # once node 0 is gone, it stops itself
        assert not [vm for vm in vms.values() if vm != vms[worker] and permitted(arm_env, principal, deallocate, vm)]
    head = (arm_env.get(vms["lab-vm"]) or {})["identity"]["principalId"]
    assert all(permitted(arm_env, head, deallocate, vm) for vm in vms.values())  # node 0 stops them all


# ------------------------------------------------------------------ 7. tag-filtered lists carry no tags


def _stray_ip(azure: Azure, owner: str) -> None:
    azure.resources.resource_groups.create_or_update("elsewhere", {"location": "eastus"})
    stray = {"location": "eastus", "tags": {"labctl-lab": "lab", "labctl-owner": owner}, "sku": {"name": "Standard"}}
    stray["properties"] = {"publicIPAllocationMethod": "Static"}
    azure.network.public_ip_addresses.begin_create_or_update("elsewhere", "stray-ip", stray).result()


def test_a_tag_filtered_list_answers_without_tags(arm_env: FakeArm, azure: Azure) -> None:  # noqa: F811
    arm_env.tag_filter_drops_tags = True
    _stray_ip(azure, arm_env.object_id())
    [hit] = azure.resources.resources.list(filter="tagName eq 'labctl-lab' and tagValue eq 'lab'")
    assert hit.name == "stray-ip" and not hit.tags
    [listed] = [r for r in azure.resources.resources.list() if r.name == "stray-ip"]
    assert listed.tags == {"labctl-lab": "lab", "labctl-owner": arm_env.object_id()}


def test_down_finds_a_leftover_when_the_list_carries_no_tags(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.tag_filter_drops_tags = True
    record = provision("lab")
    _stray_ip(connect(), record.target_data["owner"])
    try:
        destroy("lab")
    except LabctlError as exc:
        assert "stray-ip" in exc.message
    else:
        raise AssertionError("down did not name the stray public IP")


# ------------------------------------------------------------------ 8. orphaned assignments, a role in use


def test_assignments_outlive_their_group_and_keep_the_role(arm_env: FakeArm, azure: Azure) -> None:  # noqa: F811
    role_id = _role(azure, arm_env)
    _assign(azure, arm_env, role_id)
    azure.resources.resource_groups.begin_delete(RG).result()
    assert len(arm_env.role_assignments) == 1  # orphaned, as in Azure
    from labctl.targets.azure.idlerole import call

    with pytest.raises(HttpResponseError) as refused:
        call(azure, "DELETE", role_id)
    assert _code(refused.value) == "RoleDefinitionHasAssignments"


def test_down_leaves_no_assignment_and_no_role(arm_env: FakeArm) -> None:  # noqa: F811
    provision("lab", nodes=2, idle_stop=60.0, allow_ip="203.0.113.7/32")
    assert arm_env.role_assignments
    destroy("lab")
    assert arm_env.role_assignments == {} and arm_env.role_definitions == {}


# ------------------------------------------------------------------ 9. unregistered resource providers


def test_an_unregistered_provider_refuses_until_registered(arm_env: FakeArm, azure: Azure) -> None:  # noqa: F811
    arm_env.registration_s = 0.3
    schedule = f"/subscriptions/{azure.subscription_id}/resourceGroups/{RG}/providers/Microsoft.DevTestLab/schedules/s"
    assert azure.resources.providers.get("Microsoft.DevTestLab").registration_state == "NotRegistered"
    with pytest.raises(HttpResponseError) as refused:
        azure.resources.resources.get_by_id(schedule, api_version="2018-09-15")
    assert refused.value.status_code == 409 and _code(refused.value) == "MissingSubscriptionRegistration"
    assert azure.resources.providers.register("Microsoft.DevTestLab").registration_state == "Registering"
    assert azure.resources.providers.get("Microsoft.DevTestLab").registration_state == "Registering"
    time.sleep(0.35)
    assert azure.resources.providers.get("Microsoft.DevTestLab").registration_state == "Registered"


def test_up_registers_a_provider_before_anything_bills(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.registration_s = 0.2
    provision("lab")
    assert arm_env.resource_ids("schedules")
    register = arm_env.requests.index(
        ("POST", f"/subscriptions/{arm_env.subscription}/providers/Microsoft.DevTestLab/register")
    )
    assert not [r for r in arm_env.requests[:register] if r[0] == "PUT"]


def test_up_says_how_to_register_a_provider_it_may_not(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.caller_role = "Reader"
    with pytest.raises(LabctlError) as refused:
        provision("lab")
    assert "az provider register --namespace Microsoft.DevTestLab" in (refused.value.hint or "")
    assert not arm_env.groups


def test_an_image_with_a_plan_registers_marketplace_ordering(arm_env: FakeArm, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("LABCTL_ACCEPT_IMAGE_TERMS", "1")
    arm_env.image_plans[DSVM] = {"publisher": DSVM[0], "product": DSVM[1], "name": DSVM[2]}
    arm_env.unregistered_providers.add("microsoft.marketplaceordering")
    provision("lab")
    assert all(arm_env.agreements.values()) and arm_env.resource_ids("virtualMachines")
