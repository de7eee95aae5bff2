"""pytest fixtures: a running fake ARM and an environment that points labctl's real Azure code at it.

Import them into a test module with ``from tests.fakearm.fixtures import fake_arm, arm_env  # noqa: F401``.

An end-to-end test makes the fake VM real by booting an sshd from what the VM was created with::

    def boot(vm: VmBoot) -> str:          # vm.host_private_key, vm.authorized_keys, vm.admin_user
        start_sshd(port, vm.host_private_key, vm.authorized_keys)
        return "127.0.0.1"                # reported as the VM's public IP

    arm_env.on_vm_created = boot
    monkeypatch.setenv("LABCTL_SSH_PORT", str(port))

(``tests/integration/test_azure_sshd.py`` does exactly that.)
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from labctl.state import LabRecord, StateStore
from tests.fakearm.server import FakeArm


@pytest.fixture
def fake_arm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeArm]:
    fake = FakeArm(tmp_path_factory.mktemp("fakearm")).start()
    yield fake
    fake.stop()


def fast_env(fake: FakeArm, home: Path) -> dict[str, str]:
    env = dict(fake.env())
    env.update(
        LABCTL_POLL_INTERVAL="0.02",
        LABCTL_RETRY_BACKOFF="0.01",
        LABCTL_RETRY_AFTER_MAX="5",
        HOME=str(home),  # no az CLI cache or other login of the person running the tests
        TZ="Europe/Berlin",
        # No price list here: the fake answers 404, so prices come from labctl's catalog unless a test serves some.
        LABCTL_PRICES_URL=f"{fake.url}/api/retail/prices",
    )
    return env


@pytest.fixture
def arm_env(fake_arm: FakeArm, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeArm:
    """The fake ARM, with labctl's environment pointing at it through the real credential chain (the caller's own
    Azure variables are gone already: tests/conftest.py)."""
    home = tmp_path / "home"
    home.mkdir()
    for key, value in fast_env(fake_arm, home).items():
        monkeypatch.setenv(key, value)
    assert "AZURE_CLIENT_SECRET" in os.environ
    return fake_arm


def lab_group(fake: FakeArm, lab: str = "lab", client_id: str | None = None) -> str:
    """The resource group labctl makes for ``lab`` of the principal ``client_id`` (default: the usual login)."""
    return f"labctl-{lab}-{fake.object_id(client_id).replace('-', '')[:8]}"


def provision(name: str = "lab", *, save: object = None, **spec_fields: object) -> LabRecord:
    """Run AzureTarget.provision for a new or existing local record, as `up` does before the machine layer."""
    from labctl.spec import LabSpec
    from labctl.targets.azure import AzureTarget
    from labctl.ui import PlainReporter

    spec = LabSpec(name=name, **spec_fields).validate()  # type: ignore[arg-type]
    store = StateStore()
    record = store.load(name) if store.exists(name) else LabRecord(name=name, target="azure")
    store.save(record)
    return AzureTarget().provision(spec, record, PlainReporter(io.StringIO()), save or store.save)  # type: ignore[arg-type]


def destroy(name: str = "lab") -> None:
    from labctl.targets.azure import AzureTarget
    from labctl.ui import PlainReporter

    store = StateStore()
    AzureTarget().destroy(store.load(name), PlainReporter(io.StringIO()))
    store.delete(name)
