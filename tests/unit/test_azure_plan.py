"""Decisions the Azure target makes offline: the SSH rule, the shutdown time zone, cloud-init, error sentences."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from labctl.errors import LabctlError, UsageError
from labctl.keys import ensure_user_key, generate_ed25519, normalize
from labctl.spec import LabSpec
from labctl.targets.azure.clients import explain
from labctl.targets.azure.plan import LabNames, check_rules, make_plan, schedule_time, ssh_rule
from labctl.targets.azure.provision import render_cloud_init
from labctl.validate import check_allow_ip


@pytest.mark.parametrize(
    ("given", "expected"), [("203.0.113.7", "203.0.113.7/32"), ("203.0.113.9/24", "203.0.113.0/24")]
)
def test_allow_ip_normalises_to_a_cidr(given: str, expected: str) -> None:
    assert check_allow_ip(given) == expected


@pytest.mark.parametrize("given", ["0.0.0.0/0"])
def test_allow_ip_refuses_the_whole_internet_unless_typed_out(given: str) -> None:
    with pytest.raises(UsageError, match="whole internet"):
        check_allow_ip(given)
    assert check_allow_ip("any") == "*"


@pytest.mark.parametrize("given", ["0.0.0.0/1", "128.0.0.0/1", "10.0.0.0/7", "64.0.0.0/3"])
def test_allow_ip_refuses_a_large_part_of_the_internet_unless_typed_out(given: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_allow_ip(given)
    text = caught.value.render()
    assert "large part of the internet" in text and "--allow-ip any" in text


@pytest.mark.parametrize(("given", "expected"), [("10.0.0.0/8", "10.0.0.0/8"), ("10.1.2.3/8", "10.0.0.0/8")])
def test_allow_ip_accepts_the_widest_allowed_range(given: str, expected: str) -> None:
    assert check_allow_ip(given) == expected


@pytest.mark.parametrize("given", ["::/0", "2001:db8::/32", "2001:db8::1", "::1"])
def test_allow_ip_refuses_ipv6_since_the_vm_has_an_ipv4_address_only(given: str) -> None:
    with pytest.raises(UsageError, match="IPv6"):
        check_allow_ip(given)


@pytest.mark.parametrize("source", ["10.0.0.0/8", "198.51.0.0/16", "203.0.112.0/23"])
def test_wide_allowed_range_is_warned_about_in_the_plan(source: str) -> None:
    plan = make_plan(LabSpec(name="lab", allow_ip=source).validate())
    assert f"warning: SSH is open to {source}" in plan.render()
    assert any(source in w for w in plan.to_json()["warnings"])


@pytest.mark.parametrize("source", ["203.0.113.0/24", "203.0.113.7/32", "any"])
def test_narrow_range_and_any_get_no_breadth_warning(source: str) -> None:
    assert not any("wider than" in w for w in make_plan(LabSpec(name="lab", allow_ip=source).validate()).warnings)


def test_allow_ip_refuses_garbage() -> None:
    with pytest.raises(UsageError, match="not an IP address"):
        check_allow_ip("my-laptop")


def test_the_only_rule_is_ssh_from_the_source() -> None:
    rule = ssh_rule("203.0.113.7/32")["properties"]
    assert rule["destinationPortRange"] == "22" and rule["sourceAddressPrefix"] == "203.0.113.7/32"
    assert rule["direction"] == "Inbound" and rule["access"] == "Allow" and rule["protocol"] == "Tcp"
    check_rules([ssh_rule("203.0.113.7/32")], "203.0.113.7/32")


@pytest.mark.parametrize(
    "bad",
    [
        {"destinationPortRange": "8888", "sourceAddressPrefix": "203.0.113.7/32"},
        {"destinationPortRange": "22", "sourceAddressPrefix": "*"},
        {"destinationPortRanges": ["22", "8888"], "sourceAddressPrefix": "203.0.113.7/32"},
    ],
)
def test_rules_admitting_more_than_ssh_from_the_source_are_refused(bad: dict[str, str]) -> None:
    rule = {"name": "extra", "properties": {"direction": "Inbound", "access": "Allow", **bad}}
    with pytest.raises(LabctlError, match="admits more than SSH"):
        check_rules([ssh_rule("203.0.113.7/32"), rule], "203.0.113.7/32")


def test_shutdown_keeps_wall_clock_time_in_a_known_zone() -> None:
    assert schedule_time("19:00", "Europe/Berlin") == ("1900", "W. Europe Standard Time")
    assert schedule_time("07:30", "America/Los_Angeles") == ("0730", "Pacific Standard Time")


def test_shutdown_keeps_wall_clock_time_in_any_zone_windows_names() -> None:
    assert schedule_time("19:00", "Asia/Kathmandu") == ("1900", "Nepal Standard Time")  # UTC+05:45
    assert schedule_time("06:00", "America/Argentina/Buenos_Aires") == ("0600", "Argentina Standard Time")


def test_shutdown_in_an_unmapped_zone_is_converted_to_utc() -> None:
    offset = datetime.now(ZoneInfo("Antarctica/Troll")).utcoffset()  # no Windows zone; +00 or +02 by season
    assert offset is not None
    expected = (datetime(2000, 1, 1, 19, 0) - offset).strftime("%H%M")
    assert schedule_time("19:00", "Antarctica/Troll") == (expected, "UTC")


def test_names_follow_the_lab() -> None:
    names = LabNames("cifar-gpu")
    assert names.resource_group == "labctl-cifar-gpu"
    assert names.name("schedule") == "shutdown-computevm-cifar-gpu-vm"


def test_plan_lists_resources_price_rule_and_shutdown() -> None:
    spec = LabSpec(name="lab", gpu=True, allow_ip="203.0.113.7", region="westus2", shutdown_at="18:30").validate()
    plan = make_plan(spec)
    data = plan.to_json()
    assert data["region"] == "westus2" and data["resource_group"].startswith("labctl-lab-<")
    assert data["sizes"][0]["name"] == "Standard_NC4as_T4_v3" and data["sizes"][0]["usd_per_hour"] > 0
    assert [r["properties"]["destinationPortRange"] for r in data["inbound_rules"]] == ["22"]
    types = [r["type"] for r in data["resources"]]
    assert "Microsoft.DevTestLab/schedules" in types and "Microsoft.Compute/virtualMachines" in types
    text = plan.render()
    assert "TCP 22 (SSH) from 203.0.113.7/32 only" in text and "18:30" in text and "$0.53/h" in text
    assert "8888" not in text.replace("Jupyter only through the SSH tunnel", "")


def test_plan_without_shutdown_warns_about_cost() -> None:
    plan = make_plan(LabSpec(name="lab", allow_ip="203.0.113.7", no_shutdown=True).validate())
    assert plan.to_json()["shutdown_at"] is None
    assert any("stop paying" in w for w in plan.warnings)


def test_cloud_init_is_yaml_carrying_the_host_key() -> None:
    host = generate_ed25519("h")
    text = render_cloud_init(host.private_openssh, normalize(host.public_line), "lab", "pytorch/pytorch:x")
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert doc["ssh_keys"]["ed25519_private"].strip() == host.private_openssh.strip()
    assert doc["ssh_keys"]["ed25519_public"] == normalize(host.public_line)
    assert doc["ssh_genkeytypes"] == [] and doc["ssh_deletekeys"] is True
    assert doc["runcmd"][0][:2] == ["sh", "-c"] and doc["runcmd"][0][-2] == "pytorch/pytorch:x"
    assert json.loads(doc["write_files"][0]["content"]) == {"lab": "lab", "created_by": "labctl"}
    key = serialization.load_ssh_private_key(doc["ssh_keys"]["ed25519_private"].encode(), password=None)
    derived = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert derived.decode() == normalize(host.public_line)
    assert base64.b64decode(base64.b64encode(text.encode())).decode() == text


def test_generated_user_key_is_private_and_reused() -> None:
    path, pub = ensure_user_key("lab", None)
    assert path.stat().st_mode & 0o777 == 0o600
    assert pub.startswith("ssh-ed25519 ")
    assert ensure_user_key("lab", None) == (path, pub)


def test_arm_errors_become_sentences() -> None:
    from azure.core.exceptions import HttpResponseError
    from azure.core.pipeline.transport import HttpResponse

    class _Response(HttpResponse):  # the smallest real response object an exception can be built from
        def __init__(self, status: int, body: bytes) -> None:
            super().__init__(None, None)  # type: ignore[arg-type]
            self.status_code, self._body, self.reason = status, body, "Conflict"
            self.headers = {"Content-Type": "application/json"}
            self.content_type = "application/json"

        def body(self) -> bytes:
            return self._body

        def text(self, encoding: str | None = None) -> str:
            return self._body.decode()

    body = b'{"error": {"code": "SkuNotAvailable", "message": "The requested size is not available."}}'
    error = explain(HttpResponseError(response=_Response(409, body)), "creating the VM")
    text = error.render()
    assert "not available to this subscription in this region" in text
    assert "SkuNotAvailable" in text and "--region auto" in text


def test_arm_timestamps_parse_with_seven_digit_fractions() -> None:
    from datetime import timezone

    from labctl.targets.azure.inventory import parse_time

    value = parse_time("2019-10-14T21:30:12.8051917Z")
    assert (value.year, value.second, value.microsecond, value.tzinfo) == (2019, 12, 805191, timezone.utc)


def test_a_plan_of_one_node_lists_what_it_always_did() -> None:
    plan = make_plan(LabSpec(name="lab", allow_ip="203.0.113.7").validate())
    assert [r["name"] for r in plan.to_json()["resources"]][4:] == [
        "lab-nic",
        "lab-vm (Standard_D4s_v5, microsoft-dsvm:ubuntu-2204:2204-gen2:latest)",
        "lab-vm-osdisk (deleted with the VM)",
        "shutdown-computevm-lab-vm",
    ]
    text = plan.render()
    assert "nodes:" not in text and "between nodes" not in text and "placement" not in text


def test_a_plan_of_several_nodes_lists_each_vm_the_nat_gateway_and_the_price_of_all() -> None:
    plan = make_plan(LabSpec(name="lab", allow_ip="203.0.113.7", nodes=4).validate())
    rows = plan.to_json()["resources"]
    vms = [r["name"].split()[0] for r in rows if r["type"] == "Microsoft.Compute/virtualMachines"]
    assert vms == ["lab-vm", "lab-vm1", "lab-vm2", "lab-vm3"]
    ips = [r["name"] for r in rows if r["type"] == "Microsoft.Network/publicIPAddresses"]
    assert ips == ["lab-ip (Standard, static)", "lab-nat-ip (Standard, static)"]  # node 0's, the NAT gateway's
    assert {"type": "Microsoft.Network/natGateways", "name": "lab-nat (the subnet's way out)"} in rows
    assert [r["type"] for r in rows].count("Microsoft.DevTestLab/schedules") == 4
    assert {"type": "Microsoft.Compute/proximityPlacementGroups", "name": "lab-ppg"} in rows
    assert "lab-nic2 (node 2, private address only)" in [r["name"] for r in rows]
    text = plan.render()
    assert "4 VMs of that size, ~$0.77/h together (4 x $0.19/h)" in text  # Standard_D4s_v5 at $0.192/h
    assert "the lab's VNet only" in text and "TCP 22 (SSH) from 203.0.113.7/32 only" in text


def test_cloud_init_of_a_worker_says_which_node_it_is() -> None:
    host = generate_ed25519("h")
    head = yaml.safe_load(render_cloud_init(host.private_openssh, normalize(host.public_line), "lab", "img:1"))
    worker = yaml.safe_load(render_cloud_init(host.private_openssh, normalize(host.public_line), "lab", "img:1", 2))
    assert json.loads(head["write_files"][0]["content"]) == {"lab": "lab", "created_by": "labctl"}
    assert json.loads(worker["write_files"][0]["content"]) == {"lab": "lab", "created_by": "labctl", "node": 2}
