"""`labctl resize` on Azure against the fake ARM: the new size is checked as `up` checks one (offered in the lab's
region, quota for the cores it adds on every node, Trusted Launch and accelerated networking) before anything stops;
then every VM is deallocated, resized, started, and the record says the new size, GPU and price. The fake refuses a
resize as ARM does: a size the region does not offer, or one whose added cores exceed the quota."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from labctl.cli import app
from labctl.errors import LabctlError
from labctl.pricing import lookup
from labctl.state import LabRecord, StateStore
from labctl.targets.azure import AzureTarget
from labctl.targets.azure.plan import azure_data
from labctl.ui import PlainReporter
from tests.fakearm import FakeArm
from tests.fakearm.fixtures import arm_env, fake_arm, provision  # noqa: F401

pytestmark = pytest.mark.usefixtures("arm_env")

VM = "Microsoft.Compute/virtualMachines"


def _vms(fake: FakeArm) -> dict[str, dict[str, Any]]:
    return {res["name"]: res for rid in fake.resource_ids(VM) if (res := fake.get(rid)) and res["type"] == VM}


def _sizes(fake: FakeArm) -> set[str]:
    return {vm["properties"]["hardwareProfile"]["vmSize"] for vm in _vms(fake).values()}


def _resize(record: LabRecord, size: str, asked: list[str] | None = None) -> dict[str, Any]:
    """As the workflow does: the target's answer, then the record saved."""
    said = asked if asked is not None else []
    facts = AzureTarget().resize(record, lookup(size), PlainReporter(io.StringIO()), lambda: said.append(size) or True)
    StateStore().save(record)
    return facts


def test_every_node_is_stopped_resized_and_started_and_the_record_follows(arm_env: FakeArm) -> None:  # noqa: F811
    record = provision("lab", nodes=2)
    arm_env.requests.clear()
    asked: list[str] = []
    facts = _resize(record, "Standard_D8s_v5", asked)
    assert asked == ["Standard_D8s_v5"]  # told (and asked) once the size fits, before anything stopped
    assert _sizes(arm_env) == {"Standard_D8s_v5"}
    assert set(arm_env.power.values()) == {"running"}
    calls = [(m, p.lower()) for m, p in arm_env.requests if m in ("PUT", "POST")]
    deallocated = max(i for i, (m, p) in enumerate(calls) if p.endswith("/deallocate"))
    started = min(i for i, (m, p) in enumerate(calls) if p.endswith("/start"))
    resized = [i for i, (m, p) in enumerate(calls) if m == "PUT" and "/virtualmachines/" in p]
    assert len(resized) == 2 and deallocated < min(resized) and max(resized) < started
    saved = StateStore().load("lab")
    assert azure_data(saved)["size"] == "Standard_D8s_v5" and facts["size"] == "Standard_D8s_v5"
    assert azure_data(saved)["usd_per_hour"] == pytest.approx(2 * 0.384)
    assert not saved.gpu and saved.nodes[0].host == record.nodes[0].host  # the address stays
    starts = [event for event in azure_data(saved)["power_events"] if event[1] == "running"]
    assert [event[2] for event in starts] == [pytest.approx(2 * 0.192), pytest.approx(2 * 0.384)]  # each at its $/h


def test_a_cpu_lab_resized_to_a_gpu_size_becomes_a_gpu_lab(arm_env: FakeArm) -> None:  # noqa: F811
    record = provision("lab")
    _resize(record, "Standard_NC4as_T4_v3")
    assert _sizes(arm_env) == {"Standard_NC4as_T4_v3"} and StateStore().load("lab").gpu


def _refused(fake: FakeArm, record: LabRecord, size: str) -> str:
    fake.requests.clear()
    asked: list[str] = []
    with pytest.raises(LabctlError) as refused:
        _resize(record, size, asked)
    assert asked == [] and set(fake.power.values()) == {"running"}
    writes = [r for r in fake.requests if r[0] != "GET" and r[1].startswith("/subscriptions/")]
    assert writes == []
    return refused.value.render()


def test_a_size_the_region_does_not_offer_is_refused_before_anything_stops(arm_env: FakeArm) -> None:  # noqa: F811
    record = provision("lab")
    arm_env.regions["eastus"].offered.discard("Standard_D8s_v5")
    text = _refused(arm_env, record, "Standard_D8s_v5")
    assert "Standard_D8s_v5 is not offered in eastus" in text and "Nothing was stopped" in text and "--size" in text


def test_quota_is_counted_for_the_added_cores_of_every_node(arm_env: FakeArm) -> None:  # noqa: F811
    record = provision("lab", nodes=2, sizes=["Standard_D2s_v5"])  # 2 x 2 vCPUs of standardDSv5Family
    arm_env.regions["eastus"].limits["standarddsv5family"] = 9
    text = _refused(arm_env, record, "Standard_D8s_v5")  # 2 x 8 = 16 > 9
    assert "quota" in text and "Standard_D8s_v5" in text and "request quota" in text
    _resize(record, "Standard_D4s_v5")  # 2 x 4 = 8: the lab's own 4 cores are not counted twice
    assert _sizes(arm_env) == {"Standard_D4s_v5"}


def test_trusted_launch_networking_and_a_gpu_the_image_cannot_drive_are_refused(arm_env: FakeArm) -> None:  # noqa: F811
    record = provision("lab")
    assert "Standard_ND96asr_v4 has no Trusted Launch" in _refused(arm_env, record, "Standard_ND96asr_v4")
    assert "Standard_B2s has no accelerated networking" in _refused(arm_env, record, "Standard_B2s")
    assert "Standard_D4_v5 takes no Premium SSD" in _refused(arm_env, record, "Standard_D4_v5")
    text = _refused(arm_env, record, "Standard_A4_v2")
    assert "Standard_A4_v2 boots no generation 2 image, which the lab's is" in text
    assert "such as Standard_E4s_v5, Standard_D2s_v5" in text, text  # sizes that fit here, the closest first
    assert "Standard_D4s_v6 takes its disks over NVMe only" in _refused(arm_env, record, "Standard_D4s_v6")
    from tests.fakearm.server import DSVM

    arm_env.image_generations[DSVM] = "V1"  # the image changed since: the VM's own generation counts, as its
    assert "boots no generation 2 image" in _refused(arm_env, record, "Standard_A4_v2")  # instance view says it
    for vm in _vms(arm_env).values():
        vm["_hyperVGeneration"] = None  # an instance view that does not say it: no size is refused for it
    text = _refused(arm_env, record, "Standard_D4s_v6")
    assert "generation" not in text and "Standard_D4s_v6 takes its disks over NVMe only" in text
    with pytest.raises(LabctlError, match="GRID"):
        _resize(record, "Standard_NV36ads_A10_v5")


def test_the_fake_refuses_a_resize_as_arm_does(arm_env: FakeArm) -> None:  # noqa: F811
    from labctl.targets.azure.clients import connect

    provision("lab")
    azure = connect(None)
    ops, (vm,) = azure.compute.virtual_machines, _vms(arm_env).values()
    group = vm["id"].split("/")[4]
    model = ops.get(group, "lab-vm")
    from tests.fakearm.server import DSVM

    arm_env.regions["eastus"].limits["cores"] = 7  # 4 in use, by this VM
    arm_env.image_generations[DSVM] = "V1"  # since the VM was made: a resize keeps the VM's own generation
    refusals = {
        "Standard_D8s_v5": "OperationNotAllowed",
        "Standard_Q9": "SkuNotAvailable",
        "Standard_A4_v2": "cannot boot Hypervisor Generation '2'",
        "Standard_D4s_v6": "cannot boot with DiskControllerType 'SCSI'",  # the VM keeps the controller it was made with
    }
    for size, code in refusals.items():
        model.hardware_profile.vm_size = size
        with pytest.raises(Exception, match=code):
            ops.begin_create_or_update(group, "lab-vm", model).result()
    del arm_env.image_generations[DSVM]
    arm_env.image_features[DSVM] = [f for f in arm_env.image_features[DSVM] if f["name"] != "DiskControllerTypes"]
    model.hardware_profile.vm_size, model.storage_profile.disk_controller_type = "Standard_D4s_v6", None
    model.os_profile.custom_data = None
    arm_env.regions["eastus"].limits["cores"] = 8
    with pytest.raises(Exception, match="cannot boot with OS image or disk"):  # a new VM: the size's NVMe
        ops.begin_create_or_update(group, "other-vm", model).result()
    model.hardware_profile.vm_size = "Standard_D8s_v5"  # 4 more cores: 8 of 8
    ops.begin_create_or_update(group, "lab-vm", model).result()
    assert _sizes(arm_env) == {"Standard_D8s_v5"}


def test_resize_through_the_command_line(arm_env: FakeArm, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    record = provision("lab")
    record.status, record.container_name, record.image = "ready", "labctl-lab", "labctl-lab:abc"
    StateStore().save(record)
    prepared: list[tuple[bool, str | None]] = []
    training = SimpleNamespace(run_id="r1", state="running", resumable=False, resume_off=False)
    monkeypatch.setattr("labctl.workflows.lifecycle.head_runs", lambda record, ui: [training])  # the machine's answer
    monkeypatch.setattr(
        "labctl.workflows.lifecycle.prepare_lab",
        lambda record, ui, image=None: prepared.append((record.gpu, image)) or record,
    )
    monkeypatch.setattr("labctl.idle.settle", lambda record, target, ui: None)
    runner = CliRunner()
    refused = runner.invoke(app, ["resize", "--gpu"])  # a run is training, and nobody is there to answer
    assert refused.exit_code == 2 and "--yes" in refused.output and _sizes(arm_env) == {"Standard_D4s_v5"}
    done = runner.invoke(app, ["resize", "--gpu", "--yes"])
    assert done.exit_code == 0, done.output
    assert (
        "Standard_NC4as_T4_v3" in done.stdout and "stops and starts again" in done.output and "$0.53/h" in done.output
    )
    assert prepared == [(True, None)]  # the container made again as `up` makes it, now with the GPU
    saved = StateStore().load("lab")
    assert saved.status == "ready" and saved.gpu
    status = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
    assert "Standard_NC4as_T4_v3" in json.dumps(status) and "0.526" in json.dumps(status)  # the new $/h


def test_a_lab_of_the_size_asked_is_not_stopped(arm_env: FakeArm) -> None:  # noqa: F811
    record = provision("lab")
    record.status = "ready"
    assert "is a Standard_D4s_v5 already; nothing was stopped" in _refused(arm_env, record, "Standard_D4s_v5")


def test_a_resize_refused_after_the_stop_leaves_the_lab_recorded_stopped_with_the_ways_on(
    arm_env: FakeArm,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = provision("lab")
    record.status = "ready"
    StateStore().save(record)
    monkeypatch.setenv("LABCTL_IMAGE", "example.org/team/lab:1")  # the lab's configured image is kept
    prepared: list[str | None] = []
    monkeypatch.setattr("labctl.workflows.lifecycle.head_runs", lambda record, ui: [])
    monkeypatch.setattr(
        "labctl.workflows.lifecycle.prepare_lab", lambda record, ui, image=None: prepared.append(image) or record
    )
    monkeypatch.setattr("labctl.idle.settle", lambda record, target, ui: None)
    arm_env.inject(method="PUT", path=r"virtualmachines/lab-vm$", status=409, code="OperationNotAllowed", times=1)
    failed = CliRunner().invoke(app, ["resize", "--size", "Standard_D8s_v5", "--yes"])
    assert failed.exit_code == 1 and "is stopped (deallocated) now" in failed.output
    assert "'labctl resize --name lab --size Standard_D8s_v5' again" in failed.output
    assert "--size Standard_D4s_v5' to go back" in failed.output
    assert StateStore().load("lab").status == "stopped" and set(arm_env.power.values()) == {"deallocated"}
    done = CliRunner().invoke(app, ["resize", "--size", "Standard_D8s_v5", "--yes"])  # the way on it named
    assert done.exit_code == 0, done.output
    assert StateStore().load("lab").status == "ready" and _sizes(arm_env) == {"Standard_D8s_v5"}
    assert prepared == ["example.org/team/lab:1"]


def test_a_lab_made_from_an_image_of_its_own_is_made_from_it_again(
    arm_env: FakeArm,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = provision("lab")
    record.status, record.image_asked = "ready", "example.org/team/lab:2"  # as `up --image` leaves it
    StateStore().save(record)
    made: list[str | None] = []
    monkeypatch.setattr("labctl.workflows.lifecycle.head_runs", lambda record, ui: [])
    monkeypatch.setattr("labctl.labhost._prepare_node", lambda record, node, ui, image: made.append(image))
    monkeypatch.setattr("labctl.idle.settle", lambda record, target, ui: None)
    done = CliRunner().invoke(app, ["resize", "--size", "Standard_D8s_v5", "--yes"])
    assert done.exit_code == 0, done.output
    assert made == ["example.org/team/lab:2"] and StateStore().load("lab").image_asked == "example.org/team/lab:2"
