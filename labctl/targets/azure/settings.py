"""Read from the environment for tests, sovereign clouds and tunnels (checked first by labctl.validate.ENV_CHECKS)."""

from __future__ import annotations

import os

IMAGE_URN = "microsoft-dsvm:ubuntu-2204:2204-gen2:latest"
QUOTA_URL = "https://portal.azure.com/#view/Microsoft_Azure_Capacity/QuotaMenuBlade/~/myQuotas"
SCHEDULE_API_VERSION = "2018-09-15"
AGREEMENT_API_VERSION = "2021-01-01"
# Tried in this order by --region auto (and offered as alternatives when a region has no room).
AUTO_REGIONS = (
    "eastus",
    "eastus2",
    "westus2",
    "westus3",
    "southcentralus",
    "northcentralus",
    "westeurope",
    "northeurope",
    "uksouth",
    "swedencentral",
    "southeastasia",
    "australiaeast",
)

TAG_LAB = "labctl-lab"
TAG_CREATED_BY = "created-by"
TAG_OWNER = "labctl-owner"  # the object id of the principal that made the lab
TAG_OWNER_NAME = "labctl-owner-name"  # its sign-in or application name, for people reading `list`
TAG_CREATED_AT = "created-at"
CREATED_BY = "labctl"


def arm_endpoint() -> str:
    return (os.environ.get("LABCTL_ARM_ENDPOINT") or "https://management.azure.com").rstrip("/")


def admin_user() -> str:  # some organisations mandate their own admin name; tests log in as the local user
    return os.environ.get("LABCTL_ADMIN_USER") or "azureuser"


def ssh_port() -> int:
    return int(os.environ.get("LABCTL_SSH_PORT") or "22")


def poll_interval() -> float:  # seconds between polls of a long-running operation when ARM sends no Retry-After
    return float(os.environ.get("LABCTL_POLL_INTERVAL") or "2")


def operation_timeout() -> float:  # what Azure started goes on after it, and the same command resumes it
    return float(os.environ.get("LABCTL_OPERATION_TIMEOUT") or "1800")
