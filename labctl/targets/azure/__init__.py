"""The Azure target: a Data Science VM in its own resource group, reachable over SSH from the caller only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from labctl.errors import LabctlError, NotReady, UsageError
from labctl.pricing import VmSize
from labctl.spec import LabSpec
from labctl.state import LabRecord, SaveFn, now_iso
from labctl.targets.azure import inventory, settings
from labctl.targets.azure.plan import (
    WORKSPACE_COST,
    WORKSPACE_MOUNT,
    agent_shutdown,
    azure_data,
    make_plan,
    names_of,
    node_count,
    refuse_grid_only,
    workspace_words,
)
from labctl.targets.base import FoundLab, LabOwner, Target
from labctl.ui import Outcome, Reporter


class AzureTarget(Target):
    kind = "azure"
    label = "Azure"
    owns_machine = True
    settings = ("size", "region", "subscription", "allow_ip")
    off_means = "deallocated: no compute charges; its disk and static IP remain, at small storage charges"
    default_idle_minutes = 60.0
    workspace_kind = f"a managed disk of its own ({WORKSPACE_COST})"

    def __init__(self, azure: Any = None) -> None:
        self._azure = azure  # tests and callers with clients already made pass them in

    def _connect(self, subscription: str | None) -> Any:
        if self._azure is None:
            from labctl.targets.azure.clients import connect

            self._azure = connect(subscription)
        return self._azure

    def _for(self, record: LabRecord) -> Any:
        return self._connect(azure_data(record).get("subscription"))

    def plan(self, spec: LabSpec) -> Outcome:
        from labctl.pricing import lab_prices

        plan, window = make_plan(spec), float(spec.idle_stop or 0)
        data, lines = plan.to_json() | {"idle_stop_minutes": window, "budget_usd": spec.budget}, [plan.render()]
        if window or spec.budget is not None:
            lines += [
                "  idle stop:      "
                + (f"after {window:g} idle minutes" if window else "off")
                + (f", or once ${spec.budget:.2f} is spent" if spec.budget is not None else "")
                + "; the VM deallocates itself with its own identity, whose role may only read and deallocate it",
                "                  (giving it that role needs Owner or User Access Administrator; checked first)",
            ]
        else:
            lines.append("  idle stop:      off (--idle-stop 0); only the daily auto-shutdown stops the VM")
        try:
            prices = lab_prices(plan.regions[0], plan.sizes[0].name, timeout=5.0).for_nodes(plan.nodes)
        except LabctlError as exc:  # no price anywhere: the plan still stands
            data["price_source"] = f"price unknown ({exc.message})"
            return Outcome(data, "\n".join([*lines, f"  prices:         unknown ({exc.message})"]))
        payg = prices.compute_per_hour(bool(spec.spot)) if prices.spot_per_hour or not spec.spot else None
        data.update(price_source=prices.source, usd_per_hour=payg, fixed_usd_per_hour=round(prices.fixed_per_hour, 4))
        cost = f"${payg:.3f}/h while running" if payg is not None else "compute price unknown"
        parts = "disk and IP" if plan.nodes == 1 else f"{plan.nodes} disks, two IPs and the NAT gateway"
        if plan.nodes > 1 and payg is not None:
            cost += f" ({plan.nodes} VMs x ${payg / plan.nodes:.3f}/h)"
        lines.append(f"  prices:         {cost}, ${prices.fixed_per_hour:.3f}/h for {parts}; from {prices.source}")
        return Outcome(data, "\n".join(lines))

    def provision(self, spec: LabSpec, record: LabRecord, ui: Reporter, save: SaveFn) -> LabRecord:
        from labctl.targets.azure.provision import provision

        return provision(spec, record, ui, save, self._azure)

    def destroy(self, record: LabRecord, ui: Reporter, keep_workspace: bool = False) -> None:
        from labctl.keys import forget_lab_keys

        td = azure_data(record)
        if td.get("resource_group") is None and self._azure is None:
            # `up` stopped before creating anything in Azure (bad input, preflight, no login): nothing to delete.
            ui.info(f"Lab '{record.name}' never reached Azure; nothing to delete there.")
        else:
            inventory.destroy_lab(self._for(record), record, ui, keep_workspace)
        if keep_workspace:  # the VM's bill ended with it: the next `up` is priced, and budgeted, from its new VM on
            td.pop("created_at", None), td.pop("started_at", None), td.pop("power_events", None)
        forget_lab_keys(record.name)

    def workspace_home(self, record: LabRecord) -> str | None:
        """None for a lab made before its workspace had a disk of its own: it is on the VM's, and goes with it."""
        td = azure_data(record)
        disk = td.get("workspace_disk")
        return workspace_words(disk, td.get("workspace_region")) if disk and not td.get("workspace_unbound") else None

    def check_workspace(self, record: LabRecord, ui: Reporter) -> None:
        """The volume must bind the mounted disk: one made before cloud-init bound it (a mount that failed, an image
        given with --image started at once) holds the work on the OS disk, which `down --keep-workspace` loses."""
        from labctl.container import volume_name
        from labctl.machine import connect

        td = azure_data(record)
        if not td.get("workspace_disk"):
            return
        with connect(record, ui) as machine:
            volume = machine.docker().volumes.get(volume_name(record.name))
        if (volume.attrs.get("Options") or {}).get("device") == WORKSPACE_MOUNT:
            td.pop("workspace_unbound", None)
            return
        td["workspace_unbound"] = True
        kept = (
            " The kept workspace's files stay on that disk, untouched: 'down' keeps it."
            if td.get("workspace_kept")
            else ""
        )
        ui.warn(
            f"The workspace of lab '{record.name}' is on its VM's OS disk, not on its workspace disk (the disk was "
            f"not mounted when the lab container started): 'down' still copies it home, but it cannot be kept.{kept}"
        )

    def describe(self, record: LabRecord) -> dict[str, Any]:
        if record.status == "kept":  # no VM: only the disk, which `workspace_home` says
            return {"region": azure_data(record).get("workspace_region")}
        return inventory.describe_lab(self._for(record), record)

    def removal(self, record: LabRecord, keep: bool = False) -> str:
        nodes = node_count(record)
        vms = "the VM, its disk" if nodes == 1 else f"its {nodes} VMs, their disks"
        disk = azure_data(record).get("workspace_disk")
        kept = keep or inventory.unseen_workspace(record)
        workspace = f", then its workspace disk {disk.rsplit('/', 1)[1]}" if disk and not kept else ""
        return f"the resource group of lab '{record.name}' and everything in it ({vms}, the network){workspace}"

    def where(self, record: LabRecord) -> tuple[str, str | None]:
        td = azure_data(record)
        size, nodes = td.get("size"), node_count(record)
        return td.get("region") or record.nodes[0].host or "Azure", f"{nodes} x {size}" if size and nodes > 1 else size

    def power_off(self, record: LabRecord, ui: Reporter) -> dict[str, Any]:
        with ui.step(f"Switching off the machine of lab '{record.name}'"):
            facts = inventory.set_power(self._for(record), record, False)
        azure_data(record).pop("started_at", None)
        return facts

    def power_on(self, record: LabRecord, ui: Reporter) -> dict[str, Any]:
        td = azure_data(record)
        td["started_at"] = now_iso()
        with ui.step(f"Starting the machine of lab '{record.name}'"):
            facts = inventory.set_power(self._for(record), record, True)
        if facts.get("public_ip"):
            record.nodes[0].host = str(facts["public_ip"])
        for node in facts.get("nodes") or []:  # private addresses stay with their NICs; kept true all the same
            if node.get("private_ip") and node["node"] < len(record.nodes):
                record.nodes[node["node"]].private_address = str(node["private_ip"])
                if node["node"]:  # a worker is reached at its private address
                    record.nodes[node["node"]].host = str(node["private_ip"])
        return facts

    def resize(self, record: LabRecord, size: VmSize, ui: Reporter, agree: Callable[[], bool]) -> dict[str, Any]:
        from labctl.targets.azure.clients import arm, finish
        from labctl.targets.azure.preflight import check_resize, from_sku

        refuse_grid_only([size])
        td, azure, names = azure_data(record), self._for(record), names_of(record)
        region, spot, rg = str(td.get("region")), bool(td.get("spot")), names.resource_group
        with arm("reading the lab's VMs"):
            vms = [azure.compute.virtual_machines.get(rg, names.name("vm", n)) for n in range(node_count(record))]
        now = str(vms[0].hardware_profile.vm_size)
        if record.status == "ready" and {str(vm.hardware_profile.vm_size).lower() for vm in vms} == {size.name.lower()}:
            raise UsageError(
                f"Lab '{record.name}' is a {now} already; nothing was stopped.", hint="Pick another --size."
            )
        sku = check_resize(azure, record, vms, size)
        size = from_sku(size, sku, region)
        ui.warn(f"Every VM of lab '{record.name}' stops and starts again, as a {size.describe()}.")
        if not agree():
            return {}
        self.power_off(record, ui)
        record.status = "stopped"  # from here on a failure leaves the lab stopped, and says how to go on
        try:
            with ui.step(f"Resizing to {size.name}"), arm(f"resizing the VMs to {size.name}"):
                for vm in vms:  # as 'az vm resize' does: the VM as read, its size changed, PUT again
                    vm.hardware_profile.vm_size = size.name
                for poller in [azure.compute.virtual_machines.begin_create_or_update(rg, vm.name, vm) for vm in vms]:
                    finish(poller)
            td.update({"size": size.name, "usd_per_hour": size.hourly(spot) * len(vms)})
            record.gpu = size.gpu
            return self.power_on(record, ui)
        except LabctlError as exc:
            raise LabctlError(
                f"{exc.message} Lab '{record.name}' is stopped (deallocated) now.",
                hint=f"Run 'labctl resize --name {record.name} --size {size.name}' again to finish, or "
                f"'labctl resize --name {record.name} --size {now}' to go back.",
            ) from exc

    def find_labs(self, subscription: str | None) -> list[FoundLab]:
        return inventory.find_labs(self._connect(subscription))

    def recover_record(self, name: str, subscription: str | None = None) -> LabRecord:
        return inventory.record_from_azure(self._connect(subscription), name)

    def owner_of(self, record: LabRecord) -> LabOwner:
        td = azure_data(record)
        if td.get("resource_group") is None and td.get("owner") is None and self._azure is None:
            return LabOwner(None, True, "you")  # `up` stopped before Azure: nothing there to be anyone's
        return inventory.owner_of(self._for(record), record)

    def idle_agent(self, record: LabRecord) -> dict[str, Any]:
        if not record.idle.get("granted"):
            why = record.idle.get("why_not") or "the VM has no idle-stop role"
            raise LabctlError(
                f"The VM of lab '{record.name}' cannot stop itself when idle: {why}.",
                hint="Its daily auto-shutdown still applies. 'labctl down' and 'labctl up' with the rights to "
                "assign roles (Owner or User Access Administrator) gives it idle stop.",
            )
        endpoint, td = settings.arm_endpoint(), azure_data(record)
        extras: dict[str, Any] = {"mode": "azure", "arm_url": endpoint, "arm_resource": f"{endpoint}/"}
        extras["spot"] = bool(td.get("spot"))  # its agent watches for the eviction notice
        if (at := td.get("shutdown_at")) and (zone := td.get("shutdown_time_zone")):  # checkpointed before it
            extras.update(agent_shutdown(at, td.get("shutdown_hhmm"), zone))
        # Node 0 stops its workers with itself (its identity holds their role).
        if td.get("vm_id") and len(record.nodes) > 1:
            extras["node_vms"] = [names_of(record).id("vm", node) for node in range(1, node_count(record))]
        if record.idle.get("budget_usd") is not None:
            from labctl.pricing import lab_prices

            prices = lab_prices(str(td.get("region")), str(td.get("size"))).for_nodes(node_count(record))
            extras["usd_per_hour"] = prices.compute_per_hour(bool(td.get("spot")))
            extras["rates"] = inventory.rates(record, extras["usd_per_hour"])
            extras["fixed_usd_per_hour"] = prices.fixed_per_hour
            extras["created_at"] = td.get("created_at") or record.created_at
        return extras

    def explain_unreachable(self, record: LabRecord) -> LabctlError | None:
        """A VM that does not answer is most often deallocated (auto-shutdown)."""
        try:
            power = inventory.describe_lab(self._for(record), record).get("power_state")
        except LabctlError:
            return None
        if not power or power == "running":
            return None
        shutdown = azure_data(record).get("shutdown_at")
        why = f" (its auto-shutdown is at {shutdown})" if shutdown else ""
        return NotReady(
            f"The VM of lab '{record.name}' is {power}{why}.",
            hint=f"'labctl start --name {record.name}' brings it back with the same address and keys.",
        )
