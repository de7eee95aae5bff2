"""The fake ARM answers recorded real requests as ARM answered them: the status, which of the long-running-operation
headers came back, and the body's keys.

Two sources, one format: ``tests/fakearm/recorded.json`` (interactions taken from the recordings of real sessions
that the Azure CLI's and the Azure SDK for Python's own tests keep, each naming its source) and every
``tests/recordings/*.json`` that ``make live`` wrote from labctl's own traffic against a real subscription (replayed
in order, against one fake).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fakearm import FakeArm, RegionConfig
from tests.fakearm.fixtures import fake_arm  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
RECORDED = json.loads((ROOT / "fakearm" / "recorded.json").read_text())["interactions"]
SESSIONS = sorted((ROOT / "recordings").glob("*.json"))
MONITORS = ("Azure-AsyncOperation", "Location", "Retry-After")
GROUP = "recorded-rg"
SUBSCRIPTION_SCOPE = "/subscriptions/{subscription}"
READER = SUBSCRIPTION_SCOPE + "/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"
NEEDED = {
    "schedule": "auto-shutdown schedule created",
    "assignment": "role assigned at a resource group",
    "vnet": "virtual network created",
    "nic": "network interface created",
    "public ip": "public IP address created (Standard, static)",
    "created vm": "VM created with a direct PUT",
    "vm identity": "VM created with a system-assigned identity",
}
RECORDED_IDENTITY_VM = (
    SUBSCRIPTION_SCOPE + "/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachines/pyvmirvm507d1052"
)
# The platform images the recorded VMs were made from, and the region of one of them, as the fake offers its own
RECORDED_IMAGES = [
    ("canonical", "ubuntuserver", "16.04.0-lts"),
    ("canonical", "ubuntuserver", "16.04-lts"),
    ("microsoftwindowsserver", "windowsserver", "2016-datacenter"),
]


def _fill(value: Any, names: dict[str, str]) -> Any:
    text = json.dumps(value)
    for key, name in names.items():
        text = text.replace("{" + key + "}", name)
    return json.loads(text)


def _send(fake: FakeArm, interaction: dict[str, Any], names: dict[str, str]) -> requests.Response:
    query = {**_fill(interaction.get("query") or {}, names), "api-version": interaction["api_version"]}
    return requests.request(
        interaction["method"],
        fake.url + _fill(interaction["path"], names),
        params=query,
        json=_fill(interaction["body"], names),
        headers={"Authorization": f"Bearer {fake.access_token(fake.client_id)}"},
        verify=str(fake.ca_path),
        timeout=30,
    )


def _differences(interaction: dict[str, Any], answer: requests.Response) -> list[str]:
    """How the fake's answer differs from the recorded one, beyond the differences the recording lists."""
    found = []
    if answer.status_code != interaction["status"]:
        found.append(f"status {answer.status_code}, recorded {interaction['status']}: {answer.text[:300]}")
    sent = sorted(h for h in MONITORS if h in answer.headers)
    if sent != sorted(interaction["headers"]):
        found.append(f"headers {sent}, recorded {sorted(interaction['headers'])}")
    body = answer.json() if answer.content else None
    known = set(interaction.get("differences") or {})
    for where, keys, got in (
        ("body", interaction.get("body_keys"), body),
        ("properties", interaction.get("properties_keys"), (body or {}).get("properties")),
        ("list item", interaction.get("item_keys"), ((body or {}).get("value") or [None])[0]),
    ):
        if keys is not None and (set(got or {}) ^ set(keys)) - known:
            found.append(f"{where} keys {sorted(got or {})}, recorded {sorted(keys)}")
    props = (body or {}).get("properties") or {}
    for key, value in (interaction.get("properties_values") or {}).items():
        if props.get(key) != value:
            found.append(f"properties.{key} {props.get(key)!r}, recorded {value!r}")
    return found


def _given(fake: FakeArm, needs: list[str], names: dict[str, str]) -> None:
    """The state a recorded request found in the recorded subscription, and the names of what it holds."""

    def put(path: str, body: dict[str, Any], version: str) -> None:
        answer = _send(fake, {"method": "PUT", "path": path, "body": body, "api_version": version}, names)
        assert answer.status_code < 300, answer.text

    group = {"location": "westus", "tags": {"product": "azurecli", "cause": "automation"}}  # as the CLI's tests tag it
    put("/subscriptions/{subscription}/resourcegroups/{group}", group, "2025-04-01")
    if "tagged group" in needs:
        body = {"location": "westus", "managedBy": "test_admin", "tags": {"a": "b", "c": ""}}
        put("/subscriptions/{subscription}/resourcegroups/cli_test_rg_scenario000001", body, "2025-04-01")
    if "vm" in needs:  # only its existence matters: a schedule's target must exist
        kind = "Microsoft.Compute/virtualMachines"
        vm = _fill(f"{SUBSCRIPTION_SCOPE}/resourceGroups/{{group}}/providers/{kind}/vm1", names)
        fake.resources[vm.lower()] = {"id": vm, "name": "vm1", "type": kind, "location": "westus", "properties": {}}
    if "recorded images" in needs:
        fake.regions.setdefault("westus", RegionConfig())
        fake.images.update({image: ["1.0.0"] for image in RECORDED_IMAGES})
    if "role" in needs:  # the built-in Reader role, which the fake knows only as a custom role of that id
        scopes = [SUBSCRIPTION_SCOPE]
        put(READER, {"properties": {"roleName": "Reader", "permissions": [], "assignableScopes": scopes}}, "2022-04-01")
        time.sleep(fake.role_replication_s)  # a built-in role has replicated long before; a new custom one has not
    for interaction in RECORDED:
        if interaction["name"] in [NEEDED[n] for n in needs if n in NEEDED]:
            put(interaction["path"], interaction["body"], interaction["api_version"])
    if "tagged vm" in needs:  # made by the CLI's template with --tag; its OS disk is the first resource listed
        vm = next(i for i in RECORDED if i["name"] == NEEDED["created vm"])
        put(vm["path"], {**vm["body"], "tags": {"cli-test-tag000003": ""}}, vm["api_version"])
    if "vm to update" in needs:  # as the CLI's template made it: the same VM, not yet tagged
        vm = next(i for i in RECORDED if i["name"] == "VM updated with the whole VM PUT again (az vm update)")
        put(vm["path"], {k: v for k, v in vm["body"].items() if k != "tags"}, vm["api_version"])
    if "vm identity" in needs:
        names["identity"] = str(fake.vm_principal(_fill(RECORDED_IDENTITY_VM, names)))


@pytest.mark.parametrize("interaction", RECORDED, ids=[i["name"] for i in RECORDED])
def test_the_fake_answers_a_recorded_request_as_arm_did(fake_arm: FakeArm, interaction: dict[str, Any]) -> None:  # noqa: F811
    names = {"subscription": fake_arm.subscription, "group": GROUP, "principal": fake_arm.client_id}
    fake_arm.unregistered_providers.clear()  # the recording's subscription had its providers registered
    _given(fake_arm, interaction["given"], names)
    assert _differences(interaction, _send(fake_arm, interaction, names)) == [], interaction["source"]


def test_every_live_session_replays_against_the_fake(fake_arm: FakeArm) -> None:  # noqa: F811
    """Each recording in order against a fresh fake; none yet is a pass (they come from ``make live``)."""
    found = []
    for session in SESSIONS:
        fake = FakeArm(fake_arm.workdir / session.stem).start()
        fake.unregistered_providers.clear()  # what that subscription had registered is not recorded
        names = {"subscription": fake.subscription, "principal": fake.client_id}
        try:
            for interaction in json.loads(session.read_text())["interactions"]:
                answer = _send(fake, interaction, names)
                found += [
                    f"{session.name}: {interaction['method']} {interaction['path']}: {d}"
                    for d in _differences(interaction, answer)
                ]
        finally:
            fake.stop()
    assert found == []
