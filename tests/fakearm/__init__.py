"""A fake Azure Resource Manager for tests: real azure-identity and azure-mgmt clients talk to it over HTTPS."""

from tests.fakearm.server import FakeArm, Fault, RegionConfig, VmBoot

__all__ = ["FakeArm", "Fault", "RegionConfig", "VmBoot"]
