"""The fake ARM is as strict as ARM where labctl could go wrong, checked through the real azure-mgmt clients.

Each test here is about the fake itself (what it refuses, what it answers); the tests of labctl's behaviour
against these answers follow below them.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.resource.resources import ResourceManagementClient

from labctl.targets.azure.clients import Azure, client_options, connect
from tests.fakearm import FakeArm
from tests.fakearm.fixtures import arm_env, fake_arm  # noqa: F401
from tests.fakearm.server import DSVM

pytestmark = pytest.mark.usefixtures("arm_env")
RG = "fidelity-rg"


@pytest.fixture
def azure(arm_env: FakeArm) -> Azure:  # noqa: F811
    return connect()


def _code(exc: BaseException) -> str:
    return str(getattr(getattr(exc, "error", None), "code", ""))


def _network(azure: Azure, region: str = "eastus") -> str:
    """A resource group with a subnet and a NIC; returns the NIC's id."""
    azure.resources.resource_groups.create_or_update(RG, {"location": region})
    vnet = {
        "location": region,
        "properties": {
            "addressSpace": {"addressPrefixes": ["10.1.0.0/16"]},
            "subnets": [{"name": "default", "properties": {"addressPrefix": "10.1.0.0/24"}}],
        },
    }
    made = azure.network.virtual_networks.begin_create_or_update(RG, "vnet", vnet).result().as_dict()
    nic = {
        "location": region,
        "properties": {
            "ipConfigurations": [
                {"name": "ip", "properties": {"subnet": {"id": made["properties"]["subnets"][0]["id"]}}}
            ]
        },
    }
    return str(azure.network.network_interfaces.begin_create_or_update(RG, "nic", nic).result().id)


def _vm_body(nic: str, size: str, region: str = "eastus", **extra: Any) -> dict[str, Any]:
    image = {"publisher": "microsoft-dsvm", "offer": "ubuntu-2204", "sku": "2204-gen2", "version": "latest"}
    body: dict[str, Any] = {
        "location": region,
        "properties": {
            "hardwareProfile": {"vmSize": size},
            "storageProfile": {"imageReference": image},
            "osProfile": {
                "computerName": "vm",
                "adminUsername": "azureuser",
                "customData": base64.b64encode(b"#cloud-config\n").decode(),
            },
            "networkProfile": {"networkInterfaces": [{"id": nic}]},
        },
    }
    body["properties"].update(extra.pop("properties", {}))
    body.update(extra)
    return body


# ------------------------------------------------------------------------------------------------ api-version


def test_an_unregistered_api_version_is_refused_per_resource_type(arm_env: FakeArm, azure: Azure) -> None:  # noqa: F811
    with pytest.raises(HttpResponseError) as info:
        list(azure.compute.resource_skus.list(filter="location eq 'eastus'", params={"api-version": "2099-01-01"}))
    assert info.value.status_code == 400 and _code(info.value) == "NoRegisteredProviderFound"
    message = str(info.value.error.message)  # type: ignore[union-attr]
    assert "API version '2099-01-01' for type 'skus'" in message and "'2021-07-01'" in message
    with pytest.raises(HttpResponseError) as info:
        options = client_options(azure.endpoint)
        old = ResourceManagementClient(azure.credential, azure.subscription_id, api_version="2016-13-01", **options)
        old.resource_groups.create_or_update(RG, {"location": "eastus"})
    assert info.value.status_code == 400 and _code(info.value) == "InvalidApiVersionParameter"
    assert "The api-version '2016-13-01' is invalid. The supported versions are '2025-04-01'" in str(info.value)
    assert arm_env.group_names() == []  # refused before anything was made
    # A compute version is not a network version: each type has its own list.
    with pytest.raises(HttpResponseError) as info:
        azure.network.public_ip_addresses.get(RG, "ip", params={"api-version": "2021-07-01"})
    assert _code(info.value) == "NoRegisteredProviderFound"


def test_a_request_without_api_version_is_refused(arm_env: FakeArm, azure: Azure) -> None:  # noqa: F811
    token = next(iter(arm_env.tokens))
    answer = requests.get(
        f"{arm_env.url}/subscriptions/{arm_env.subscription}/resourcegroups",
        headers={"Authorization": f"Bearer {token}"},
        verify=str(arm_env.ca_path),
        timeout=10,
    )
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "MissingApiVersionParameter"


# ------------------------------------------------------------------------------------------------ resource groups


def test_a_missing_resource_group_is_404_for_get_and_delete(azure: Azure) -> None:
    with pytest.raises(ResourceNotFoundError) as info:
        azure.resources.resource_groups.get("no-such-rg")
    assert _code(info.value) == "ResourceGroupNotFound"
    with pytest.raises(ResourceNotFoundError) as info:
        azure.resources.resource_groups.begin_delete("no-such-rg").result()
    assert _code(info.value) == "ResourceGroupNotFound"
    with pytest.raises(ResourceNotFoundError) as info:
        azure.network.public_ip_addresses.get("no-such-rg", "ip")
    assert _code(info.value) == "ResourceGroupNotFound"


def test_force_deletion_types_is_taken_and_checked(arm_env: FakeArm, azure: Azure) -> None:  # noqa: F811
    azure.resources.resource_groups.create_or_update(RG, {"location": "eastus"})
    with pytest.raises(HttpResponseError) as info:
        azure.resources.resource_groups.begin_delete(RG, force_deletion_types="Microsoft.Network/foo").result()
    assert _code(info.value) == "InvalidForceDeletionTypes"
    azure.resources.resource_groups.begin_delete(RG, force_deletion_types="Microsoft.Compute/virtualMachines").result()
    assert arm_env.group_names() == []
    assert arm_env.rg_deletes[-1] == (RG, "Microsoft.Compute/virtualMachines")


# ------------------------------------------------------------------------------------------------ resource SKUs


def _skus(azure: Azure, region: str = "eastus") -> dict[str, dict[str, Any]]:
    found = {}
    for item in azure.compute.resource_skus.list(filter=f"location eq '{region}'"):
        data = item.as_dict()
        found[data["name"]] = data
    return found


def _caps(sku: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["value"] for c in sku["capabilities"]}


def test_skus_carry_published_gpu_shapes_and_spot_capability(azure: Azure) -> None:
    skus = _skus(azure)
    shapes = {
        "Standard_NV36ads_A10_v5": ("36", "440", "1", "True", "StandardNVADSA10v5Family"),
        "Standard_NC24ads_A100_v4": ("24", "220", "1", "True", "StandardNCADSA100v4Family"),
        "Standard_NC40ads_H100_v5": ("40", "320", "1", "True", "standardNCadsH100v5Family"),
        "Standard_ND96asr_v4": ("96", "900", "8", "False", "standardNDASv4_A100Family"),
        "Standard_ND96isr_H100_v5": ("96", "1900", "8", "False", "standardNDSH100v5Family"),
        "Standard_NC64as_T4_v3": ("64", "440", "4", "True", "standardNCASv3_T4Family"),
    }
    for name, (vcpus, memory, gpus, spot, family) in shapes.items():
        caps = _caps(skus[name])
        assert (caps["vCPUs"], caps["MemoryGB"], caps["GPUs"], caps["LowPriorityCapable"]) == (
            vcpus,
            memory,
            gpus,
            spot,
        )
        assert skus[name]["family"] == family
    assert _caps(skus["Standard_B2s"])["LowPriorityCapable"] == "False"
    assert "GPUs" not in _caps(skus["Standard_D4s_v5"])


def test_skus_spell_locations_in_mixed_case_and_restrict_zones(arm_env: FakeArm, azure: Azure) -> None:  # noqa: F811
    arm_env.regions["eastus"].zones_restricted["Standard_NC4as_T4_v3"] = ["1", "2"]
    arm_env.regions["eastus"].restricted["Standard_NC8as_T4_v3"] = "NotAvailableForSubscription"
    skus = _skus(azure, "EastUS")  # ARM compares location names case-insensitively
    t4 = skus["Standard_NC4as_T4_v3"]
    assert t4["locations"] == ["EastUS"] and skus["Standard_D4s_v5"]["locations"] == ["eastus"]
    assert t4["locationInfo"][0]["zones"] == ["3"]
    (zone,) = t4["restrictions"]
    assert zone["type"] == "Zone" and zone["restrictionInfo"]["zones"] == ["1", "2"]
    (location,) = skus["Standard_NC8as_T4_v3"]["restrictions"]
    assert (location["type"], location["values"], location["reasonCode"]) == (
        "Location",
        ["EastUS"],
        "NotAvailableForSubscription",
    )


# ------------------------------------------------------------------------------------------------ VM create checks


def test_spot_is_refused_on_a_size_without_low_priority(arm_env: FakeArm, azure: Azure) -> None:  # noqa: F811
    nic = _network(azure)
    spot = {"priority": "Spot", "evictionPolicy": "Deallocate", "billingProfile": {"maxPrice": -1}}
    body = _vm_body(nic, "Standard_B2s", properties=spot)
    with pytest.raises(HttpResponseError) as info:
        azure.compute.virtual_machines.begin_create_or_update(RG, "vm", body).result()
    assert info.value.status_code == 409 and _code(info.value) == "SkuNotAvailable"
    assert arm_env.resource_ids("virtualMachines") == []
    ok = azure.compute.virtual_machines.begin_create_or_update(
        RG, "vm", _vm_body(nic, "Standard_D2s_v5", properties=spot)
    )
    assert ok.result().priority == "Spot"


def test_a_zone_the_size_is_not_offered_in_is_refused(arm_env: FakeArm, azure: Azure) -> None:  # noqa: F811
    arm_env.regions["eastus"].zones_restricted["Standard_D2s_v5"] = ["1"]
    nic = _network(azure)
    with pytest.raises(HttpResponseError) as info:
        azure.compute.virtual_machines.begin_create_or_update(RG, "vm", _vm_body(nic, "Standard_D2s_v5", zones=["1"]))
    assert _code(info.value) == "SkuNotAvailable" and "zones '1'" in str(info.value)
    azure.compute.virtual_machines.begin_create_or_update(RG, "vm", _vm_body(nic, "Standard_D2s_v5")).result()


def test_the_plan_must_match_the_images_plan(arm_env: FakeArm, azure: Azure) -> None:  # noqa: F811
    key = ("microsoft-dsvm", "ubuntu-2204", "2204-gen2")
    nic = _network(azure)
    wrong = {"name": "2004-gen2", "publisher": "microsoft-dsvm", "product": "ubuntu-2004"}
    with pytest.raises(HttpResponseError) as info:  # a plan for an image that has none
        azure.compute.virtual_machines.begin_create_or_update(RG, "vm", _vm_body(nic, "Standard_D2s_v5", plan=wrong))
    assert _code(info.value) == "VMMarketplaceInvalidInput"
    arm_env.image_plans[key] = {"name": "2204-gen2", "publisher": "microsoft-dsvm", "product": "ubuntu-2204"}
    arm_env.agreements["microsoft-dsvm/ubuntu-2204/2204-gen2"] = True
    for plan in (None, wrong):
        extra = {"plan": plan} if plan else {}
        with pytest.raises(HttpResponseError) as info:
            azure.compute.virtual_machines.begin_create_or_update(RG, "vm", _vm_body(nic, "Standard_D2s_v5", **extra))
        assert _code(info.value) == "VMMarketplaceInvalidInput"
    right = dict(arm_env.image_plans[key])
    azure.compute.virtual_machines.begin_create_or_update(
        RG, "vm", _vm_body(nic, "Standard_D2s_v5", plan=right)
    ).result()


def test_a_core_quota_overrun_is_refused_at_create(arm_env: FakeArm, azure: Azure) -> None:  # noqa: F811
    arm_env.regions["eastus"].limits["standardncasv3_t4family"] = 6
    nic = _network(azure)
    with pytest.raises(HttpResponseError) as info:
        azure.compute.virtual_machines.begin_create_or_update(RG, "vm", _vm_body(nic, "Standard_NC8as_T4_v3"))
    assert _code(info.value) == "OperationNotAllowed"
    assert "Maximum allowed: 6, Current in use: 0, Additional requested: 8." in str(info.value)


# ------------------------------------------------------------------------------------------------ schedule, IP


def test_the_shutdown_schedule_takes_windows_time_zone_ids_only(azure: Azure) -> None:
    azure.resources.providers.register("Microsoft.DevTestLab")
    nic = _network(azure)
    vm = azure.compute.virtual_machines.begin_create_or_update(RG, "vm", _vm_body(nic, "Standard_D2s_v5")).result()
    schedule = f"/subscriptions/{azure.subscription_id}/resourceGroups/{RG}/providers/Microsoft.DevTestLab/schedules/s"
    body = {
        "location": "eastus",
        "properties": {
            "status": "Enabled",
            "taskType": "ComputeVmShutdownTask",
            "dailyRecurrence": {"time": "1900"},
            "timeZoneId": "Europe/Berlin",
            "targetResourceId": vm.id,
        },
    }
    with pytest.raises(HttpResponseError) as info:
        azure.resources.resources.begin_create_or_update_by_id(schedule, body, api_version="2018-09-15").result()
    assert _code(info.value) == "InvalidTimeZoneId" and "'Europe/Berlin'" in str(info.value)
    body["properties"]["timeZoneId"] = "W. Europe Standard Time"
    azure.resources.resources.begin_create_or_update_by_id(schedule, body, api_version="2018-09-15").result()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"provisioningState": "Succeeded"}, "'properties.provisioningState' is read-only"),
        ({"status": "On"}, "'properties.status' has the value 'On'"),
        ({"dailyRecurrence": {"time": 1900}}, "'properties.dailyRecurrence.time' must be of type string"),
        ({"shutdownTime": "1900"}, "Could not find member 'shutdownTime'"),
    ],
)
def test_a_schedule_body_the_published_schema_refuses_is_refused(
    azure: Azure, change: dict[str, Any], says: str
) -> None:
    azure.resources.providers.register("Microsoft.DevTestLab")
    azure.resources.resource_groups.create_or_update(RG, {"location": "eastus"})
    vm = f"/subscriptions/{azure.subscription_id}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/vm"
    schedule = f"/subscriptions/{azure.subscription_id}/resourceGroups/{RG}/providers/Microsoft.DevTestLab/schedules/s"
    properties = {"status": "Enabled", "taskType": "ComputeVmShutdownTask", "dailyRecurrence": {"time": "1900"}}
    body = {"location": "eastus", "properties": {**properties, "timeZoneId": "UTC", "targetResourceId": vm, **change}}
    with pytest.raises(HttpResponseError) as info:
        azure.resources.resources.begin_create_or_update_by_id(schedule, body, api_version="2018-09-15").result()
    assert info.value.status_code == 400 and _code(info.value) == "InvalidRequestContent"
    assert str(info.value).count("; ") == 0 and says in str(info.value)  # only the change is refused


def test_a_public_ip_has_its_address_only_once_created(arm_env: FakeArm, azure: Azure) -> None:  # noqa: F811
    azure.resources.resource_groups.create_or_update(RG, {"location": "eastus"})
    arm_env.latency["publicipaddresses"] = 0.4
    body = {
        "location": "eastus",
        "sku": {"name": "Standard"},
        "properties": {"publicIPAllocationMethod": "Static"},
    }
    poller = azure.network.public_ip_addresses.begin_create_or_update(RG, "ip", body)
    during = azure.network.public_ip_addresses.get(RG, "ip")
    assert during.provisioning_state != "Succeeded" and during.ip_address is None
    made = poller.result()
    assert made.ip_address and azure.network.public_ip_addresses.get(RG, "ip").ip_address == made.ip_address


def test_uefi_settings_come_only_with_trusted_launch(arm_env: FakeArm, azure: Azure) -> None:  # noqa: F811
    nic = _network(azure)
    uefi = {"secureBootEnabled": False, "vTpmEnabled": True}
    for profile, code in (
        ({"uefiSettings": uefi}, "InvalidParameter"),
        ({"securityType": "Standard", "uefiSettings": uefi}, "InvalidParameter"),
        ({"securityType": "X"}, "InvalidRequestContent"),  # not among the published SecurityTypes
    ):
        body = _vm_body(nic, "Standard_D2s_v5", properties={"securityProfile": profile})
        with pytest.raises(HttpResponseError) as info:
            azure.compute.virtual_machines.begin_create_or_update(RG, "vm", body)
        assert info.value.status_code == 400 and _code(info.value) == code
    trusted = {"securityType": "TrustedLaunch", "uefiSettings": uefi}
    body = _vm_body(nic, "Standard_D2s_v5", properties={"securityProfile": trusted})
    made = azure.compute.virtual_machines.begin_create_or_update(RG, "vm", body).result().as_dict()
    assert made["properties"]["securityProfile"] == trusted


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"properties": {"vmId": "0"}}, "'properties.vmId' is read-only"),
        ({"properties": {"osProfile": {"computerName": "vm", "adminUsername": "u", "sshKeys": []}}}, "'sshKeys'"),
        ({"properties": {"priority": "Cheap"}}, "'properties.priority' has the value 'Cheap'"),
        ({"identity": {"type": "SystemAssigned", "principalId": "p"}}, "'identity.principalId' is read-only"),
    ],
)
def test_a_body_the_published_schema_refuses_is_refused(azure: Azure, change: dict[str, Any], says: str) -> None:
    nic = _network(azure)
    body = _vm_body(nic, "Standard_D2s_v5")
    body["properties"].update(change.pop("properties", {}))
    body.update(change)
    with pytest.raises(HttpResponseError) as info:
        azure.compute.virtual_machines.begin_create_or_update(RG, "vm", body)
    assert info.value.status_code == 400 and _code(info.value) == "InvalidRequestContent"
    assert says in str(info.value)
    rule = {"name": "r", "properties": {"priority": 100, "direction": "Inbound", "access": "Allow", "protocol": "TCP"}}
    nsg = {"location": "eastus", "properties": {"securityRules": [rule]}}
    with pytest.raises(HttpResponseError, match="not one of 'Tcp'"):
        azure.network.network_security_groups.begin_create_or_update(RG, "nsg", nsg)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"macAddress": "00-0D-3A-00-00-01"}, "'properties.macAddress' is read-only"),
        ({"enableAcceleratedNetworkin": True}, "Could not find member 'enableAcceleratedNetworkin'"),
        ({"nicType": "Fast"}, "'properties.nicType' has the value 'Fast'"),
    ],
)
def test_a_nic_body_the_published_schema_refuses_is_refused(azure: Azure, change: dict[str, Any], says: str) -> None:
    _network(azure)
    subnet = azure.network.network_interfaces.get(RG, "nic").ip_configurations[0].subnet.id
    body = {
        "location": "eastus",
        "properties": {"ipConfigurations": [{"name": "ip", "properties": {"subnet": {"id": subnet}}}]},
    }
    body["properties"].update(change)
    with pytest.raises(HttpResponseError) as info:
        azure.network.network_interfaces.begin_create_or_update(RG, "nic2", body)
    assert info.value.status_code == 400 and _code(info.value) == "InvalidRequestContent"
    assert str(info.value).count("; ") == 0 and says in str(info.value)  # only the change is refused


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"location": "eastus", "properties": {"provisioningState": "Succeeded"}}, "'properties.provisioningState'"),
        ({"location": "eastus", "sku": {"name": "Standard"}}, "Could not find member 'sku' on object"),
        ({"tags": {"owner": "me"}}, "the required property 'location' is missing"),
        ({"location": "eastus", "tags": {"epochs": 3}}, "'tags.epochs' must be of type string"),
    ],
)
def test_a_group_body_the_published_schema_refuses_is_refused(azure: Azure, body: dict[str, Any], says: str) -> None:
    with pytest.raises(HttpResponseError) as info:
        azure.resources.resource_groups.create_or_update(RG, body)
    assert info.value.status_code == 400 and _code(info.value) == "InvalidRequestContent"
    assert says in str(info.value)
    assert not azure.resources.resource_groups.check_existence(RG)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"createdOn": "2026-01-01T00:00:00Z"}, "'properties.createdOn' is read-only"),
        ({"roleType": "CustomRole"}, "Could not find member 'roleType'"),  # the SDK's name, not the wire's
        ({"permissions": [{"actions": "*"}]}, "'properties.permissions[0].actions' must be of type array"),
    ],
)
def test_a_role_definition_the_published_schema_refuses_is_refused(
    azure: Azure, change: dict[str, Any], says: str
) -> None:
    from labctl.targets.azure import idlerole

    group = f"/subscriptions/{azure.subscription_id}/resourceGroups/{RG}"
    vm = f"{group}/providers/Microsoft.Compute/virtualMachines/vm"
    body = idlerole.role_definition(group, vm, "lab")
    body["properties"].update(change)
    with pytest.raises(HttpResponseError) as info:
        idlerole.call(azure, "PUT", idlerole.role_definition_url(group, vm), body)
    assert info.value.status_code == 400 and _code(info.value) == "InvalidRequestContent"
    assert str(info.value).count("; ") == 0 and says in str(info.value)  # only the change is refused


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"scope": "/"}, "'properties.scope' is read-only"),
        ({"principalType": "MSI"}, "'properties.principalType' has the value 'MSI'"),
        ({"objectId": "x"}, "Could not find member 'objectId'"),
        ({"principalId": None}, "the required property 'properties.principalId' is missing"),
    ],
)
def test_a_role_assignment_the_published_schema_refuses_is_refused(
    azure: Azure, change: dict[str, Any], says: str
) -> None:
    from labctl.targets.azure import idlerole

    vm = f"/subscriptions/{azure.subscription_id}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/vm"
    body = idlerole.role_assignment(azure.subscription_id, vm, "11111111-0000-4000-8000-000000000001")
    body["properties"] = {k: v for k, v in {**body["properties"], **change}.items() if v is not None}
    with pytest.raises(HttpResponseError) as info:
        idlerole.call(azure, "PUT", idlerole.role_assignment_url(vm), body)
    assert info.value.status_code == 400 and _code(info.value) == "InvalidRequestContent"
    assert str(info.value).count("; ") == 0 and says in str(info.value)  # only the change is refused


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"systemData": {"createdBy": "me"}}, "'systemData' is read-only"),  # as a GET answers it
        ({"properties": {"accepted": "true"}}, "'properties.accepted' must be of type boolean"),
        ({"properties": {"accepted": True, "acceptedOn": "2026-01-01"}}, "Could not find member 'acceptedOn'"),
    ],
)
def test_a_marketplace_agreement_the_published_schema_refuses_is_refused(
    arm_env: FakeArm,  # noqa: F811
    azure: Azure,
    change: dict[str, Any],
    says: str,
) -> None:
    terms = (
        f"/subscriptions/{azure.subscription_id}/providers/Microsoft.MarketplaceOrdering/offerTypes/virtualmachine"
        "/publishers/microsoft-dsvm/offers/ubuntu-2204/plans/2204-gen2/agreements/current"
    )
    body = {"properties": {"accepted": True}, **change}
    with pytest.raises(HttpResponseError) as info:
        azure.resources.resources.begin_create_or_update_by_id(terms, body, api_version="2021-01-01").result()
    assert info.value.status_code == 400 and _code(info.value) == "InvalidRequestContent"
    assert str(info.value).count("; ") == 0 and says in str(info.value)
    assert arm_env.agreements == {}, "nothing was accepted"


def test_subscription_states_are_listed_as_given(arm_env: FakeArm) -> None:  # noqa: F811
    from labctl.targets.azure.clients import list_subscriptions, make_credential

    arm_env.subscriptions["22222222-2222-4333-8444-555555555555"] = "Unpaid"
    arm_env.subscription_states["22222222-2222-4333-8444-555555555555"] = "PastDue"
    states = {s["subscriptionId"]: s["state"] for s in list_subscriptions(make_credential(), arm_env.url)}
    assert states == {arm_env.subscription: "Enabled", "22222222-2222-4333-8444-555555555555": "PastDue"}


def test_trusted_launch_is_refused_where_the_image_does_not_declare_it(arm_env: FakeArm, azure: Azure) -> None:  # noqa: F811
    arm_env.image_features[DSVM] = [{"name": "SecurityType", "value": "Standard"}]
    nic = _network(azure)
    trusted = {"securityType": "TrustedLaunch", "uefiSettings": {"secureBootEnabled": False, "vTpmEnabled": True}}
    body = _vm_body(nic, "Standard_D2s_v5", properties={"securityProfile": trusted})
    with pytest.raises(HttpResponseError, match="Use of TrustedLaunch setting is not supported for the provided"):
        azure.compute.virtual_machines.begin_create_or_update(RG, "vm", body)


def test_trusted_launch_is_refused_where_the_size_disables_it(arm_env: FakeArm, azure: Azure) -> None:  # noqa: F811
    assert _caps(_skus(azure)["Standard_ND96asr_v4"])["TrustedLaunchDisabled"] == "True"
    arm_env.regions["eastus"].limits["standardndasv4_a100family"] = 96
    nic = _network(azure)
    trusted = {"securityType": "TrustedLaunch", "uefiSettings": {"secureBootEnabled": False, "vTpmEnabled": True}}
    body = _vm_body(nic, "Standard_ND96asr_v4", properties={"securityProfile": trusted})
    with pytest.raises(HttpResponseError) as info:
        azure.compute.virtual_machines.begin_create_or_update(RG, "vm", body)
    assert _code(info.value) == "BadRequest" and "'TrustedLaunch' security type" in str(info.value)


# ================================================================================================================
# labctl against the stricter fake


def _up(name: str = "lab", **spec_fields: Any) -> tuple[Any, str]:
    """AzureTarget.provision as `up` runs it; returns the record and what the user was told."""
    import io

    from labctl.spec import LabSpec
    from labctl.state import LabRecord, StateStore
    from labctl.targets.azure import AzureTarget
    from labctl.ui import PlainReporter

    out = io.StringIO()
    store = StateStore()
    record = LabRecord(name=name, target="azure")
    store.save(record)
    spec = LabSpec(name=name, **spec_fields).validate()
    return AzureTarget().provision(spec, record, PlainReporter(out), store.save), out.getvalue()


def test_spot_on_a_size_without_it_is_refused_before_anything_is_made(arm_env: FakeArm) -> None:  # noqa: F811
    from labctl.errors import LabctlError

    with pytest.raises(LabctlError) as info:
        _up(spot=True, sizes=["Standard_B2s"])
    text = info.value.render()
    assert "Standard_B2s" in text and "Spot" in text
    assert "Standard_D2s_v5" in text and "--spot" in text  # Spot-capable sizes here, or no Spot
    assert arm_env.group_names() == [] and arm_env.count("PUT", "virtualmachines") == 0


def test_spot_moves_on_to_a_size_that_has_it_without_a_refused_create(arm_env: FakeArm) -> None:  # noqa: F811
    record, _ = _up(spot=True, sizes=["Standard_B2s", "Standard_D2s_v5"])
    assert record.target_data["size"] == "Standard_D2s_v5"
    assert arm_env.count("PUT", "virtualmachines/lab-vm$") == 1


def test_an_nvads_a10_size_is_refused_with_cuda_alternatives(arm_env: FakeArm) -> None:  # noqa: F811
    from labctl.errors import UsageError
    from labctl.spec import LabSpec
    from labctl.targets.azure import AzureTarget

    with pytest.raises(UsageError) as info:
        _up(gpu=True, sizes=["Standard_NV36ads_A10_v5"])
    text = info.value.render()
    assert "Standard_NV36ads_A10_v5" in text and "GRID" in text
    assert all(s in text for s in ("Standard_NC4as_T4_v3", "Standard_NC24ads_A100_v4", "Standard_NC40ads_H100_v5"))
    assert arm_env.group_names() == []
    with pytest.raises(UsageError):  # the dry-run plan says the same, offline
        AzureTarget().plan(LabSpec(name="lab", gpu=True, sizes=["Standard_NV36ads_A10_v5"]).validate())


def _profile(folder: Any, default: str) -> None:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    entries = [{"id": default, "name": "Research", "state": "Enabled", "isDefault": True, "tenantId": "t"}]
    (folder / "azureProfile.json").write_text(json.dumps({"subscriptions": entries}), encoding="utf-8-sig")


SECOND = "22222222-2222-4333-8444-555555555555"


@pytest.mark.parametrize("where", ["home", "AZURE_CONFIG_DIR"])
def test_several_subscriptions_use_the_cli_default_and_say_which(
    arm_env: FakeArm,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    where: str,
) -> None:
    import os
    from pathlib import Path

    arm_env.subscriptions[SECOND] = "Research"
    if where == "home":
        _profile(Path(os.environ["HOME"]) / ".azure", SECOND)
    else:
        _profile(tmp_path / "azcfg", SECOND)
        monkeypatch.setenv("AZURE_CONFIG_DIR", str(tmp_path / "azcfg"))
    record, said = _up()
    assert record.target_data["subscription"] == SECOND
    assert arm_env.groups[record.target_data["resource_group"]]["_sub"] == SECOND
    assert f"Using subscription {SECOND} (Research), the Azure CLI's default" in said


@pytest.mark.parametrize("state", ["Warned", "PastDue"])
def test_a_warned_or_past_due_subscription_is_used_with_a_warning(arm_env: FakeArm, state: str) -> None:  # noqa: F811
    arm_env.subscription_states[arm_env.subscription] = state
    record, said = _up()
    assert record.target_data["subscription"] == arm_env.subscription
    assert f"is in state {state}" in said


def test_a_disabled_subscription_is_refused(arm_env: FakeArm) -> None:  # noqa: F811
    from labctl.errors import LabctlError

    arm_env.subscription_states[arm_env.subscription] = "Disabled"
    with pytest.raises(LabctlError) as info:
        _up()
    assert "no usable subscription" in info.value.render() and "Disabled" in info.value.render()
    assert arm_env.group_names() == []


def test_a_quota_refusal_at_create_moves_on_to_the_next_size(arm_env: FakeArm) -> None:  # noqa: F811
    def someone_else_takes_the_quota(method: str, path: str) -> None:
        if method == "PUT" and path.lower().endswith("/networkinterfaces/lab-nic"):
            arm_env.regions["eastus"].used["standarddsv5family"] = 100  # between labctl's check and its create

    arm_env.on_request = someone_else_takes_the_quota
    record, said = _up(sizes=["Standard_D4s_v5", "Standard_E4s_v5"])
    assert record.target_data["size"] == "Standard_E4s_v5"
    assert "exceeding quota limits of Core" in said and "Trying the next choice" in said
    assert arm_env.count("PUT", "virtualmachines/lab-vm$") == 2


TRUSTED = {"securityType": "TrustedLaunch", "uefiSettings": {"secureBootEnabled": False, "vTpmEnabled": True}}


def test_the_vm_boots_with_trusted_launch_but_no_secure_boot(arm_env: FakeArm) -> None:  # noqa: F811
    _up(gpu=True)
    (vm_id,) = arm_env.resource_ids("virtualMachines")
    assert arm_env.get(vm_id)["properties"]["securityProfile"] == TRUSTED  # type: ignore[index]


def test_a_size_without_trusted_launch_gets_a_standard_vm(arm_env: FakeArm) -> None:  # noqa: F811
    arm_env.regions["eastus"].limits["standardndasv4_a100family"] = 96
    _up(gpu=True, sizes=["Standard_ND96asr_v4"])
    (vm_id,) = arm_env.resource_ids("virtualMachines")
    assert arm_env.get(vm_id)["properties"]["securityProfile"] == {"securityType": "Standard"}  # type: ignore[index]


def test_down_force_deletes_the_vm_with_its_group(arm_env: FakeArm) -> None:  # noqa: F811
    from tests.fakearm.fixtures import destroy

    record, _ = _up()
    destroy("lab")
    # Then the owner's workspace group, emptied of the lab's disk: it holds no VM to force.
    assert arm_env.rg_deletes[0] == (record.target_data["resource_group"], "Microsoft.Compute/virtualMachines")
    assert [force for _, force in arm_env.rg_deletes[1:]] == [None]
    assert arm_env.group_names() == [] and arm_env.resource_ids() == []


def test_down_succeeds_when_the_group_is_deleted_under_it(arm_env: FakeArm) -> None:  # noqa: F811
    from tests.fakearm.fixtures import destroy

    record, _ = _up()
    group = record.target_data["resource_group"]

    def portal_user_deletes_it_first(method: str, path: str) -> None:
        if method == "DELETE" and path.lower().endswith(f"/resourcegroups/{group}"):
            arm_env.remove_group(group)

    arm_env.on_request = portal_user_deletes_it_first
    destroy("lab")  # ARM answered 404 ResourceGroupNotFound: already gone is what down wanted
    assert arm_env.group_names() == [] and arm_env.resource_ids() == []


def test_down_names_a_tagged_resource_left_outside_the_group(arm_env: FakeArm) -> None:  # noqa: F811
    from typer.testing import CliRunner

    from labctl.cli import app
    from labctl.state import StateStore

    record, _ = _up()
    azure = connect()
    azure.resources.resource_groups.create_or_update("elsewhere", {"location": "eastus"})
    tags = {"labctl-lab": "lab", "labctl-owner": record.target_data["owner"]}  # as every resource of the lab has
    stray = {"location": "eastus", "tags": tags, "sku": {"name": "Standard"}}
    stray["properties"] = {"publicIPAllocationMethod": "Static"}
    azure.network.public_ip_addresses.begin_create_or_update("elsewhere", "stray-ip", stray).result()
    result = CliRunner().invoke(app, ["down", "--yes"])
    assert result.exit_code != 0
    assert "publicIPAddresses/stray-ip" in result.output and "nothing is left" not in result.output
    assert record.target_data["resource_group"] not in arm_env.group_names()  # the group itself went
    assert StateStore().exists("lab")  # kept, so `down` can be run again once the stray is gone


# ------------------------------------------------------------------------------------ several VMs of one lab


def test_private_addresses_are_given_in_order_from_4_and_reused(arm_env: FakeArm, azure: Azure) -> None:  # noqa: F811
    nic = _network(azure)
    first = azure.network.network_interfaces.get(RG, "nic").as_dict()
    subnet = first["properties"]["ipConfigurations"][0]["properties"]["subnet"]
    body = {
        "location": "eastus",
        "properties": {"ipConfigurations": [{"name": "ip", "properties": {"subnet": subnet}}]},
    }

    def address(name: str) -> str:
        made = azure.network.network_interfaces.begin_create_or_update(RG, name, body).result().as_dict()
        return str(made["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"])

    assert first["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"] == "10.1.0.4"
    assert [address("nic2"), address("nic3")] == ["10.1.0.5", "10.1.0.6"]
    assert address("nic2") == "10.1.0.5"  # an update keeps the address it has
    azure.network.network_interfaces.begin_delete(RG, "nic2").result()
    assert address("nic4") == "10.1.0.5"  # the first free one again
    assert nic.endswith("/nic")


def test_a_placement_group_is_synchronous_and_lists_its_vms(arm_env: FakeArm, azure: Azure) -> None:  # noqa: F811
    nic = _network(azure)
    ppg = azure.compute.proximity_placement_groups.create_or_update(
        RG, "ppg", {"location": "eastus", "properties": {"proximityPlacementGroupType": "Standard"}}
    )
    assert ppg.id.endswith("/proximityPlacementGroups/ppg") and "provisioningState" not in ppg.as_dict()["properties"]
    with pytest.raises(HttpResponseError) as info:
        azure.compute.proximity_placement_groups.get(RG, "ppg", params={"api-version": "2021-07-01"})
    assert _code(info.value) == "NoRegisteredProviderFound" and "'proximityPlacementGroups'" in str(info.value)
    missing = f"{ppg.id}-not-there"
    with pytest.raises(HttpResponseError) as info:
        azure.compute.virtual_machines.begin_create_or_update(
            RG, "vm", _vm_body(nic, "Standard_D4s_v5", properties={"proximityPlacementGroup": {"id": missing}})
        ).result()
    assert _code(info.value) == "InvalidResourceReference"
    body = _vm_body(nic, "Standard_D4s_v5", properties={"proximityPlacementGroup": {"id": ppg.id}})
    vm = azure.compute.virtual_machines.begin_create_or_update(RG, "vm", body).result()
    members = azure.compute.proximity_placement_groups.get(RG, "ppg").as_dict()["properties"]["virtualMachines"]
    assert [m["id"] for m in members] == [vm.id]
    azure.compute.virtual_machines.begin_delete(RG, "vm").result()
    assert not azure.compute.proximity_placement_groups.get(RG, "ppg").as_dict()["properties"]["virtualMachines"]


def test_a_running_vm_cannot_move_into_a_placement_group(arm_env: FakeArm, azure: Azure) -> None:  # noqa: F811
    nic = _network(azure)
    azure.compute.virtual_machines.begin_create_or_update(RG, "vm", _vm_body(nic, "Standard_D4s_v5")).result()
    ppg = azure.compute.proximity_placement_groups.create_or_update(RG, "ppg", {"location": "eastus"})
    moved = _vm_body(nic, "Standard_D4s_v5", properties={"proximityPlacementGroup": {"id": ppg.id}})
    moved["properties"]["osProfile"].pop("customData")
    with pytest.raises(HttpResponseError) as info:
        azure.compute.virtual_machines.begin_create_or_update(RG, "vm", moved).result()
    assert _code(info.value) == "OperationNotAllowed" and "deallocate" in str(info.value)
