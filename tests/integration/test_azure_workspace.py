"""An Azure lab's /workspace on a managed disk of its own, in the owner's group: attached at LUN 0 with
deleteOption Detach, kept by `down --keep-workspace` (and not counted as left over), attached again by the next
`up` in the disk's region, deleted by `down --delete-workspace` or a plain `down`. The fake ARM answers disks as
DiskRP's published examples do, and refuses the deletion of an attached disk as ARM does."""

from __future__ import annotations

import io
import json

import pytest
import yaml
from azure.core.exceptions import HttpResponseError
from typer.testing import CliRunner

from labctl.cli import app
from labctl.state import StateStore
from labctl.targets.azure import AzureTarget
from labctl.targets.azure.clients import connect
from labctl.ui import PlainReporter
from tests.fakearm import FakeArm
from tests.fakearm.fixtures import arm_env, fake_arm, lab_group, provision  # noqa: F401

pytestmark = pytest.mark.usefixtures("arm_env")
runner = CliRunner()


def _groups(fake: FakeArm) -> tuple[str, str]:
    short = fake.object_id().replace("-", "")[:8]
    return f"labctl-workspaces-{short}", f"/subscriptions/{fake.subscription}/resourceGroups/labctl-workspaces-{short}"


def _disk(fake: FakeArm, lab: str = "lab") -> dict | None:  # type: ignore[type-arg]
    return fake.get(f"{_groups(fake)[1]}/providers/Microsoft.Compute/disks/labctl-{lab}-workspace")


def test_the_workspace_disk_is_attached_kept_attached_again_and_deleted(arm_env: FakeArm) -> None:  # noqa: F811
    plan = runner.invoke(app, ["up", "--dry-run", "--region", "eastus"])
    assert "a managed disk of its own (64 GiB StandardSSD_LRS, ~$4.80/month)" in plan.stdout
    provision("lab", region="eastus")
    disk = _disk(arm_env)
    assert disk is not None and disk["location"] == "eastus" and disk["sku"]["name"] == "StandardSSD_LRS"
    assert disk["properties"]["diskSizeGB"] == 64 and disk["properties"]["diskState"] == "Attached"
    assert disk["tags"]["labctl-lab"] == "lab" and "labctl-lab" not in arm_env.groups[_groups(arm_env)[0]]["tags"]
    vm = arm_env.get(
        f"/subscriptions/{arm_env.subscription}/resourceGroups/{lab_group(arm_env)}/providers/"
        "Microsoft.Compute/virtualMachines/lab-vm"
    )
    assert vm is not None and disk["managedBy"] == vm["id"]
    (data_disk,) = vm["properties"]["storageProfile"]["dataDisks"]
    assert (data_disk["lun"], data_disk["createOption"], data_disk["deleteOption"]) == (0, "Attach", "Detach")
    assert data_disk["managedDisk"]["id"].lower() == disk["id"].lower()
    boot = yaml.safe_load(arm_env.vm_boots[-1].custom_data)
    assert boot["mounts"][0][:2] == ["/dev/disk/azure/scsi1/lun0", "/var/lib/labctl/workspace"]
    # nofail orders the mount before no target: Docker waits for it, or a restarted container binds the empty dir
    assert "x-systemd.before=docker.service" in boot["mounts"][0][3].split(",")
    assert boot["bootcmd"][0][-1] == "/dev/disk/azure/scsi1/lun0" and "mkfs.ext4" in boot["bootcmd"][0][2]
    assert boot["runcmd"][0][-2:] == ["/var/lib/labctl/workspace", "labctl-lab-workspace"]  # arguments, not text

    azure = connect(None)
    with pytest.raises(HttpResponseError, match="is attached to VM"):  # as ARM refuses it
        azure.compute.disks.begin_delete(_groups(arm_env)[0], "labctl-lab-workspace").result()

    asked = runner.invoke(app, ["down", "--keep-workspace"])  # no terminal: what it would delete, and keep
    assert asked.exit_code == 2 and "keeping its workspace: managed disk" in asked.output
    assert "then its workspace disk" not in asked.output
    kept = runner.invoke(app, ["down", "--yes", "--keep-workspace", "--json"])
    assert kept.exit_code == 0, kept.output
    home = json.loads(kept.stdout)["kept_workspace"]
    assert home.startswith("managed disk labctl-lab-workspace in resource group labctl-workspaces-") and "$4.80" in home
    assert lab_group(arm_env) not in arm_env.group_names()  # the lab is gone, its disk is not, and that is no leftover
    disk = _disk(arm_env)
    assert disk is not None and "managedBy" not in disk and disk["properties"]["diskState"] == "Unattached"
    listed = runner.invoke(app, ["list"])
    assert "down, workspace kept" in listed.stdout and "gone from" not in listed.stdout
    assert "Kept workspace of lab lab: managed disk labctl-lab-workspace" in listed.stdout
    assert "~$4.80/month" in runner.invoke(app, ["status"]).stdout
    refused = runner.invoke(app, ["down", "--yes"])
    assert refused.exit_code == 2 and "--delete-workspace" in refused.output and _disk(arm_env) is not None

    # The next `up` asks for another region: the lab goes where the disk is, and says so.
    out = io.StringIO()
    store = StateStore()
    from labctl.spec import LabSpec

    spec = LabSpec(name="lab", region="westus2").validate()
    again = AzureTarget().provision(spec, store.load("lab"), PlainReporter(out), store.save)
    assert again.target_data["region"] == "eastus" and "goes to eastus, not westus2" in out.getvalue()
    assert _disk(arm_env)["managedBy"].endswith("/lab-vm")  # type: ignore[index]
    again.status = "ready"
    store.save(again)

    asked = runner.invoke(app, ["down"])  # no terminal: what it would delete, the disk named
    assert asked.exit_code == 2 and "then its workspace disk labctl-lab-workspace" in asked.output
    gone = runner.invoke(app, ["down", "--yes", "--no-save"])
    assert gone.exit_code == 0, gone.output
    assert arm_env.group_names() == [] and arm_env.resource_ids() == []  # the disk, and its empty group, too


def test_a_kept_disk_goes_with_delete_workspace(arm_env: FakeArm) -> None:  # noqa: F811
    provision("lab", region="eastus")
    assert runner.invoke(app, ["down", "--yes", "--keep-workspace"]).exit_code == 0
    assert _disk(arm_env) is not None and arm_env.resource_ids("virtualMachines") == []
    deleted = runner.invoke(app, ["down", "--yes", "--delete-workspace"])
    assert deleted.exit_code == 0, deleted.output
    assert "without copying it" not in deleted.stdout and "is gone" in deleted.stdout
    assert _disk(arm_env) is None and _groups(arm_env)[0] not in arm_env.group_names()
    assert arm_env.resource_ids() == [] and not StateStore().exists("lab")


def test_a_kept_disk_is_found_without_its_record(arm_env: FakeArm) -> None:  # noqa: F811
    """It is billed, so a lost state file must not hide it: `list` finds it, and `down` deletes it only when told."""
    provision("lab", region="eastus")
    assert runner.invoke(app, ["down", "--yes", "--keep-workspace"]).exit_code == 0
    StateStore().delete("lab")
    listed = runner.invoke(app, ["list", "--json"])
    (row,) = json.loads(listed.stdout)["labs"]
    assert row["status"] == "down, workspace kept" and row["mine"] is True and row["recorded_here"] is False
    assert "~$4.80/month" in row["kept_workspace"]
    refused = runner.invoke(app, ["down", "--yes", "--name", "lab"])
    assert refused.exit_code == 2 and "--delete-workspace" in refused.output and _disk(arm_env) is not None
    deleted = runner.invoke(app, ["down", "--yes", "--name", "lab", "--delete-workspace"])
    assert deleted.exit_code == 0, deleted.output
    assert arm_env.group_names() == [] and arm_env.resource_ids() == []


def test_a_failed_keep_leaves_the_lab_deleting_not_kept(arm_env: FakeArm) -> None:  # noqa: F811
    """Its VM may still run and bill: only a finished deletion makes it 'down, workspace kept'."""
    provision("lab", region="eastus")
    arm_env.inject(method="DELETE", path="resourcegroups/labctl-lab-", status=409, code="Conflict", times=-1)
    failed = runner.invoke(app, ["down", "--yes", "--keep-workspace"])
    assert failed.exit_code == 1 and "Traceback" not in failed.output
    assert StateStore().load("lab").status == "deleting" and arm_env.resource_ids("virtualMachines")
    assert "down, workspace kept" not in runner.invoke(app, ["list"]).stdout
    arm_env.faults.clear()
    assert runner.invoke(app, ["down", "--yes", "--keep-workspace"]).exit_code == 0
    assert StateStore().load("lab").status == "kept" and _disk(arm_env) is not None


def test_a_kept_lab_brought_back_is_billed_from_its_new_start(arm_env: FakeArm) -> None:  # noqa: F811
    """The days it was down cost no compute, and its budget counts from the new VM on."""
    record = provision("lab", region="eastus")
    long_ago = "2026-01-01T00:00:00+00:00"
    record.created_at = record.target_data["created_at"] = long_ago
    record.target_data["power_events"] = [[long_ago, "running", 0.192]]
    record.status = "ready"
    StateStore().save(record)
    assert runner.invoke(app, ["down", "--yes", "--keep-workspace"]).exit_code == 0
    again = provision("lab", region="eastus")
    td = again.target_data
    assert long_ago not in (td["created_at"], td["started_at"])
    assert [event[1] for event in td["power_events"]] == ["running"] and td["power_events"][0][0] != long_ago


def test_a_kept_lab_whose_up_fails_half_way_is_no_longer_kept(arm_env: FakeArm) -> None:  # noqa: F811
    """Its new VM runs and bills: the lab is 'creating', which up resumes and down deletes."""
    record = provision("lab", region="eastus")
    record.created_at = "2026-01-01T00:00:00+00:00"
    StateStore().save(record)
    assert runner.invoke(app, ["down", "--yes", "--keep-workspace"]).exit_code == 0
    arm_env.inject(method="PUT", path="microsoft.devtestlab/schedules", status=400, code="BadRequest", times=-1)
    failed = runner.invoke(app, ["up", "--region", "eastus"])
    assert failed.exit_code == 1 and "comes back with its kept workspace" in failed.output, failed.output
    record = StateStore().load("lab")
    assert record.status == "creating" and arm_env.resource_ids("virtualMachines")
    assert record.created_at != "2026-01-01T00:00:00+00:00"  # the lab is made again, from now
    assert "down, workspace kept" not in runner.invoke(app, ["list"]).stdout


_NEED_THE_LAB = (
    "stop --yes|start|resize --size Standard_D8s_v5 --yes|ssh -- true|pull|push README.md|run-lab --detach|logs"
)


@pytest.mark.parametrize("command", [*_NEED_THE_LAB.split("|"), "idle-stop 30", "open --print", "ssh-config", "fetch"])
def test_commands_that_need_the_lab_say_it_is_down(arm_env: FakeArm, command: str) -> None:  # noqa: F811
    """Only up brings a kept lab back, and down --delete-workspace ends it; every other command says so."""
    provision("lab", region="eastus")
    assert runner.invoke(app, ["down", "--yes", "--keep-workspace"]).exit_code == 0
    refused = runner.invoke(app, command.split())
    assert refused.exit_code == 3, refused.output
    assert "Lab 'lab' is down; only its workspace is kept" in refused.output and "labctl up" in refused.output
    assert _disk(arm_env) is not None and StateStore().load("lab").status == "kept"


def test_a_kept_disk_that_came_back_unmounted_outlives_a_plain_down(arm_env: FakeArm) -> None:  # noqa: F811
    """Its files were never in /workspace (Docker's own volume was), so nothing copied them home: it is kept."""
    provision("lab", region="eastus")
    assert runner.invoke(app, ["down", "--yes", "--keep-workspace"]).exit_code == 0
    again = provision("lab", region="eastus")
    again.target_data["workspace_unbound"], again.status = True, "ready"  # as check_workspace finds it
    StateStore().save(again)
    asked = runner.invoke(app, ["down"])
    assert asked.exit_code == 2 and "then its workspace disk" not in asked.output
    gone = runner.invoke(app, ["down", "--yes", "--no-save"])
    assert gone.exit_code == 0 and "Kept the workspace disk labctl-lab-workspace" in gone.output, gone.output
    assert _disk(arm_env) is not None and lab_group(arm_env) not in arm_env.group_names()
    listed = runner.invoke(app, ["list"])
    assert "Kept workspace of lab lab: managed disk labctl-lab-workspace" in listed.stdout
