"""Knobs of the Azure target, read from the environment so tests, sovereign clouds and tunnels can set them."""

from __future__ import annotations

import os

DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
DEFAULT_REGION = "eastus"
DEFAULT_IP_ECHO_URL = "https://api.ipify.org"
ADMIN_USER = "azureuser"
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
    return os.environ.get("LABCTL_ARM_ENDPOINT", DEFAULT_ARM_ENDPOINT).rstrip("/")


def default_region() -> str:
    return os.environ.get("LABCTL_REGION", DEFAULT_REGION)


def admin_user() -> str:
    """The VM's login; some organisations mandate their own admin name, and tests log in as the local user."""
    return os.environ.get("LABCTL_ADMIN_USER", ADMIN_USER)


def ssh_port() -> int:
    return int(os.environ.get("LABCTL_SSH_PORT", "22"))


def ip_echo_url() -> str:
    return os.environ.get("LABCTL_IP_ECHO_URL", DEFAULT_IP_ECHO_URL)


def base_image() -> str:
    from labctl.container import effective_base_image

    return effective_base_image()


def poll_interval() -> float:
    """Seconds between polls of a long-running operation when ARM sends no Retry-After."""
    return float(os.environ.get("LABCTL_POLL_INTERVAL", "2"))


def retry_backoff() -> float:
    """Backoff factor for retried transient failures (seconds, doubled on each try)."""
    return float(os.environ.get("LABCTL_RETRY_BACKOFF", "1"))


def retry_after_max() -> float:
    """The longest Retry-After labctl waits out before giving up with a message."""
    return float(os.environ.get("LABCTL_RETRY_AFTER_MAX", "60"))


def operation_timeout() -> float:
    """Seconds labctl waits for one Azure operation (a VM to be created, a group to be deleted) before it stops
    waiting and says so; what Azure started goes on there and the same command picks it up again."""
    return float(os.environ.get("LABCTL_OPERATION_TIMEOUT", "1800"))
