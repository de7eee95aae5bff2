# ruff: noqa: E501  (error messages are kept whole, as ARM words them)
"""A fake Azure Resource Manager (plus an AAD-like token endpoint) that the real azure-identity and azure-mgmt
clients talk to over HTTPS on 127.0.0.1.

It answers in the shapes of the published ARM examples (see ``../shared/azure-arm-examples/``): PUTs answer
201/200 with ``provisioningState`` and an ``Azure-AsyncOperation`` header, DELETEs and POST actions answer 202
with a ``Location`` monitor, errors come as ``{"error": {"code", "message"}}``. It keeps an inventory of resource
groups and resources (with tags) so tests can check what a flow leaves behind, takes time per resource type
(latencies), and injects faults: HTTP errors with headers (429 + Retry-After, 500), quota and SKU refusals,
allocation failures of a VM create, dropped connections.

When a VM's creation completes, ``on_vm_created`` (if set) receives a :class:`VmBoot` with the decoded
cloud-init and the admin user's key; it may return the address to report as the VM's public IP (an
end-to-end test starts a real sshd with the host key and returns ``127.0.0.1``). When a VM is deleted,
``on_vm_deleted`` (if set) receives its name, so what stood for the machine can go with it.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from tests.fakearm.apiversions import API_VERSIONS, refusal, request_location, resource_type
from tests.fakearm.events import EVENTS_ROUTES, EventsHandlers, ScheduledEvents
from tests.fakearm.openapi import problems
from tests.fakearm.rbac import BUILTIN_ROLES, RBAC_ROUTES, RbacHandlers, covers, permitted, required, role_allows
from tests.fakearm.shapes import SIZE_TABLE, WINDOWS_TIME_ZONES, sku_json
from tests.fakearm.tls import make_certificates

# Types whose PUT is not a long-running operation: ARM answers 200/201 with the resource as it is, no
# provisioningState (ProximityPlacementGroups_CreateOrUpdate).
SYNCHRONOUS_TYPES = frozenset({"proximityplacementgroups"})
NEW_STATES = {"virtualnetworks": "Updating", "networkinterfaces": "Succeeded"}  # what a PUT answers, if not Creating
FORCE_DELETION_TYPES = ("Microsoft.Compute/virtualMachines", "Microsoft.Compute/virtualMachineScaleSets")
DEFAULT_REGIONS = ("eastus", "eastus2", "westus2", "westus3", "westeurope", "northeurope")
DSVM = ("microsoft-dsvm", "ubuntu-2204", "2204-gen2")
DSVM_FEATURES = (
    {"name": "SecurityType", "value": "TrustedLaunchSupported"},
    {"name": "IsAcceleratedNetworkSupported", "value": "True"},
    {"name": "DiskControllerTypes", "value": "SCSI, NVMe"},
)


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class Fault:
    """Answer matching requests with an error (or drop the connection) instead of handling them."""

    method: str | None = None  # None: any
    path: str = ""  # a regular expression searched in the (lower-cased) path
    status: int = 500
    code: str = "InternalServerError"
    message: str = "The server encountered an internal error."
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1  # how many matching requests fail; -1: all
    skip: int = 0  # let this many matching requests through first
    drop: bool = False  # close the connection without answering
    body: bytes | None = None  # answer ``status`` with these bytes as the JSON body (a broken answer)
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and re.search(self.path, path.lower()) is not None


@dataclass
class RegionConfig:
    offered: set[str] = field(default_factory=lambda: set(SIZE_TABLE))
    restricted: dict[str, str] = field(default_factory=dict)  # size -> reasonCode
    zones_restricted: dict[str, list[str]] = field(default_factory=dict)  # size -> zones not offered
    limits: dict[str, int] = field(default_factory=dict)  # usage name (lower) -> limit
    default_limit: int = 100
    used: dict[str, int] = field(default_factory=dict)  # usage outside labctl's VMs

    def limit(self, name: str) -> int:
        return self.limits.get(name.lower(), self.default_limit)


@dataclass
class VmBoot:
    """What a real VM would boot with: the decoded cloud-init and the admin login."""

    name: str
    resource_group: str
    size: str
    admin_user: str
    authorized_keys: list[str]
    custom_data: str
    host_private_key: str | None
    host_public_key: str | None
    private_address: str | None = None  # its NIC's address in the lab's subnet
    public: bool = True  # whether its NIC has a public IP (a worker node's has none)
    # Whether it can reach the internet (pull images, apt, pip): a public IP, a NAT gateway on its subnet, or a
    # subnet with default outbound access (private by default from network api-version 2025-07-01).
    outbound: bool = True


@dataclass
class Op:
    id: str
    done_at: float
    kind: str  # "put" | "delete" | "action" | "rg-delete"
    resource_id: str
    error: dict[str, str] | None = None
    action: str | None = None
    finished: bool = False
    started: str = field(default_factory=utcnow)


class FakeArm:
    def __init__(self, workdir: Path, *, subscriptions: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.tenant = "72f988bf-0000-4000-8000-000000000001"
        self.client_id = "5f2d3f4e-0000-4000-8000-0000000000c1"
        self.client_secret = "fake-secret-" + uuid.uuid4().hex
        # client id -> (secret, object id, display name): the service principals that can log in. Each token
        # is a JWT whose payload carries the principal's `oid`, `tid` and `appid`, as Entra ID's tokens do.
        self.principals: dict[str, tuple[str, str, str]] = {
            self.client_id: (self.client_secret, "a0a0a0a0-1111-4222-8333-444444444444", "lab-tests-a")
        }
        self.subscriptions = subscriptions or {"11111111-2222-4333-8444-555555555555": "Lab subscription"}
        # subscription id -> state (Enabled, Warned, PastDue, Disabled, Deleted); Enabled when not named
        self.subscription_states: dict[str, str] = {}
        self.regions: dict[str, RegionConfig] = {r: RegionConfig() for r in DEFAULT_REGIONS}
        self.images: dict[tuple[str, str, str], list[str]] = {DSVM: ["25.01.01", "25.03.10"]}
        # An image's `features` (VirtualMachineImageProperties.features); Trusted Launch is refused for an image
        # whose SecurityType does not name it, as ARM does.
        self.image_features: dict[tuple[str, str, str], list[dict[str, str]]] = {DSVM: list(DSVM_FEATURES)}
        self.image_plans: dict[tuple[str, str, str], dict[str, str]] = {}
        self.image_generations: dict[tuple[str, str, str], str] = {}  # an image's hyperVGeneration, where not "V2"
        self.agreements: dict[str, bool] = {}
        self.latency: dict[str, float] = {}  # lower-case resource type ("virtualmachines") -> seconds
        # "[METHOD ]regex on the lower-cased path" -> seconds added to each matching request
        self.request_latency: dict[str, float] = {}
        self.public_ip = "198.51.100.23"  # what the IP echo answers
        self.managed_identity = False  # whether the metadata endpoint hands out tokens (unrestricted ones)
        # The VM (resource id) whose instance metadata the metadata endpoint serves: its tokens are its own
        # system-assigned identity's, and ARM checks that identity's roles (see tests/fakearm/rbac.py).
        self.imds_vm: str | None = None
        self.scheduled_events = ScheduledEvents()  # that VM's (tests/fakearm/events.py)
        self.token_principals: dict[str, str] = {}  # managed-identity token -> principal id
        self.role_definitions: dict[str, dict[str, Any]] = {}  # lower id -> role definition JSON
        self.role_assignments: dict[str, dict[str, Any]] = {}  # lower id -> role assignment JSON
        self.caller_role = "Owner"  # the user login's built-in role on the subscription (rbac.BUILTIN_ROLES)
        # ARM's behaviours that labctl copes with: on by default.
        # Lower namespaces not registered (MissingSubscriptionRegistration): a new subscription lacks DevTestLab.
        self.unregistered_providers: set[str] = {"microsoft.devtestlab"}
        self.registration_s = 0.0  # how long a registration answers Registering before it takes effect
        self.registered_at: dict[str, float] = {}  # lower namespace -> when its registration takes effect
        self.role_replication_s = 0.3  # a new custom role is unknown to assignments for this long (ARM: seconds)
        self.tag_filter_drops_tags = True  # a tag-filtered resource list answers without the resources' tags
        self.assignments_outlive_scope = True  # a deleted resource or group leaves its role assignments behind
        self.role_born: dict[str, float] = {}  # lower role definition id -> when it was first put
        self.faults: list[Fault] = []
        # resource type -> the api-versions accepted for it (see tests/fakearm/apiversions.py)
        self.api_versions: dict[str, frozenset[str]] = dict(API_VERSIONS)
        self.alloc_failures: list[dict[str, Any]] = []
        self.on_vm_created: Callable[[VmBoot], str | None] | None = None
        self.vm_boots: list[VmBoot] = []
        self.on_vm_deleted: Callable[[str], None] | None = None
        self.requests: list[tuple[str, str]] = []
        self.request_headers: list[tuple[str, str, dict[str, str]]] = []  # requests with headers (lower-case names)
        # Called with (method, path) before each request is handled: a test plays another actor there (a portal
        # user deleting the group, another deployment using the quota) at the very moment labctl gets there.
        self.on_request: Callable[[str, str], None] | None = None
        self.rg_deletes: list[tuple[str, str | None]] = []  # (group, forceDeletionTypes) of each group DELETE
        self.tokens: set[str] = set()
        self.groups: dict[str, dict[str, Any]] = {}  # lower name -> RG JSON (+ "_sub")
        self.resources: dict[str, dict[str, Any]] = {}  # lower id -> resource JSON
        self.power: dict[str, str] = {}  # lower VM id -> running | deallocated | ...
        self.ops: dict[str, Op] = {}
        self._ip_pool = itertools.count(10)
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self.ca_path, cert, key = make_certificates(workdir / "tls")
        self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ssl.load_cert_chain(cert, key)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeArm:
        fake = self

        class Handler(_Handler):
            arm = fake

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.socket = self._ssl.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), name="fakearm", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    @property
    def subscription(self) -> str:
        return next(iter(self.subscriptions))

    def env(self) -> dict[str, str]:
        """Environment for labctl: the real credential chain (service principal) pointed at this server."""
        return {
            "LABCTL_ARM_ENDPOINT": self.url,
            "AZURE_AUTHORITY_HOST": self.url,
            "AZURE_TENANT_ID": self.tenant,
            "AZURE_CLIENT_ID": self.client_id,
            "AZURE_CLIENT_SECRET": self.client_secret,
            "REQUESTS_CA_BUNDLE": str(self.ca_path),
            "SSL_CERT_FILE": str(self.ca_path),
            "LABCTL_IP_ECHO_URL": f"{self.url}/ip",
        }

    # ------------------------------------------------------------------ test helpers

    def add_principal(self, display_name: str, object_id: str | None = None) -> dict[str, str]:
        """Another service principal that can log in; the environment variables that log in as it."""
        client_id, secret = str(uuid.uuid4()), "fake-secret-" + uuid.uuid4().hex
        with self._lock:
            self.principals[client_id] = (secret, object_id or str(uuid.uuid4()), display_name)
        return {"AZURE_CLIENT_ID": client_id, "AZURE_CLIENT_SECRET": secret}

    def object_id(self, client_id: str | None = None) -> str:
        """The object id (`oid`) of a principal's tokens; the default login's when no client id is given."""
        return self.principals[client_id or self.client_id][1]

    def access_token(self, client_id: str) -> str:
        """A service principal's token."""
        _, oid, name = self.principals[client_id]
        return self.issue_token(oid, name, client_id)

    def issue_token(self, oid: str, name: str, appid: str) -> str:
        """A JWT shaped like Entra ID's access tokens (unsigned: only this server checks it, by lookup)."""

        def part(data: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

        now = int(time.time())
        claims = {
            "aud": self.url,
            "iss": f"https://sts.windows.net/{self.tenant}/",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "appid": appid,
            "app_displayname": name,
            "oid": oid,
            "sub": oid,
            "tid": self.tenant,
            "uti": uuid.uuid4().hex,
        }
        token = f"{part({'typ': 'JWT', 'alg': 'none'})}.{part(claims)}.fake-signature"
        with self._lock:
            self.tokens.add(token)
        return token

    def inject(self, **kwargs: Any) -> Fault:
        fault = Fault(**kwargs)
        with self._lock:
            self.faults.append(fault)
        return fault

    def fail_allocation(
        self,
        size: str | None = None,
        region: str | None = None,
        times: int = 1,
        code: str = "AllocationFailed",
        vm: str | None = None,
    ) -> None:
        """Make the next VM creates (of this size / in this region / of the VM named ``vm``) fail asynchronously,
        as capacity does."""
        self.alloc_failures.append({"size": size, "region": region, "times": times, "code": code, "vm": vm})

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p in self.requests if m == method and re.search(pattern, p.lower()))

    def settle(self) -> None:
        with self._lock:
            self._tick()

    def resource_ids(self, type_fragment: str = "") -> list[str]:
        self.settle()
        return [r["id"] for r in self.resources.values() if type_fragment.lower() in r["type"].lower()]

    def remove_group(self, name: str) -> None:
        """Delete a resource group and all in it at once, as another user's finished deletion leaves it."""
        with self._lock:
            self._finish(Op("removed-by-test", 0.0, "rg-delete", name.lower()))

    def group_names(self) -> list[str]:
        self.settle()
        return [g["name"] for g in self.groups.values()]

    def lab_group_names(self) -> list[str]:
        """The labs' groups, not their owners' groups of workspace disks."""
        return [name for name in self.group_names() if not name.startswith("labctl-workspaces-")]

    def get(self, resource_id: str) -> dict[str, Any] | None:
        self.settle()
        return self.resources.get(resource_id.lower())

    def known_principals(self) -> set[str]:
        """Principals a role can be assigned to: the login's service principal and every VM identity."""
        found = {self.client_id}
        for res in self.resources.values():
            principal = (res.get("identity") or {}).get("principalId")
            if principal:
                found.add(principal)
        return found

    def vm_principal(self, vm_id: str) -> str | None:
        """The principal id of a VM's system-assigned identity."""
        return ((self.get(vm_id) or {}).get("identity") or {}).get("principalId")

    def vm_usage(self, region: str) -> dict[str, int]:
        usage: dict[str, int] = {}
        for res in self.resources.values():
            if res["type"] != "Microsoft.Compute/virtualMachines" or res["location"] != region:
                continue
            # A deallocated VM still holds its cores: "Quotas are calculated based on the total number of cores in
            # use, both allocated and deallocated" (learn.microsoft.com/azure/virtual-machines/quotas).
            if res["properties"].get("provisioningState") == "Failed":
                continue
            shape = SIZE_TABLE.get(res["properties"]["hardwareProfile"]["vmSize"])
            vcpus, family = (shape.vcpus, shape.family) if shape else (0, "unknown")
            spot = res["properties"].get("priority") == "Spot"
            for name in ["lowprioritycores"] if spot else [family.lower(), "cores"]:
                usage[name] = usage.get(name, 0) + vcpus
        return usage

    # ------------------------------------------------------------------ time

    def provider_state(self, namespace: str) -> str:
        ns = namespace.lower()
        if ns in self.registered_at and self.registered_at[ns] <= time.monotonic():
            self.unregistered_providers.discard(ns)
            del self.registered_at[ns]
        if ns not in self.unregistered_providers:
            return "Registered"
        return "Registering" if ns in self.registered_at else "NotRegistered"

    def _tick(self) -> None:
        now = time.monotonic()
        for op in list(self.ops.values()):
            if op.finished or op.done_at > now:
                continue
            op.finished = True
            self._finish(op)

    def _finish(self, op: Op) -> None:
        rid = op.resource_id.lower()
        if op.kind == "put":
            res = self.resources.get(rid)
            if res is None:
                return
            if op.error:
                res["properties"]["provisioningState"] = "Failed"
                if res["type"] == "Microsoft.Compute/virtualMachines":
                    self.power[rid] = "stopped"
                return
            res["properties"]["provisioningState"] = "Succeeded"
            res["_since"] = utcnow()
            if res["type"] == "Microsoft.Network/publicIPAddresses" and not res["properties"].get("ipAddress"):
                res["properties"]["ipAddress"] = f"203.0.113.{next(self._ip_pool)}"
            if res["type"] == "Microsoft.Compute/virtualMachines" and rid not in self.power:
                self.power[rid] = "running"
                self._boot(res)
        elif op.kind == "delete":
            self._remove(rid)
        elif op.kind == "rg-delete":
            group = self.groups.pop(rid, None)
            if group is not None:
                prefix = f"/subscriptions/{group['_sub']}/resourcegroups/{group['name']}/".lower()
                self._drop_assignments(prefix)
                for key in [k for k in self.resources if k.startswith(prefix)]:
                    self._remove(key)
        elif op.kind == "action" and not op.error:
            self.power[rid] = {"deallocate": "deallocated", "start": "running", "poweroff": "stopped"}[op.action or ""]
            if rid in self.resources:
                self.resources[rid]["_since"] = utcnow()  # the instance view dates its last operation

    def _remove(self, rid: str) -> None:
        res = self.resources.pop(rid, None)
        self._drop_assignments(rid)
        self.power.pop(rid, None)
        if res and res["type"] == "Microsoft.Compute/virtualMachines":
            props = res["properties"]
            ppg = self.resources.get(str((props.get("proximityPlacementGroup") or {}).get("id", "")).lower())
            if ppg is not None:
                members = ppg["properties"].get("virtualMachines", [])
                ppg["properties"]["virtualMachines"] = [m for m in members if m.get("id", "").lower() != rid]
            os_disk = props["storageProfile"].get("osDisk", {})
            if os_disk.get("deleteOption") == "Delete":
                self.resources.pop(self._disk_id(res).lower(), None)
            else:  # a detached disk is no longer managed by the VM
                (self.resources.get(self._disk_id(res).lower()) or {}).pop("managedBy", None)
            for data_disk in props["storageProfile"].get("dataDisks") or []:
                disk_id = str((data_disk.get("managedDisk") or {}).get("id", "")).lower()
                if data_disk.get("deleteOption") == "Delete":
                    self.resources.pop(disk_id, None)
                elif disk := self.resources.get(disk_id):  # Detach (the default): it stays, unattached
                    disk.pop("managedBy", None)
                    disk["properties"]["diskState"] = "Unattached"
            for nic in props.get("networkProfile", {}).get("networkInterfaces", []):
                if (nic.get("properties") or {}).get("deleteOption") == "Delete":
                    self.resources.pop(nic["id"].lower(), None)
            if self.on_vm_deleted is not None:
                self.on_vm_deleted(res["name"])

    def _subnet_way_out(self, subnet_id: str) -> bool:
        """A NAT gateway, or default outbound access (which a subnet made without saying has not: 2025-07-01+)."""
        vnet = self.resources.get(subnet_id.lower().split("/subnets/")[0]) or {}
        for subnet in vnet.get("properties", {}).get("subnets", []):
            if subnet["id"].lower() == subnet_id.lower():
                props = subnet.get("properties") or {}
                return bool(props.get("natGateway")) or props.get("defaultOutboundAccess") is not False
        return False

    def _drop_assignments(self, scope: str) -> None:
        """Role assignments under a deleted scope stay, orphaned, as in Azure; unless a test says otherwise."""
        if not self.assignments_outlive_scope:
            for key in [k for k, a in self.role_assignments.items() if covers(scope, a["properties"]["scope"])]:
                del self.role_assignments[key]

    def _disk_id(self, vm: dict[str, Any]) -> str:
        base = vm["id"].split("/providers/")[0]
        name = vm["properties"]["storageProfile"].get("osDisk", {}).get("name") or f"{vm['name']}_OsDisk"
        return f"{base}/providers/Microsoft.Compute/disks/{name}"

    def _boot(self, vm: dict[str, Any]) -> None:
        props = vm["properties"]
        os_profile = props.get("osProfile", {})
        text = base64.b64decode(vm.get("_customData", "") or "").decode()
        private = public = None
        try:
            import yaml

            doc = yaml.safe_load(text) or {}
            keys = doc.get("ssh_keys") or {}
            private, public = keys.get("ed25519_private"), keys.get("ed25519_public")
        except Exception:
            pass
        keys_ = [k["keyData"] for k in os_profile.get("linuxConfiguration", {}).get("ssh", {}).get("publicKeys", [])]
        boot = VmBoot(
            name=vm["name"],
            resource_group=vm["id"].split("/")[4],
            size=props["hardwareProfile"]["vmSize"],
            admin_user=os_profile.get("adminUsername", ""),
            authorized_keys=keys_,
            custom_data=text,
            host_private_key=private,
            host_public_key=public,
        )
        for nic in props.get("networkProfile", {}).get("networkInterfaces", []):
            for cfg in (self.resources.get(nic["id"].lower()) or {}).get("properties", {}).get("ipConfigurations", []):
                cfg_props = cfg.get("properties") or {}
                boot.private_address = boot.private_address or cfg_props.get("privateIPAddress")
                boot.public = bool(cfg_props.get("publicIPAddress"))
                boot.outbound = boot.public or self._subnet_way_out(str((cfg_props.get("subnet") or {}).get("id")))
        self.vm_boots.append(boot)
        if self.on_vm_created is not None:
            address = self.on_vm_created(boot)
            if address:
                for nic in props.get("networkProfile", {}).get("networkInterfaces", []):
                    nic_res = self.resources.get(nic["id"].lower())
                    for cfg in (nic_res or {}).get("properties", {}).get("ipConfigurations", []):
                        pip_ref = (cfg.get("properties") or {}).get("publicIPAddress")
                        pip = self.resources.get(pip_ref["id"].lower()) if pip_ref else None
                        if pip:
                            pip["properties"]["ipAddress"] = address


class ArmError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


_RG = r"/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)"
ROUTES: list[tuple[str, str, str]] = [
    ("GET", r"^/ip$", "echo_ip"),
    ("GET", r"^/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration$", "openid"),
    ("POST", r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/token$", "token"),
    ("GET", r"^/metadata/identity/oauth2/token$", "imds_token"),
    *RBAC_ROUTES,
    *EVENTS_ROUTES,
    ("GET", r"^/fakearm/operations/(?P<op>[^/]+)$", "op_status"),
    ("GET", r"^/fakearm/operationresults/(?P<op>[^/]+)$", "op_result"),
    ("GET", r"^/subscriptions$", "list_subscriptions"),
    ("GET", r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups$", "list_groups"),
    ("GET", r"^/subscriptions/(?P<sub>[^/]+)/resources$", "list_resources"),
    ("GET", r"^/subscriptions/(?P<sub>[^/]+)/providers/(?P<ns>[^/]+)$", "provider"),
    ("POST", r"^/subscriptions/(?P<sub>[^/]+)/providers/(?P<ns>[^/]+)/register$", "provider"),
    ("GET", r"^/subscriptions/(?P<sub>[^/]+)/providers/microsoft\.compute/skus$", "skus"),
    ("GET", r"^/subscriptions/(?P<sub>[^/]+)/providers/microsoft\.compute/locations/(?P<loc>[^/]+)/usages$", "usages"),
    (
        "GET",
        r"^/subscriptions/(?P<sub>[^/]+)/providers/microsoft\.compute/locations/(?P<loc>[^/]+)/publishers/(?P<pub>[^/]+)"
        r"/artifacttypes/vmimage/offers/(?P<offer>[^/]+)/skus/(?P<sku>[^/]+)/versions(?:/(?P<version>[^/]+))?$",
        "images",
    ),
    (
        "*",
        r"^/subscriptions/(?P<sub>[^/]+)/providers/microsoft\.marketplaceordering/offertypes/virtualmachine"
        r"/publishers/(?P<pub>[^/]+)/offers/(?P<offer>[^/]+)/plans/(?P<plan>[^/]+)/agreements/current$",
        "agreement",
    ),
    ("*", rf"^{_RG}$", "group"),
    ("GET", rf"^{_RG}/resources$", "list_group_resources"),
    ("GET", rf"^{_RG}/providers/microsoft\.compute/virtualmachines/(?P<name>[^/]+)/instanceview$", "instance_view"),
    (
        "POST",
        rf"^{_RG}/providers/microsoft\.compute/virtualmachines/(?P<name>[^/]+)/(?P<action>deallocate|start|poweroff)$",
        "vm_action",
    ),
    ("*", rf"^{_RG}/providers/(?P<ns>[^/]+)/(?P<type>[^/]+)/(?P<name>[^/]+)$", "resource"),
]

TYPE_NAMES = {
    "microsoft.network/virtualnetworks": "Microsoft.Network/virtualNetworks",
    "microsoft.network/networksecuritygroups": "Microsoft.Network/networkSecurityGroups",
    "microsoft.network/publicipaddresses": "Microsoft.Network/publicIPAddresses",
    "microsoft.network/networkinterfaces": "Microsoft.Network/networkInterfaces",
    "microsoft.network/natgateways": "Microsoft.Network/natGateways",
    "microsoft.compute/virtualmachines": "Microsoft.Compute/virtualMachines",
    "microsoft.compute/disks": "Microsoft.Compute/disks",
    "microsoft.compute/proximityplacementgroups": "Microsoft.Compute/proximityPlacementGroups",
    "microsoft.devtestlab/schedules": "Microsoft.DevTestLab/schedules",
}


class _Handler(RbacHandlers, EventsHandlers, BaseHTTPRequestHandler):
    arm: FakeArm
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr log
        pass

    # ------------------------------------------------------------------ plumbing

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _send(
        self, status: int, body: Any = None, headers: dict[str, str] | None = None, json_bytes: bool = False
    ) -> None:
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        self.send_response(status)
        ctype = "text/plain" if isinstance(body, bytes) and not json_bytes else "application/json; charset=utf-8"
        self.send_header("Content-Type", ctype)
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, err: ArmError) -> None:
        self._send(err.status, {"error": {"code": err.code, "message": err.message}}, err.headers)

    def _dispatch(self, method: str) -> None:
        arm = self.arm
        split = urlsplit(self.path)
        path = unquote(split.path).rstrip("/") or "/"
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        arm.requests.append((method, path))
        arm.request_headers.append((method, path, {k.lower(): v for k, v in self.headers.items()}))
        if arm.on_request is not None:
            with arm._lock:
                arm.on_request(method, path)
        for key, delay in arm.request_latency.items():
            verb, _, pattern = key.rpartition(" ")  # "PUT resourcegroups/x$" or just a pattern
            if verb in ("", method) and re.search(pattern, path.lower()):
                time.sleep(delay)
        with arm._lock:
            fault = next(
                (f for f in arm.faults if f.matches(method, path) and (f.times < 0 or f.hits < f.skip + f.times)), None
            )
            if fault is not None:
                fault.hits += 1
                if fault.hits <= fault.skip:
                    fault = None
        if fault is not None:
            if fault.drop:
                self.close_connection = True
                self.connection.close()
                return
            if fault.body is not None:
                self._send(fault.status, fault.body, fault.headers, json_bytes=True)
            else:
                self._error(ArmError(fault.status, fault.code, fault.message, fault.headers))
            return
        for route_method, pattern, handler in ROUTES:
            if route_method not in ("*", method) and not (method == "HEAD" and route_method == "*"):
                continue
            match = re.match(pattern, path, re.IGNORECASE)
            if match is None:
                continue
            public = handler in ("echo_ip", "openid", "token", "imds_token", "imds_instance", "imds_events")
            if not public and not self._authorized():
                self._error(
                    ArmError(
                        401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
                    )
                )
                return
            try:
                if not public and "sub" in match.groupdict() and match["sub"] not in arm.subscriptions:
                    raise ArmError(
                        404, "SubscriptionNotFound", f"The subscription '{match['sub']}' could not be found."
                    )
                with arm._lock:
                    arm._tick()
                    if not public:
                        self._check_api_version(handler, match.groupdict(), query, raw)
                        self._check_registration(handler, match.groupdict())
                        self._check_identity(handler, method, match.groupdict())
                    result = getattr(self, "h_" + handler)(method, match.groupdict(), query, raw)
            except ArmError as err:
                self._error(err)
                return
            status, body, headers = result
            self._send(status, body, headers)
            return
        self._error(ArmError(404, "InvalidResourceType", f"The fake ARM does not serve {method} {path}."))

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        return header.startswith("Bearer ") and header[7:] in self.arm.tokens

    def _check_api_version(self, handler: str, m: dict[str, str], q: dict[str, str], raw: bytes) -> None:
        """Refuse an api-version the resource type has not registered, as ARM does before routing."""
        rtype = resource_type(handler, m, TYPE_NAMES)
        if rtype is None:
            return
        where = request_location(m, self.arm.groups, raw)
        refused = refusal(self.arm.api_versions, rtype, q.get("api-version"), where, list(self.arm.regions))
        if refused is not None:
            raise ArmError(400, *refused)

    def _check_registration(self, handler: str, m: dict[str, str]) -> None:
        """A provider namespace the subscription has not registered answers MissingSubscriptionRegistration."""
        rtype = resource_type(handler, m, TYPE_NAMES) or ""
        namespace = rtype.split("/")[0]
        if handler != "provider" and namespace and self.arm.provider_state(namespace) != "Registered":
            raise ArmError(
                409,
                "MissingSubscriptionRegistration",
                f"The subscription is not registered to use namespace '{namespace}'. See https://aka.ms/rps-not-found for how to register subscriptions.",
            )

    def _check_identity(self, handler: str, method: str, m: dict[str, str]) -> None:
        """A managed identity's token does only what its role assignments allow, as in Azure."""
        principal = self.arm.token_principals.get(self.headers.get("Authorization", "")[7:])
        action, scope = required(handler, method, m, TYPE_NAMES)
        if principal is None:
            if not role_allows({"properties": {"permissions": BUILTIN_ROLES[self.arm.caller_role]}}, action):
                who = self.arm.client_id
                raise ArmError(
                    403,
                    "AuthorizationFailed",
                    f"The client '{who}' with object id '{who}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
                )
            return
        if not permitted(self.arm, principal, action, scope):
            raise ArmError(
                403,
                "AuthorizationFailed",
                f"The client '{principal}' with object id '{principal}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            )

    def _json(self, raw: bytes) -> dict[str, Any]:
        try:
            return dict(json.loads(raw or b"{}"))
        except ValueError:
            raise ArmError(
                400, "InvalidRequestContent", "The request content was invalid and could not be deserialized."
            ) from None

    def _op(
        self, kind: str, resource_id: str, delay: float, error: dict[str, str] | None = None, action: str | None = None
    ) -> dict[str, str]:
        op = Op(uuid.uuid4().hex, time.monotonic() + delay, kind, resource_id, error, action)
        self.arm.ops[op.id] = op
        if delay <= 0:
            op.finished = True
            self.arm._finish(op)
        base = self.arm.url
        return {
            "Azure-AsyncOperation": f"{base}/fakearm/operations/{op.id}?api-version=2025-04-01",
            "Location": f"{base}/fakearm/operationresults/{op.id}?api-version=2025-04-01",
        }

    # ------------------------------------------------------------------ identity

    def h_echo_ip(
        self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        return 200, self.arm.public_ip.encode(), {}

    def h_openid(
        self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        base = f"{self.arm.url}/{m['tenant']}"
        return (
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "issuer": f"{base}/v2.0",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
            },
            {},
        )

    def h_token(self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes) -> tuple[int, Any, dict[str, str]]:
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        known = self.arm.principals.get(form.get("client_id", ""))
        if known is None or form.get("client_secret") != known[0]:
            return (
                401,
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                    "error_codes": [7000215],
                },
                {},
            )
        token = self.arm.access_token(form["client_id"])
        return 200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}, {}

    def h_imds_token(
        self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """The instance metadata service's managed-identity token, as on a VM with an identity assigned."""
        if self.arm.imds_vm is not None:
            return self.imds_identity_token(q)
        if self.headers.get("Metadata") != "true":
            return 400, {"error": "invalid_request", "error_description": "Required metadata header not specified"}, {}
        if not self.arm.managed_identity:
            return 400, {"error": "invalid_request", "error_description": "Identity not found"}, {}
        token = self.arm.issue_token(str(uuid.uuid5(uuid.NAMESPACE_URL, self.arm.url)), "managed-identity", "mi")
        expires = int(time.time()) + 3600
        return (
            200,
            {
                "access_token": token,
                "expires_in": "3599",
                "expires_on": str(expires),
                "not_before": str(expires - 3600),
                "resource": q.get("resource", ""),
                "token_type": "Bearer",
            },
            {},
        )

    # ------------------------------------------------------------------ operations

    def h_op_status(
        self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        op = self.arm.ops.get(m["op"])
        if op is None:
            raise ArmError(404, "NotFound", "Operation not found.")
        body: dict[str, Any] = {"name": op.id, "startTime": op.started}
        if not op.finished:
            body["status"] = "InProgress"
        elif op.error:
            body.update(status="Failed", endTime=utcnow(), error=op.error)
        else:
            body.update(status="Succeeded", endTime=utcnow())
        return 200, body, {}

    def h_op_result(
        self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        op = self.arm.ops.get(m["op"])
        if op is None:
            raise ArmError(404, "NotFound", "Operation not found.")
        if not op.finished:
            return 202, None, {"Location": f"{self.arm.url}/fakearm/operationresults/{op.id}?api-version=2025-04-01"}
        if op.error:
            return 200, {"error": op.error}, {}
        return (204, None, {}) if op.kind in ("delete", "rg-delete") else (200, {}, {})

    # ------------------------------------------------------------------ subscriptions and groups

    def h_list_subscriptions(
        self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        value = [
            {
                "id": f"/subscriptions/{sid}",
                "subscriptionId": sid,
                "tenantId": self.arm.tenant,
                "displayName": name,
                "state": self.arm.subscription_states.get(sid, "Enabled"),
                "subscriptionPolicies": {
                    "locationPlacementId": "Public_2014-09-01",
                    "quotaId": "PayAsYouGo_2014-09-01",
                    "spendingLimit": "Off",
                },
                "authorizationSource": "RoleBased",
            }
            for sid, name in self.arm.subscriptions.items()
        ]
        return 200, {"value": value}, {}

    def _checked_body(self, rtype: str, raw: bytes) -> dict[str, Any]:
        """The PUT body, refused where the published schema of the type refuses it (tests/fakearm/specs)."""
        body = self._json(raw)
        refused = "; ".join(problems(rtype, body))
        if refused and rtype.startswith("Microsoft.Authorization/"):  # that provider words it its own way
            raise ArmError(
                400,
                "InvalidRequestContent",
                "The content of your request was not valid, and the original object could not be deserialized. "
                f"Exception message: '{refused}'",
            )
        if refused:
            raise ArmError(
                400,
                "InvalidRequestContent",
                f"The request content was invalid and could not be deserialized: {refused}.",
            )
        return body

    def _group_json(self, group: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in group.items() if not k.startswith("_")}

    def h_group(self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes) -> tuple[int, Any, dict[str, str]]:
        arm, name = self.arm, m["rg"]
        key = name.lower()
        group = arm.groups.get(key)
        if method in ("GET", "HEAD"):
            if group is None:
                if method == "HEAD":
                    return 404, None, {}
                raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found.")
            return (204 if method == "HEAD" else 200), (None if method == "HEAD" else self._group_json(group)), {}
        if method == "PUT":
            body = self._checked_body("Microsoft.Resources/resourceGroups", raw)
            if group is not None and group["properties"]["provisioningState"] == "Deleting":
                raise ArmError(
                    409,
                    "ResourceGroupBeingDeleted",
                    f"The resource group '{name}' is in deprovisioning state and cannot perform this operation.",
                )
            if group is not None and group["location"] != body.get("location"):
                raise ArmError(
                    409,
                    "InvalidResourceGroupLocation",
                    f"Invalid resource group location '{body.get('location')}'. The Resource group already exists in location '{group['location']}'.",
                )
            status = 200 if group is not None else 201
            group = {
                "id": f"/subscriptions/{m['sub']}/resourceGroups/{name}",
                "name": name,
                "type": "Microsoft.Resources/resourceGroups",
                "location": body.get("location"),
                "properties": {"provisioningState": "Succeeded"},
                "_sub": m["sub"],
            }
            group.update({k: body[k] for k in ("tags", "managedBy") if k in body})  # recorded.json: as sent, no more
            arm.groups[key] = group
            return status, self._group_json(group), {}
        if method == "DELETE":
            if group is None:  # ARM answers a missing group with 404, unlike a missing resource (204)
                raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found.")
            force = q.get("forceDeletionTypes")
            if force is not None and force not in FORCE_DELETION_TYPES:
                raise ArmError(
                    400,
                    "InvalidForceDeletionTypes",
                    f"The value '{force}' of forceDeletionTypes is not supported. Supported values: {', '.join(FORCE_DELETION_TYPES)}.",
                )
            arm.rg_deletes.append((name, force))  # ResourceGroups_Delete.json: forceDeletionTypes as a query parameter
            if group["properties"]["provisioningState"] == "Deleting":
                op = next(
                    o for o in arm.ops.values() if o.kind == "rg-delete" and o.resource_id == key and not o.finished
                )
                return (
                    202,
                    None,
                    {
                        "Location": f"{arm.url}/fakearm/operationresults/{op.id}?api-version=2025-04-01",
                        "Retry-After": "0",
                    },
                )
            group["properties"]["provisioningState"] = "Deleting"
            delay = arm.latency.get("resourcegroups-delete", arm.latency.get("resourcegroups", 0.0))
            headers = self._op("rg-delete", key, delay)
            return 202, None, {"Location": headers["Location"]}
        raise ArmError(405, "MethodNotAllowed", method)

    def _filter(self, q: dict[str, str]) -> Callable[[dict[str, Any]], bool]:
        text = q.get("$filter", "")
        if not text:
            return lambda r: True
        name = re.search(r"tagName eq '([^']*)'", text, re.IGNORECASE)  # recorded.json: the CLI sends "tagname"
        value = re.search(r"tagValue eq '([^']*)'", text, re.IGNORECASE)
        called = re.fullmatch(r"name eq '([^']*)'", text.strip(), re.IGNORECASE)  # recorded.json: by name
        if called:
            return lambda r: str(r.get("name", "")).lower() == called.group(1).lower()
        if not name:
            raise ArmError(
                400, "InvalidFilterInQueryString", f"Invalid $filter '{text}' specified in the query string."
            )

        def keep(r: dict[str, Any]) -> bool:
            tags = r.get("tags") or {}
            if name.group(1) not in tags:
                return False
            return value is None or tags[name.group(1)] == value.group(1)

        return keep

    def h_list_groups(
        self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        keep = self._filter(q)
        value = [self._group_json(g) for g in self.arm.groups.values() if g["_sub"] == m["sub"] and keep(g)]
        return 200, {"value": value}, {}

    def _generic(self, r: dict[str, Any]) -> dict[str, Any]:
        """A resource as a listing shows it (GenericResourceExpanded): no properties; sku and the like where set."""
        keys = ("id", "name", "type", "sku", "kind", "location", "identity", "plan", "zones", "managedBy", "tags")
        listed = {k: r[k] for k in keys if k in r}
        if r["type"] == "Microsoft.Compute/disks":  # recorded.json (resources listed by tag): its group in capitals
            parts = listed["id"].split("/")
            parts[4] = parts[4].upper()
            listed["id"] = "/".join(parts)
        return listed

    def h_list_resources(
        self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        if "$skiptoken" in q:  # recorded.json: the filtered list's second page, empty
            return 200, {"value": []}, {}
        keep = self._filter(q)
        prefix = f"/subscriptions/{m['sub']}/".lower()
        value = [self._generic(r) for k, r in self.arm.resources.items() if k.startswith(prefix) and keep(r)]
        if not q.get("$filter"):
            return 200, {"value": value}, {}
        if self.arm.tag_filter_drops_tags:  # "tags are not returned" (Resources_List)
            value = [{k: v for k, v in r.items() if k != "tags"} for r in value]
        # recorded.json: a filtered list names a next page even when the first one holds every match
        rest = urlencode({"$filter": q["$filter"], "api-version": q.get("api-version", ""), "$skiptoken": "1"})
        return 200, {"value": value, "nextLink": f"{self.arm.url}/subscriptions/{m['sub']}/resources?{rest}"}, {}

    def h_list_group_resources(
        self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        if m["rg"].lower() not in self.arm.groups:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{m['rg']}' could not be found.")
        prefix = f"/subscriptions/{m['sub']}/resourcegroups/{m['rg']}/".lower()
        return 200, {"value": [self._generic(r) for k, r in self.arm.resources.items() if k.startswith(prefix)]}, {}

    def h_provider(
        self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """Providers_Get and Providers_Register: a registration answers Registering for ``registration_s``."""
        namespace, arm = m["ns"], self.arm
        state = arm.provider_state(namespace)
        if method == "POST" and state == "NotRegistered":
            arm.registered_at[namespace.lower()] = time.monotonic() + arm.registration_s
            state = "Registering"
        body = {
            "id": f"/subscriptions/{m['sub']}/providers/{namespace}",
            "namespace": namespace,
            "registrationState": state,
            "registrationPolicy": "RegistrationRequired",
            "resourceTypes": [],
        }
        return 200, body, {}

    # ------------------------------------------------------------------ compute catalog

    def h_skus(self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes) -> tuple[int, Any, dict[str, str]]:
        text = q.get("$filter", "")
        wanted = re.search(r"location eq '([^']*)'", text)
        regions = [wanted.group(1).lower()] if wanted else list(self.arm.regions)
        value = []
        for region in regions:
            cfg = self.arm.regions.get(region)
            if cfg is None:
                continue
            for size in sorted(cfg.offered):
                # ResourceSkus_List_ForARegion.json, with FromDoc_ResourceSkus_List_Item.json's restrictions
                value.append(sku_json(size, region, cfg.restricted.get(size), cfg.zones_restricted.get(size, [])))
        return 200, {"value": value}, {}

    def h_usages(
        self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        region = m["loc"].lower()
        cfg = self.arm.regions.get(region)
        if cfg is None:
            raise ArmError(
                404, "NoRegisteredProviderFound", f"No registered resource provider found for location '{region}'."
            )
        used = self.arm.vm_usage(region)
        names = {"cores": "Total Regional vCPUs", "lowprioritycores": "Total Regional Low-priority vCPUs"}
        canonical = {"cores": "cores", "lowprioritycores": "lowPriorityCores"}
        for shape in SIZE_TABLE.values():
            names[shape.family.lower()] = f"{shape.family} vCPUs"
            canonical[shape.family.lower()] = shape.family
        value = [
            {
                "unit": "Count",
                "currentValue": used.get(key, 0) + cfg.used.get(key, 0),
                "limit": cfg.limit(key),
                "name": {"value": canonical[key], "localizedValue": label},
            }
            for key, label in names.items()
        ]
        return 200, {"value": value}, {}

    def h_images(
        self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        key = (m["pub"].lower(), m["offer"].lower(), m["sku"].lower())
        versions = self.arm.images.get(key)
        region = m["loc"].lower()
        if versions is None or region not in self.arm.regions:
            raise ArmError(404, "NotFound", "Artifact: VMImage was not found.")
        base = (
            f"/Subscriptions/{m['sub']}/Providers/Microsoft.Compute/Locations/{region}/Publishers/{m['pub']}"
            f"/ArtifactTypes/VMImage/Offers/{m['offer']}/Skus/{m['sku']}/Versions"
        )
        if m.get("version") is None:
            ordered = sorted(versions, reverse="desc" in q.get("$orderby", "").lower())
            if "$top" in q:
                ordered = ordered[: int(q["$top"])]
            return 200, [{"name": v, "location": region, "id": f"{base}/{v}"} for v in ordered], {}
        if m["version"] not in versions:
            raise ArmError(404, "NotFound", "Artifact: VMImage was not found.")
        props: dict[str, Any] = {
            "osDiskImage": {"operatingSystem": "Linux"},
            "hyperVGeneration": self.arm.image_generations.get(key, "V2"),
            "architecture": "x64",
            "dataDiskImages": [],
            # recorded.json (image version read): what every platform image answers besides
            "replicaType": "Unmanaged",
            "disallowed": {"vmDiskType": "None"},
            "automaticOSUpgradeProperties": {"automaticOSUpgradeSupported": False},
            "imageDeprecationStatus": {"imageState": "Active"},
        }
        plan = self.arm.image_plans.get(key)
        if plan:
            props["plan"] = plan
        if key in self.arm.image_features:
            props["features"] = self.arm.image_features[key]
        return 200, {"name": m["version"], "location": region, "id": f"{base}/{m['version']}", "properties": props}, {}

    def h_agreement(
        self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """Answered with ``systemData`` (read-only), which the 2021-01-01 AgreementTerms declares."""
        key = f"{m['pub']}/{m['offer']}/{m['plan']}".lower()
        if method == "PUT":
            body = self._checked_body("Microsoft.MarketplaceOrdering/offerTypes", raw)
            self.arm.agreements[key] = bool((body.get("properties") or {}).get("accepted"))
        rid = (
            f"/subscriptions/{m['sub']}/providers/Microsoft.MarketplaceOrdering/offerTypes/VirtualMachine/publishers/"
            f"{m['pub']}/offers/{m['offer']}/plans/{m['plan']}/agreements/current"
        )
        now = utcnow()
        properties = {
            "publisher": m["pub"],
            "product": m["offer"],
            "plan": m["plan"],
            "licenseTextLink": "https://example.invalid/terms",
            "privacyPolicyLink": "https://example.invalid/privacy",
            "marketplaceTermsLink": "https://example.invalid/marketplace-terms",
            "retrieveDatetime": now,
            "signature": "FAKESIGNATURE",
            "accepted": self.arm.agreements.get(key, False),
        }
        system = {"createdBy": self.arm.client_id, "createdByType": "Application", "createdAt": now}
        body = {"id": rid, "name": m["plan"], "type": "Microsoft.MarketplaceOrdering/offertypes"}
        return 200, {**body, "properties": properties, "systemData": system}, {}

    # ------------------------------------------------------------------ resources

    def h_resource(
        self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        arm = self.arm
        rtype = TYPE_NAMES.get(f"{m['ns']}/{m['type']}".lower())
        if rtype is None:
            raise ArmError(
                400, "InvalidResourceType", f"The resource type '{m['ns']}/{m['type']}' is not served by the fake."
            )
        rid = f"/subscriptions/{m['sub']}/resourceGroups/{m['rg']}/providers/{rtype}/{m['name']}"
        key = rid.lower()
        existing = arm.resources.get(key)
        if existing is None and m["rg"].lower() not in arm.groups:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{m['rg']}' could not be found.")
        if method == "GET":
            if existing is None:
                raise ArmError(
                    404,
                    "ResourceNotFound",
                    f"The Resource '{rtype}/{m['name']}' under resource group '{m['rg']}' was not found.",
                )
            return 200, self._public(existing), {}
        if method == "DELETE":
            return self._delete_resource(rid, existing)
        if method != "PUT":
            raise ArmError(405, "MethodNotAllowed", method)
        body = self._checked_put(m, rtype, existing, raw)
        location = str(body["location"]).lower()
        resource = {
            "id": rid,
            "name": m["name"],
            "type": rtype,
            "location": location,
            "properties": json.loads(json.dumps(body.get("properties") or {})),
        }
        for extra in ("tags", "sku", "plan", "zones"):  # recorded.json: no tags sent, none answered
            if extra in body:
                resource[extra] = body[extra]
        if rtype.startswith("Microsoft.Network/"):  # recorded.json: a new etag each PUT, the same resourceGuid
            resource["etag"] = f'W/"{uuid.uuid4()}"'
            guid = ((existing or {}).get("properties") or {}).get("resourceGuid")
            resource["properties"]["resourceGuid"] = guid or str(uuid.uuid4())
        error = getattr(self, "v_" + rtype.split("/")[1].lower(), lambda *a: None)(resource, existing, body)
        short = rtype.split("/")[1].lower()
        state = "Creating" if existing is None else "Updating"
        # recorded.json: a new virtual network answers Updating, a network interface Succeeded (with its monitor)
        resource["properties"]["provisioningState"] = NEW_STATES.get(short, state)
        arm.resources[key] = resource
        delay = arm.latency.get(short, 0.0) * (1.0 if existing is None else 0.25)
        if short == "schedules":  # recorded.json: every PUT answers 201, finished, with no monitor to poll
            resource["properties"]["provisioningState"] = "Succeeded"
            return 201, self._public(resource), {}
        if short in SYNCHRONOUS_TYPES:
            resource["properties"].pop("provisioningState", None)
            arm.resources[key] = resource
            return (200 if existing is not None else 201), self._public(resource), {}
        answer = self._public(resource)  # before the operation is done: a new public IP has no address yet
        headers = self._op("put", rid, delay, error)
        if short == "disks":  # DiskRP's Disk_Create_Empty: 202 for a new disk (201 is not among its answers)
            return (200 if existing is not None else 202), answer, headers
        return (200 if existing is not None else 201), answer, {"Azure-AsyncOperation": headers["Azure-AsyncOperation"]}

    def _delete_resource(self, rid: str, existing: dict[str, Any] | None) -> tuple[int, Any, dict[str, str]]:
        arm = self.arm
        if existing is None:
            return 204, None, {}
        short = existing["type"].split("/")[1].lower()
        if short == "disks" and existing.get("managedBy"):  # as ARM answers it (the azure_rm_manageddisk tests)
            raise ArmError(
                409, "OperationNotAllowed", f"Disk {existing['name']} is attached to VM {existing['managedBy']}."
            )
        if short == "schedules":  # recorded.json: deleted at once, 200 with no body
            arm._remove(rid.lower())
            return 200, None, {}
        existing["properties"]["provisioningState"] = "Deleting"
        headers = self._op("delete", rid, arm.latency.get(short + "-delete", arm.latency.get(short, 0.0) / 2))
        return 202, None, {"Location": headers["Location"]}

    def _checked_put(
        self, m: dict[str, str], rtype: str, existing: dict[str, Any] | None, raw: bytes
    ) -> dict[str, Any]:
        """The body of a PUT that ARM would take: its group there and not being deleted, a location, the same one."""
        group = self.arm.groups.get(m["rg"].lower())
        if group is None:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{m['rg']}' could not be found.")
        if group["properties"]["provisioningState"] == "Deleting":
            raise ArmError(
                409,
                "ResourceGroupBeingDeleted",
                f"The resource group '{m['rg']}' is in deprovisioning state and cannot perform this operation.",
            )
        body = self._checked_body(rtype, raw)
        location = str(body.get("location", "")).lower()
        if not location:
            raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
        if existing is not None and existing["location"] != location:
            raise ArmError(
                400,
                "InvalidResourceLocation",
                f"The resource '{m['name']}' already exists in location '{existing['location']}' in resource group '{m['rg']}'. A resource with the same name cannot be created in location '{location}'.",
            )
        if existing is not None and existing["properties"].get("provisioningState") in (
            "Creating",
            "Updating",
            "Deleting",
        ):
            raise ArmError(
                409, "AnotherOperationInProgress", "Another operation on this or dependent resource is in progress."
            )
        return body

    def _public(self, resource: dict[str, Any]) -> dict[str, Any]:
        return json.loads(json.dumps({k: v for k, v in resource.items() if not k.startswith("_")}))

    def _require(self, ref: dict[str, Any] | None, what: str) -> dict[str, Any]:
        rid = (ref or {}).get("id", "")
        target = rid.lower()
        if "/subnets/" in target:
            vnet = self.arm.resources.get(target.split("/subnets/")[0])
            if vnet and any(s["id"].lower() == target for s in vnet["properties"].get("subnets", [])):
                return vnet
        elif target in self.arm.resources:
            return self.arm.resources[target]
        raise ArmError(400, "InvalidResourceReference", f"Resource {rid} referenced by {what} was not found.")

    # Validators: fill in what Azure computes, refuse what Azure refuses; return an async error, if any.

    def v_virtualnetworks(self, res: dict[str, Any], old: dict[str, Any] | None, body: dict[str, Any]) -> None:
        for subnet in res["properties"].get("subnets", []):
            subnet["id"] = f"{res['id']}/subnets/{subnet['name']}"
            props = subnet.setdefault("properties", {})
            props["provisioningState"] = "Succeeded"
            props.setdefault("defaultOutboundAccess", False)  # private subnets by default from 2025-07-01
            if props.get("natGateway"):
                self._require(props["natGateway"], "the subnet")
        res["properties"].setdefault("virtualNetworkPeerings", [])

    def v_networksecuritygroups(self, res: dict[str, Any], old: dict[str, Any] | None, body: dict[str, Any]) -> None:
        res["properties"].setdefault("securityRules", [])
        for rule in res["properties"].get("securityRules", []):
            rule["id"] = f"{res['id']}/securityRules/{rule['name']}"
            rule.setdefault("properties", {})["provisioningState"] = "Succeeded"
        # NetworkSecurityGroups_CreateOrUpdate.json: the six rules Azure adds to every NSG, worded as it words them.
        defaults = [
            (
                "AllowVnetInBound",
                65000,
                "Inbound",
                "Allow",
                "VirtualNetwork",
                "VirtualNetwork",
                "Allow inbound traffic from all VMs in VNET",
            ),
            (
                "AllowAzureLoadBalancerInBound",
                65001,
                "Inbound",
                "Allow",
                "AzureLoadBalancer",
                "*",
                "Allow inbound traffic from azure load balancer",
            ),
            ("DenyAllInBound", 65500, "Inbound", "Deny", "*", "*", "Deny all inbound traffic"),
            (
                "AllowVnetOutBound",
                65000,
                "Outbound",
                "Allow",
                "VirtualNetwork",
                "VirtualNetwork",
                "Allow outbound traffic from all VMs to all VMs in VNET",
            ),
            (
                "AllowInternetOutBound",
                65001,
                "Outbound",
                "Allow",
                "*",
                "Internet",
                "Allow outbound traffic from all VMs to Internet",
            ),
            ("DenyAllOutBound", 65500, "Outbound", "Deny", "*", "*", "Deny all outbound traffic"),
        ]
        res["properties"]["defaultSecurityRules"] = [
            {
                "name": name,
                "id": f"{res['id']}/defaultSecurityRules/{name}",
                "properties": {
                    "provisioningState": "Succeeded",
                    "description": description,
                    "protocol": "*",
                    "sourcePortRange": "*",
                    "destinationPortRange": "*",
                    "sourceAddressPrefix": src,
                    "destinationAddressPrefix": dst,
                    "access": access,
                    "priority": prio,
                    "direction": direction,
                },
            }
            for name, prio, direction, access, src, dst, description in defaults
        ]

    def v_publicipaddresses(self, res: dict[str, Any], old: dict[str, Any] | None, body: dict[str, Any]) -> None:
        # The address is allocated when the create completes (FakeArm._finish): PublicIPAddresses_CreateOrUpdate.json
        # answers without ``ipAddress``; an update keeps the one it has.
        address = (old or {}).get("properties", {}).get("ipAddress")
        if address:
            res["properties"]["ipAddress"] = address
        for name, default in (
            ("idleTimeoutInMinutes", 4),
            ("publicIPAddressVersion", "IPv4"),
            ("ipTags", []),
            ("ddosSettings", {"protectionMode": "VirtualNetworkInherited"}),
        ):
            res["properties"].setdefault(name, default)

    def v_networkinterfaces(self, res: dict[str, Any], old: dict[str, Any] | None, body: dict[str, Any]) -> None:
        props = res["properties"]
        if props.get("networkSecurityGroup"):
            self._require(props["networkSecurityGroup"], "the network interface")
        for cfg in props.get("ipConfigurations", []):
            cfg_props = cfg.setdefault("properties", {})
            self._require(cfg_props.get("subnet"), "the network interface")
            if cfg_props.get("publicIPAddress"):
                self._require(cfg_props["publicIPAddress"], "the network interface")
            cfg["id"] = f"{res['id']}/ipConfigurations/{cfg['name']}"
            cfg_props["privateIPAddress"] = self._private_address(res, old, cfg)
            cfg_props["privateIPAddressVersion"] = "IPv4"
            cfg_props.setdefault("privateIPAllocationMethod", "Dynamic")
        res["kind"] = "Regular"  # recorded.json: what the network provider fills in on a new NIC
        for name, default in (
            ("enableAcceleratedNetworking", False),
            ("enableIPForwarding", False),
            ("disableTcpStateTracking", False),
            ("vnetEncryptionSupported", False),
            ("dnsSettings", {"dnsServers": [], "appliedDnsServers": []}),
            ("hostedWorkloads", []),
            ("tapConfigurations", []),
            ("nicType", "Standard"),
            ("allowPort25Out", True),
            ("auxiliaryMode", "None"),
            ("auxiliarySku", "None"),
        ):
            props.setdefault(name, default)

    def _private_address(self, res: dict[str, Any], old: dict[str, Any] | None, cfg: dict[str, Any]) -> str:
        """What Azure gives an IP configuration: the address it had, else the first free one of the subnet
        from .4 (Azure keeps .0-.3 and the last for itself), in the order the NICs are created."""
        import ipaddress

        for before in (old or {}).get("properties", {}).get("ipConfigurations", []):
            if before.get("name") == cfg["name"] and (before.get("properties") or {}).get("privateIPAddress"):
                return str(before["properties"]["privateIPAddress"])
        subnet_id = str(cfg["properties"]["subnet"]["id"]).lower()
        vnet = self.arm.resources.get(subnet_id.split("/subnets/")[0]) or {}
        subnet = next(s for s in vnet["properties"]["subnets"] if s["id"].lower() == subnet_id)
        taken = {
            str((c.get("properties") or {}).get("privateIPAddress"))
            for key, nic in self.arm.resources.items()
            if nic["type"] == "Microsoft.Network/networkInterfaces" and key != res["id"].lower()
            for c in nic["properties"].get("ipConfigurations", [])
            if str(((c.get("properties") or {}).get("subnet") or {}).get("id", "")).lower() == subnet_id
        }
        sprops = subnet.get("properties") or {}
        prefix = sprops.get("addressPrefix") or (sprops.get("addressPrefixes") or [None])[0]
        prefix = prefix or vnet["properties"].get("addressSpace", {}).get("addressPrefixes", ["10.0.0.0/24"])[0]
        network = ipaddress.ip_network(prefix)
        for offset in range(4, network.num_addresses - 1):
            address = str(network.network_address + offset)
            if address not in taken:
                return address
        raise ArmError(
            400,
            "SubnetIsFull",
            f"Subnet {subnet['name']} with address prefix {network} does not have enough capacity for 1 IP addresses.",
        )

    def v_natgateways(self, res: dict[str, Any], old: dict[str, Any] | None, body: dict[str, Any]) -> None:
        for ref in res["properties"].get("publicIpAddresses") or []:
            self._require(ref, "the NAT gateway")

    def v_proximityplacementgroups(self, res: dict[str, Any], old: dict[str, Any] | None, body: dict[str, Any]) -> None:
        """ProximityPlacementGroups_CreateOrUpdate: Standard (or Ultra) only; the members are Azure's to list."""
        props = res["properties"]
        kind = props.get("proximityPlacementGroupType", "Standard")
        if kind not in ("Standard", "Ultra"):
            raise ArmError(
                400,
                "InvalidParameter",
                f"The value '{kind}' of parameter 'proximityPlacementGroupType' is not valid. Allowed values are 'Standard' and 'Ultra'.",
            )
        for size in (props.get("intent") or {}).get("vmSizes") or []:
            if size not in SIZE_TABLE:
                raise ArmError(400, "InvalidParameter", f"The VM size '{size}' in 'intent.vmSizes' is not valid.")
        props["proximityPlacementGroupType"] = kind
        props["virtualMachines"] = (old or {}).get("properties", {}).get("virtualMachines", [])

    def v_disks(self, res: dict[str, Any], old: dict[str, Any] | None, body: dict[str, Any]) -> None:
        """As DiskRP's Disk_Create_Empty and Disk_Get examples answer: the size asked, a state, the time created."""
        props, before = res["properties"], (old or {}).get("properties") or {}
        if "diskSizeGB" not in props and (props.get("creationData") or {}).get("createOption") == "Empty":
            raise ArmError(400, "InvalidParameter", "Required parameter 'diskSizeGB' is missing (null).")
        props["diskState"] = before.get("diskState", "Unattached")
        props["timeCreated"] = before.get("timeCreated") or utcnow()
        props["uniqueId"] = before.get("uniqueId") or str(uuid.uuid4())
        if old and old.get("managedBy"):
            res["managedBy"] = old["managedBy"]
        res.setdefault("sku", {"name": "Standard_LRS"})

    def _attach(self, res: dict[str, Any]) -> None:
        """Data disks given with createOption Attach: each must exist, in the VM's region, and be free or the VM's."""
        for data_disk in res["properties"].get("storageProfile", {}).get("dataDisks") or []:
            if data_disk.get("createOption") != "Attach":
                continue
            disk_id = str((data_disk.get("managedDisk") or {}).get("id", ""))
            disk = self.arm.resources.get(disk_id.lower())
            if disk is None:
                raise ArmError(404, "NotFound", f"Disk {disk_id} could not be found.")
            if disk["location"] != res["location"]:
                raise ArmError(
                    400,
                    "BadRequest",
                    f"Disk {disk_id} cannot be attached to the VM because it is not in the same region as the VM. "
                    f"VM region: '{res['location']}'. Disk region: '{disk['location']}'.",
                )
            owner = str(disk.get("managedBy") or "")
            if owner and owner.lower() != res["id"].lower():
                raise ArmError(409, "OperationNotAllowed", f"Disk {disk['name']} is attached to VM {owner}.")
            disk["managedBy"], disk["properties"]["diskState"] = res["id"], "Attached"
            data_disk.update(name=disk["name"], caching=data_disk.get("caching") or "None")
            data_disk.setdefault("deleteOption", "Detach")
            data_disk["diskSizeGB"] = disk["properties"].get("diskSizeGB")
            data_disk["managedDisk"] = {"id": disk["id"], "storageAccountType": disk["sku"]["name"]}

    def v_schedules(self, res: dict[str, Any], old: dict[str, Any] | None, body: dict[str, Any]) -> None:
        props = res["properties"]
        if props.get("taskType") != "ComputeVmShutdownTask":
            raise ArmError(400, "InvalidTaskType", "Only ComputeVmShutdownTask schedules are supported here.")
        if not re.match(r"^\d{4}$", str((props.get("dailyRecurrence") or {}).get("time", ""))):
            raise ArmError(400, "InvalidScheduleTime", "dailyRecurrence.time must be HHmm.")
        zone = str(props.get("timeZoneId", ""))
        if zone not in WINDOWS_TIME_ZONES:  # Windows ids only: an IANA name like Europe/Berlin is refused
            raise ArmError(
                400,
                "InvalidTimeZoneId",
                f"The time zone id '{zone}' is not valid. Use a Windows time zone id such as 'W. Europe Standard Time' or 'UTC'.",
            )
        before = (old or {}).get("properties", {})
        props["createdDate"] = before.get("createdDate") or utcnow()
        props["uniqueIdentifier"] = before.get("uniqueIdentifier") or str(uuid.uuid4())
        target = str(props.get("targetResourceId", "")).lower()
        if target not in self.arm.resources:
            raise ArmError(
                400, "InvalidTargetResource", f"The target resource '{props.get('targetResourceId')}' was not found."
            )

    def v_virtualmachines(
        self, res: dict[str, Any], old: dict[str, Any] | None, body: dict[str, Any]
    ) -> dict[str, str] | None:
        arm, props = self.arm, res["properties"]
        size = props.get("hardwareProfile", {}).get("vmSize", "")
        region = res["location"]
        cfg = self._check_size(res, size, region, props)
        self._check_security(size, props.get("securityProfile"))
        custom = (props.get("osProfile") or {}).pop("customData", None)
        if old is not None:
            if custom is not None and custom != old.get("_customData"):
                raise ArmError(409, "PropertyChangeNotAllowed", "Changing property 'customData' is not allowed.")
            res["_customData"] = old.get("_customData")
        else:
            res["_customData"] = custom
        before = ((old or {}).get("properties") or {}).get("hardwareProfile", {}).get("vmSize")
        if before != size:  # a new VM, or a resize (the whole VM PUT again, as 'az vm resize' does)
            self._check_quota(cfg, region, size, before, props.get("priority") == "Spot")
        image = props.get("storageProfile", {}).get("imageReference", {})
        key = (
            str(image.get("publisher", "")).lower(),
            str(image.get("offer", "")).lower(),
            str(image.get("sku", "")).lower(),
        )
        if key not in arm.images or (image.get("version") not in arm.images[key] and image.get("version") != "latest"):
            raise ArmError(
                404,
                "PlatformImageNotFound",
                f"The platform image '{':'.join(key)}:{image.get('version')}' is not available.",
            )
        self._check_plan(key, body.get("plan"))
        self._check_image_security(key, props.get("securityProfile"))
        self._check_boot(res, old, size, key)
        nics = props.get("networkProfile", {}).get("networkInterfaces", [])
        if not nics:
            raise ArmError(400, "InvalidParameter", "At least one network interface is required.")
        for index, nic in enumerate(nics):
            accelerated = (self._require(nic, "the virtual machine")["properties"]).get("enableAcceleratedNetworking")
            if accelerated and not SIZE_TABLE[size].accelerated_networking:
                raise ArmError(
                    400,
                    "VMSizeIsNotPermittedToEnableAcceleratedNetworking",
                    f"Virtual Machine size {size} is not in the allowed list of VM sizes for accelerated networking to be enabled on the VM at index {index} for VM {res['name']}.",
                )
        self._placement(res, old, region)
        self._attach(res)
        props["vmId"] = (old or {}).get("properties", {}).get("vmId") or str(uuid.uuid4())
        self._identity(res, old, body)
        props["timeCreated"] = (old or {}).get("properties", {}).get("timeCreated") or utcnow()
        props.setdefault("storageProfile", {}).setdefault("osDisk", {})["osType"] = "Linux"
        if old is None:
            disk_id = arm._disk_id(res)
            kind = (props["storageProfile"]["osDisk"].get("managedDisk") or {}).get("storageAccountType")
            kind = kind or "Premium_LRS"
            # recorded.json (resources listed by tag): the implicit OS disk takes the VM's tags, its sku and its VM
            arm.resources[disk_id.lower()] = {
                "id": disk_id,
                "name": disk_id.rsplit("/", 1)[1],
                "type": "Microsoft.Compute/disks",
                "sku": {"name": kind, "tier": "Premium" if kind.startswith("Premium") else "Standard"},
                "managedBy": res["id"],
                "location": region,
                "tags": dict(body.get("tags") or {}),
                "properties": {"provisioningState": "Succeeded", "diskSizeGB": 150},
            }
            return self._allocation_failure(size, region, res["name"])
        return None

    def _check_quota(self, cfg: RegionConfig, region: str, size: str, before: str | None, spot: bool) -> None:
        """The cores a new size adds, over each quota it counts against; a resized VM's old cores are its own."""
        vcpus, family, used = SIZE_TABLE[size].vcpus, SIZE_TABLE[size].family, self.arm.vm_usage(region)
        held = SIZE_TABLE[before] if before else None
        for name in ["lowprioritycores"] if spot else [family.lower(), "cores"]:
            current = used.get(name, 0) + cfg.used.get(name, 0)
            if held and name in ("lowprioritycores", "cores", held.family.lower()):
                current -= held.vcpus
            if current + vcpus > cfg.limit(name):  # FromDoc_CloudError_OperationNotAllowed_CoreQuota.json
                raise ArmError(
                    409,
                    "OperationNotAllowed",
                    f"Operation results in exceeding quota limits of Core. Maximum allowed: {cfg.limit(name)}, Current in use: {current}, Additional requested: {vcpus}.",
                )

    def _placement(self, res: dict[str, Any], old: dict[str, Any] | None, region: str) -> None:
        """A VM's ``proximityPlacementGroup``: it must exist in the VM's region, the VM is listed among its members,
        and a running VM cannot move into another one."""
        ref = res["properties"].get("proximityPlacementGroup")
        if not ref:
            return
        before = ((old or {}).get("properties") or {}).get("proximityPlacementGroup") or {}
        moved = old is not None and str(before.get("id", "")).lower() != str(ref.get("id", "")).lower()
        if moved and self.arm.power.get(res["id"].lower()) != "deallocated":
            raise ArmError(
                409,
                "OperationNotAllowed",
                f"Updating proximity placement group of VM {res['name']} is not allowed while the VM is running. Please stop/deallocate the VM and retry the operation.",
            )
        ppg = self._require(ref, "the virtual machine")
        if ppg["location"] != region:
            raise ArmError(
                400,
                "InvalidParameter",
                f"The proximity placement group '{ppg['id']}' is in location '{ppg['location']}'; resources in it must be in the same location, not '{region}'.",
            )
        members = ppg["properties"].setdefault("virtualMachines", [])
        if all(str(m.get("id", "")).lower() != res["id"].lower() for m in members):
            members.append({"id": res["id"]})

    def _check_size(self, res: dict[str, Any], size: str, region: str, props: dict[str, Any]) -> RegionConfig:
        """Size offered here (and in the zones asked for), and Spot only on a LowPriorityCapable size."""
        cfg = self.arm.regions.get(region)
        zones = [str(z) for z in res.get("zones") or []]
        refused = cfg is None or size not in cfg.offered or size in cfg.restricted
        if cfg is not None and zones and set(zones) & set(cfg.zones_restricted.get(size, [])):
            refused = True
        spot = props.get("priority") in ("Spot", "Low")
        if not refused and spot and not SIZE_TABLE[size].spot:
            refused = True  # LowPriorityCapable: False in resource SKUs
        if refused or cfg is None:
            # FromDoc_CloudError_SkuNotAvailable.json (the same answer for a Spot VM of a size without Spot)
            raise ArmError(
                409,
                "SkuNotAvailable",
                f"The requested size for resource '{res['id']}' is currently not available in location '{region}' zones '{','.join(zones)}' for subscription '{res['id'].split('/')[2]}'. Please try another size or deploy to a different location or zones.",
            )
        return cfg

    def _check_security(self, size: str, profile: dict[str, Any] | None) -> None:
        """Trusted Launch only on a size that has it, and ``uefiSettings`` only with a type that has UEFI."""
        if not profile:
            return
        kind = profile.get("securityType")
        if kind == "TrustedLaunch" and not SIZE_TABLE[size].trusted_launch:
            raise ArmError(
                400,
                "BadRequest",
                f"The VM size '{size}' is not supported for creation of VMs and Virtual Machine Scale Set with 'TrustedLaunch' security type.",
            )
        if profile.get("uefiSettings") and kind not in ("TrustedLaunch", "ConfidentialVM"):
            raise ArmError(
                400,
                "InvalidParameter",
                "Use of UEFI settings is not supported for this virtual machine because securityProfile.securityType is not 'TrustedLaunch' or 'ConfidentialVM'.",
            )

    def _check_boot(
        self, res: dict[str, Any], old: dict[str, Any] | None, size: str, image: tuple[str, str, str]
    ) -> None:
        """The VM's Hyper-V generation and disk controller on this size. A new VM takes its image's generation and the
        size's default controller (SCSI where it has it) if the body names none, and the image must declare it (its
        DiskControllerTypes feature, SCSI where absent); a VM PUT again keeps both, which the new size must have."""
        shape, storage = SIZE_TABLE[size], res["properties"].setdefault("storageProfile", {})
        generation = (old or {}).get("_hyperVGeneration") or self.arm.image_generations.get(image, "V2")
        if generation not in shape.generations.split(","):  # as ARM answered for Standard_D2_v2 and a gen 2 image
            raise ArmError(
                400,
                "BadRequest",
                f"The selected VM size '{size}' cannot boot Hypervisor Generation '{generation[1:]}'. If this was a Create operation please check that the Hypervisor Generation of the Image matches the Hypervisor Generation of the selected VM Size. If this was an Update operation please select a Hypervisor Generation '{generation[1:]}' VM Size. For more information, see https://aka.ms/azuregen2vm",
            )
        offered = [c.strip() for c in (shape.controllers or "SCSI").split(",")]
        before = ((old or {}).get("properties") or {}).get("storageProfile", {}).get("diskControllerType")
        controller = storage.get("diskControllerType") or before or ("SCSI" if "SCSI" in offered else offered[0])
        features = {f["name"]: f["value"] for f in self.arm.image_features.get(image, [])}
        if old is None and controller not in [
            c.strip() for c in features.get("DiskControllerTypes", "SCSI").split(",")
        ]:
            raise ArmError(  # as ARM answered a v6 size and an image without NVMe (kubernetes-sigs/image-builder#1875)
                400,
                "InvalidParameter",
                f"The VM size '{size}' cannot boot with OS image or disk. Please check that disk controller types supported by the OS image or disk is one of the supported disk controller types for the VM size '{size}'. Please query sku api at https://aka.ms/azure-compute-skus  to determine supported disk controller types for the VM size.",
            )
        if controller not in offered:  # as ARM answered Standard_D4ads_v5 with NVMe (Azure/FederalAVD#20)
            raise ArmError(
                400,
                "InvalidParameter",
                f"The VM size '{size}' cannot boot with DiskControllerType '{controller}'. Please check that the disk controller type provided is one of the supported disk controller types for the VM size '{size}'. Please query sku api at https://aka.ms/azure-compute-skus  to determine supported disk controller types for the VM size.",
            )
        storage["diskControllerType"] = controller
        res["_hyperVGeneration"] = generation  # fixed when the VM is made; its instance view reports it

    def _check_image_security(self, image: tuple[str, str, str], profile: dict[str, Any] | None) -> None:
        """Trusted Launch only on an image whose ``features`` declare it (SecurityType TrustedLaunch...)."""
        if (profile or {}).get("securityType") != "TrustedLaunch":
            return
        features = {f["name"]: f["value"] for f in self.arm.image_features.get(image, [])}
        if "TrustedLaunch" not in features.get("SecurityType", ""):
            raise ArmError(
                400,
                "BadRequest",
                "Use of TrustedLaunch setting is not supported for the provided image. Please select Trusted Launch Supported Gen2 OS Image.",
            )

    def _check_plan(self, image: tuple[str, str, str], given: dict[str, Any] | None) -> None:
        """A marketplace image with a plan needs the same ``plan`` block (VirtualMachines_CreateOrUpdate_MarketplacePlan.json)."""
        plan = self.arm.image_plans.get(image)
        if not plan:
            if given:
                raise ArmError(
                    400,
                    "VMMarketplaceInvalidInput",
                    f"The image '{':'.join(image)}' is not a marketplace image with a plan; remove the plan information '{given.get('name')}' from the request.",
                )
            return
        if not given:
            raise ArmError(
                400,
                "VMMarketplaceInvalidInput",
                "Creating a virtual machine from Marketplace image requires Plan information in the request.",
            )
        wanted = [str(plan.get(k, "")).lower() for k in ("name", "publisher", "product")]
        if [str(given.get(k, "")).lower() for k in ("name", "publisher", "product")] != wanted:
            raise ArmError(
                400,
                "VMMarketplaceInvalidInput",
                f"The purchase information does not match. Unable to deploy from the Marketplace image. Plan '{given.get('publisher')}/{given.get('product')}/{given.get('name')}' was given; the image '{':'.join(image)}' needs '{plan['publisher']}/{plan['product']}/{plan['name']}'.",
            )
        if not self.arm.agreements.get(f"{plan['publisher']}/{plan['product']}/{plan['name']}".lower()):
            raise ArmError(
                400,
                "ResourcePurchaseValidationFailed",
                "User failed validation to purchase resources. Error message: 'You have not accepted the legal terms on this subscription.'",
            )

    def _allocation_failure(self, size: str, region: str, name: str) -> dict[str, str] | None:
        """The asynchronous error of a VM create that an injected capacity failure matches, if any."""
        for failure in self.arm.alloc_failures:
            if failure["times"] <= 0:
                continue
            if failure["size"] not in (None, size) or failure["region"] not in (None, region):
                continue
            if failure.get("vm") not in (None, name):
                continue
            failure["times"] -= 1
            messages = {
                "AllocationFailed": "Allocation failed. We do not have sufficient capacity for the requested VM size in this region. Read more about improving likelihood of allocation success at https://aka.ms/allocation-guidance",
                "ZonalAllocationFailed": "Allocation failed. We do not have sufficient capacity for the requested VM size in this zone. Read more about improving likelihood of allocation success at https://aka.ms/allocation-guidance",
            }
            return {"code": failure["code"], "message": messages.get(failure["code"], failure["code"])}
        return None

    def _identity(self, res: dict[str, Any], old: dict[str, Any] | None, body: dict[str, Any]) -> None:
        """``identity: {type: SystemAssigned}`` gives the VM a principal (kept across updates); ``None`` drops it."""
        wanted = body.get("identity") if "identity" in body else (old or {}).get("identity")
        kind = str((wanted or {}).get("type") or "None")
        if "systemassigned" not in kind.lower():
            res.pop("identity", None)
            return
        before = (old or {}).get("identity") or {}
        res["identity"] = {
            "type": kind,
            "principalId": before.get("principalId") or str(uuid.uuid4()),
            "tenantId": self.arm.tenant,
        }
        res["_clientId"] = (old or {}).get("_clientId") or str(uuid.uuid4())  # the identity's application id
        if (wanted or {}).get("userAssignedIdentities"):
            res["identity"]["userAssignedIdentities"] = wanted["userAssignedIdentities"]  # type: ignore[index]

    def h_instance_view(
        self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        rid = f"/subscriptions/{m['sub']}/resourceGroups/{m['rg']}/providers/Microsoft.Compute/virtualMachines/{m['name']}"
        vm = self.arm.resources.get(rid.lower())
        if vm is None:
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.Compute/virtualMachines/{m['name']}' under resource group '{m['rg']}' was not found.",
            )
        state = vm["properties"]["provisioningState"]
        power = self.arm.power.get(rid.lower(), "starting")
        statuses = [
            {
                "code": f"ProvisioningState/{state.lower()}",
                "level": "Info",
                "displayStatus": f"Provisioning {state.lower()}",
                "time": vm.get("_since") or vm["properties"].get("timeCreated"),
            },
            {"code": f"PowerState/{power}", "level": "Info", "displayStatus": f"VM {power}"},
        ]
        succeeded = {"code": "ProvisioningState/succeeded", "level": "Info", "time": statuses[0]["time"]}
        agent = {
            "vmAgentVersion": "2.13.1.1",
            "statuses": [{**succeeded, "displayStatus": "Ready", "message": "Guest Agent is running"}],
        }
        disk = self.arm._disk_id(vm).rsplit("/", 1)[1]
        view = {"computerName": m["name"], "osName": "ubuntu", "osVersion": "22.04", "vmAgent": agent}
        # recorded.json (VM instance view read): the agent's and each disk's statuses beside the VM's own
        view |= {"disks": [{"name": disk, "statuses": [{**succeeded, "displayStatus": "Provisioning succeeded"}]}]}
        return 200, {**view, "hyperVGeneration": vm["_hyperVGeneration"], "statuses": statuses}, {}

    def h_vm_action(
        self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        rid = f"/subscriptions/{m['sub']}/resourceGroups/{m['rg']}/providers/Microsoft.Compute/virtualMachines/{m['name']}"
        if rid.lower() not in self.arm.resources:
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.Compute/virtualMachines/{m['name']}' under resource group '{m['rg']}' was not found.",
            )
        action = m["action"].lower()
        transitional = {"deallocate": "deallocating", "start": "starting", "poweroff": "stopping"}[action]
        self.arm.power[rid.lower()] = transitional
        headers = self._op("action", rid, self.arm.latency.get(f"virtualmachines-{action}", 0.0), action=action)
        return 202, None, headers
