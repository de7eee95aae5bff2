"""The lab's NSG as Azure applies it: the rendezvous port (29400) between nodes is open inside the VNet only, by
Azure's default rule, never from the internet; SSH only from the address allowed. Read back through the real
SDK from the fake ARM (which reports the default rules as ARM does) and evaluated by priority as Azure does."""

from __future__ import annotations

import copy

import pytest

from labctl.distributed import DEFAULT_RDZV_PORT
from labctl.targets.azure.bodies import VNET_PREFIX
from labctl.targets.azure.clients import connect
from tests.fakearm import FakeArm
from tests.fakearm.fixtures import arm_env, fake_arm, lab_group, provision  # noqa: F401
from tests.support.nsg import Packet, decide

pytestmark = pytest.mark.usefixtures("arm_env")

HEAD, WORKER = "10.42.0.4", "10.42.0.5"
CALLER = "198.51.100.23"  # what the fake's IP echo answers: the address `up` opens SSH to
STRANGER = "203.0.113.99"


def test_rendezvous_is_open_inside_the_vnet_only_and_ssh_from_the_caller_only(arm_env: FakeArm) -> None:  # noqa: F811
    record = provision("lab", nodes=2)
    assert (record.nodes[0].private_address, record.nodes[1].host) == (HEAD, WORKER)
    azure = connect()
    nsg = azure.network.network_security_groups.get(lab_group(arm_env), "lab-nsg").as_dict()
    defaults = {r["name"] for r in nsg["properties"]["defaultSecurityRules"]}
    assert {"AllowVnetInBound", "AllowAzureLoadBalancerInBound", "DenyAllInBound"} <= defaults
    vnet = [VNET_PREFIX]

    def verdict(source: str, port: int, to: str = HEAD) -> tuple[str, str]:
        return decide(nsg, Packet(source=source, destination=to, port=port), vnet)

    assert verdict(WORKER, DEFAULT_RDZV_PORT) == ("Allow", "AllowVnetInBound")  # a worker joins the rendezvous
    assert verdict(STRANGER, DEFAULT_RDZV_PORT) == ("Deny", "DenyAllInBound")
    assert verdict(CALLER, DEFAULT_RDZV_PORT) == ("Deny", "DenyAllInBound")  # not even from the caller
    assert verdict(CALLER, 22) == ("Allow", "allow-ssh-from-caller")
    assert verdict(STRANGER, 22) == ("Deny", "DenyAllInBound")
    assert verdict(HEAD, 22, to=WORKER) == ("Allow", "AllowVnetInBound")  # node 0 forwards SSH to a worker
    assert verdict(STRANGER, 8888)[0] == verdict(STRANGER, 22, to=WORKER)[0] == "Deny"

    # the evaluation itself can tell an open port: a rule opening the rendezvous to all is caught at once
    opened = copy.deepcopy(nsg)
    opened["properties"]["securityRules"].append(
        {
            "name": "open-rendezvous",
            "properties": {
                "priority": 200,
                "direction": "Inbound",
                "access": "Allow",
                "protocol": "Tcp",
                "sourceAddressPrefix": "Internet",
                "sourcePortRange": "*",
                "destinationAddressPrefix": "*",
                "destinationPortRange": "29000-29999",
            },
        }
    )
    assert decide(opened, Packet(STRANGER, HEAD, DEFAULT_RDZV_PORT), vnet) == ("Allow", "open-rendezvous")
