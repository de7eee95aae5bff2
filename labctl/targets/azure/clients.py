"""Credentials, subscription and the azure-mgmt clients, plus one place that turns ARM errors into sentences.

Everything here imports the Azure SDK lazily: the CLI imports this package only when a command needs Azure.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

from labctl.errors import LabctlError, NoCapacity, UsageError
from labctl.targets.azure import settings
from labctl.targets.azure.identity import Principal, principal_from_token

LOGIN_HINT = (
    "Log in with 'az login' (Azure CLI), or set AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET for a "
    "service principal (on an Azure machine with a managed identity, set LABCTL_MANAGED_IDENTITY=1), then run "
    "the command again."
)
_KNOWN_AUTHORITIES = {
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
    "login.partner.microsoftonline.cn",
    "login.windows.net",
}
_MANAGED_IDENTITY_HINTS = (
    "LABCTL_MANAGED_IDENTITY",
    "IDENTITY_ENDPOINT",
    "MSI_ENDPOINT",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_FEDERATED_TOKEN_FILE",
)
_SUB_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

# ARM error codes -> what they mean for a labctl user and what to do about it.
ERROR_SENTENCES: dict[str, tuple[str, str]] = {
    "AuthorizationFailed": (
        "Your Azure identity is not allowed to do this in the subscription",
        "Ask an owner of the subscription for the Contributor role (or pick another --subscription).",
    ),
    "InvalidAuthenticationToken": ("Azure did not accept the login token", LOGIN_HINT),
    "ExpiredAuthenticationToken": ("Your Azure login has expired", LOGIN_HINT),
    "SubscriptionNotFound": (
        "The subscription was not found",
        "Check the id with 'az account list', or pass --subscription.",
    ),
    "InvalidSubscriptionId": ("The subscription id is not valid", "Check the id with 'az account list'."),
    "SubscriptionNotRegistered": (
        "The subscription is not registered for a resource provider labctl needs",
        "Run 'az provider register --namespace Microsoft.Compute' (and Microsoft.Network, Microsoft.DevTestLab).",
    ),
    "MissingSubscriptionRegistration": (
        "The subscription is not registered for a resource provider labctl needs",
        "Run 'az provider register --namespace Microsoft.Compute' (and Microsoft.Network, Microsoft.DevTestLab).",
    ),
    "ReadOnlyDisabledSubscription": (
        "The subscription is disabled (read-only)",
        "Re-enable it in the Azure portal or pick another --subscription.",
    ),
    "SkuNotAvailable": (
        "That VM size is not available to this subscription in this region right now",
        "Try another --region (or --region auto) or another --size.",
    ),
    "AllocationFailed": (
        "Azure has no capacity for that VM size in this region right now",
        "Try again later, another --region (or --region auto), or give fall-back sizes with repeated --size.",
    ),
    "ZonalAllocationFailed": (
        "Azure has no capacity for that VM size in this zone right now",
        "Try again later, another --region (or --region auto), or give fall-back sizes with repeated --size.",
    ),
    "OverconstrainedAllocationRequest": (
        "Azure cannot place a VM with these constraints right now",
        "Try another --region or --size.",
    ),
    "QuotaExceeded": (
        "The subscription's quota does not allow this",
        f"Request more quota at {settings.QUOTA_URL}, or pick a smaller --size or another --region.",
    ),
    "OperationNotAllowed": (
        "Azure refused the operation",
        f"If it is about quota, request more at {settings.QUOTA_URL} or pick a smaller --size or another --region.",
    ),
    "MarketplacePurchaseEligibilityFailed": (
        "This subscription cannot buy the Data Science VM image from the marketplace",
        "Use a pay-as-you-go or enterprise subscription, or ask its owner to enable marketplace purchases.",
    ),
    "ResourcePurchaseValidationFailed": (
        "The image's marketplace terms have not been accepted for this subscription",
        "Accept them with 'az vm image terms accept --urn microsoft-dsvm:ubuntu-2204:2204-gen2:latest'.",
    ),
    "ResourceGroupBeingDeleted": (
        "The lab's resource group is still being deleted",
        "Wait for 'labctl down' to finish (or a few minutes), then run 'labctl up' again.",
    ),
    "LocationNotAvailableForResourceType": ("The region does not offer this resource", "Pick another --region."),
    "InvalidResourceLocation": (
        "The lab already exists in another region",
        "Use the same --region as before, or 'labctl down' the lab first.",
    ),
    "PropertyChangeNotAllowed": (
        "The existing VM cannot be changed that way",
        "Keep the options it was created with, or 'labctl down' and 'labctl up' again.",
    ),
    "OperationNotAllowedThrottled": ("Azure is throttling this subscription", "Wait a few minutes and try again."),
    "TooManyRequests": ("Azure is throttling this subscription", "Wait a few minutes and try again."),
}


# Refusals that mean "no room for this size here now": another size or region may have it (NoCapacity).
CAPACITY_CODES = frozenset(
    {
        "AllocationFailed",
        "ZonalAllocationFailed",
        "OverconstrainedAllocationRequest",
        "SkuNotAvailable",
        "QuotaExceeded",
    }
)


def is_capacity(code: str, message: str) -> bool:
    """ARM's code for a refusal for capacity; OperationNotAllowed counts only when it is about quota."""
    return code in CAPACITY_CODES or (code == "OperationNotAllowed" and "quota" in message.lower())


def arm_error_code(exc: BaseException) -> str | None:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    return str(code) if code else None


def explain(exc: Exception, doing: str) -> LabctlError:
    """One paragraph for an Azure failure: what failed, Azure's own words, and the way out."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, LabctlError):
        return exc
    if isinstance(exc, ClientAuthenticationError) and getattr(exc, "response", None) is None:
        return LabctlError(f"Could not log in to Azure while {doing}.", hint=LOGIN_HINT)
    if isinstance(exc, ServiceResponseError):
        return LabctlError(
            f"The connection to Azure Resource Manager broke while {doing} ({exc}).",
            hint="Whatever Azure had started goes on there; run the same command again to resume.",
        )
    if isinstance(exc, ServiceRequestError):
        return LabctlError(
            f"Could not reach Azure Resource Manager at {settings.arm_endpoint()} while {doing} ({exc}).",
            hint="Check your network connection (and LABCTL_ARM_ENDPOINT if you set it), then run the command again.",
        )
    if isinstance(exc, HttpResponseError):
        code = arm_error_code(exc) or ""
        status = exc.status_code
        message = getattr(getattr(exc, "error", None), "message", None) or (exc.reason or "")
        sentence, hint = ERROR_SENTENCES.get(code, ("", ""))
        if status == 429:
            sentence, hint = ERROR_SENTENCES["TooManyRequests"]
            wait = (getattr(exc.response, "headers", None) or {}).get("Retry-After")
            if wait and str(wait).isdigit():
                hint = f"Azure asks to wait {int(wait) // 60} min {int(wait) % 60} s; run the command again after that."
        if status in (401,) and not sentence:
            sentence, hint = "Azure did not accept your login", LOGIN_HINT
        if status == 403 and not sentence:
            sentence, hint = ERROR_SENTENCES["AuthorizationFailed"]
        head = sentence or f"Azure answered {status} {code}".strip()
        detail = f" (Azure: {code + ': ' if code else ''}{_one_line(message)})" if message else ""
        error = NoCapacity if status != 429 and is_capacity(code, str(message)) else LabctlError
        return error(
            f"{head} while {doing}{detail}.",
            hint=hint
            or "Run the command again; if it keeps failing, run it with --verbose and check the Azure "
            "portal's activity log.",
        )
    if isinstance(exc, ClientAuthenticationError):
        return LabctlError(f"Could not log in to Azure while {doing}.", hint=LOGIN_HINT)
    return LabctlError(f"Azure failed while {doing}: {exc}.", hint="Run again with --verbose for details.")


_DOING: contextvars.ContextVar[str] = contextvars.ContextVar("labctl_azure_doing", default="an Azure operation")


def finish(poller: Any) -> Any:
    """The result of a long-running ARM operation, waited for until ``settings.operation_timeout`` at most
    (named in the message by the ``arm`` block it runs in)."""
    doing = _DOING.get()
    limit = settings.operation_timeout()
    result = poller.result(timeout=limit)
    if not poller.done():
        raise LabctlError(
            f"Azure had not finished {doing} after {limit:.0f} s; labctl stopped waiting.",
            hint="The operation goes on in Azure: run the same command again to pick it up, or look at the Azure "
            "portal's activity log if it seems stuck.",
        )
    return result


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text[:400].rstrip(".")


@contextlib.contextmanager
def arm(doing: str) -> Iterator[None]:
    """Run ARM calls, turning any Azure SDK failure into a LabctlError that says what to do."""
    token = _DOING.set(doing)
    try:
        yield
    except LabctlError:
        raise
    except Exception as exc:
        if type(exc).__module__.startswith("azure."):
            raise explain(exc, doing) from exc
        raise
    finally:
        _DOING.reset(token)


T = TypeVar("T")


def side_by_side(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Every call at once, one thread each; their results in order, or the first failure once all are done.

    Daemon threads, waited for in short slices: Ctrl-C reaches the main thread at once and the command ends
    without waiting for the calls in flight (a pool's workers would hold the exit until they returned).
    What Azure started goes on there, and the next `up` converges on it.
    """
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as exc:  # handed to the caller's thread, raised there
            errors[index] = exc

    threads = [threading.Thread(target=run, args=(i,), name=f"labctl-arm-{i}", daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.1)
    for error in errors:
        if error is not None:
            raise error
    return results


def _retry_policy() -> Any:
    from azure.core.pipeline.policies import RetryPolicy

    class LabRetryPolicy(RetryPolicy):
        """azure-core's retry with exponential backoff, but not a Retry-After longer than labctl will wait."""

        def is_retry(self, settings_: dict[str, Any], response: Any) -> bool:
            wait = self.get_retry_after(response)
            if wait is not None and wait > settings.retry_after_max():
                return False
            return bool(super().is_retry(settings_, response))

    return LabRetryPolicy(
        retry_total=5,
        retry_connect=3,
        retry_read=3,
        retry_status=4,
        retry_backoff_factor=settings.retry_backoff(),
        retry_backoff_max=30,
        timeout=600,
    )


def make_credential() -> Any:
    from azure.identity import DefaultAzureCredential

    if not logging.getLogger().handlers:  # without --verbose, failures reach the user once, as a LabctlError
        logging.getLogger("azure.identity").setLevel(logging.ERROR)

    authority = os.environ.get("AZURE_AUTHORITY_HOST", "")
    host = urlparse(authority if "//" in authority else f"https://{authority}").hostname or ""
    # A custom authority (Azure Stack, a private cloud) cannot be validated against Microsoft's public list.
    custom_authority = bool(authority) and host not in _KNOWN_AUTHORITIES
    # The instance metadata endpoint is only probed where a managed identity can exist, or when asked to: on a
    # laptop the probe costs seconds per command and reaches for an address that is not there.
    managed = any(os.environ.get(v) for v in _MANAGED_IDENTITY_HINTS)
    return DefaultAzureCredential(
        exclude_interactive_browser_credential=True,
        exclude_managed_identity_credential=not managed,
        disable_instance_discovery=custom_authority,
    )


@dataclass
class Azure:
    """The clients for one subscription, made once per command."""

    credential: Any
    subscription_id: str
    endpoint: str = field(default_factory=settings.arm_endpoint)
    notes: list[str] = field(default_factory=list)  # what to tell the user about the subscription chosen
    warnings: list[str] = field(default_factory=list)
    _principal: Principal | None = None
    _clients: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _kwargs(self) -> dict[str, Any]:
        return {
            "base_url": self.endpoint,
            "credential_scopes": [f"{self.endpoint}/.default"],
            "retry_policy": _retry_policy(),
            "polling_interval": settings.poll_interval(),
        }

    def _get(self, key: str, factory: Any) -> Any:
        with self._lock:
            if key not in self._clients:
                self._clients[key] = factory(self.credential, self.subscription_id, **self._kwargs())
            return self._clients[key]

    @property
    def principal(self) -> Principal:
        """Who is signed in (read from the ARM token): the owner of the labs this command makes."""
        with self._lock:
            if self._principal is None:
                with arm("reading who is signed in"):
                    token = self.credential.get_token(f"{self.endpoint}/.default").token
                self._principal = principal_from_token(token)
            return self._principal

    def warm(self) -> threading.Thread:
        """Import and build the clients in the background (the SDK modules take a second to import)."""

        def build() -> None:
            for name in ("network", "resources", "compute"):
                getattr(self, name)

        thread = threading.Thread(target=build, name="labctl-azure-clients", daemon=True)
        thread.start()
        return thread

    @property
    def compute(self) -> Any:
        from azure.mgmt.compute import ComputeManagementClient

        return self._get("compute", ComputeManagementClient)

    @property
    def network(self) -> Any:
        from azure.mgmt.network import NetworkManagementClient

        return self._get("network", NetworkManagementClient)

    @property
    def resources(self) -> Any:
        from azure.mgmt.resource.resources import ResourceManagementClient

        return self._get("resources", ResourceManagementClient)


def _token_check(credential: Any, endpoint: str) -> str:
    """Get a token before anything else, so a missing login is one clear message and nothing is created."""
    from azure.core.exceptions import ClientAuthenticationError

    try:
        return str(credential.get_token(f"{endpoint}/.default").token)
    except ClientAuthenticationError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        # The chain lists every credential it tried; the ones that were present but failed say why.
        failed = [
            ln
            for ln in lines
            if "Credential:" in ln and "unavailable" not in ln.lower() and ("failed" in ln.lower() or "AADSTS" in ln)
        ]
        reason = f" ({_one_line('; '.join(failed))})" if failed else ""
        raise LabctlError(f"No usable Azure login was found{reason}.", hint=LOGIN_HINT) from None


def list_subscriptions(credential: Any, endpoint: str) -> list[dict[str, Any]]:
    from azure.mgmt.resource.subscriptions import SubscriptionClient

    client = SubscriptionClient(
        credential,
        base_url=endpoint,
        credential_scopes=[f"{endpoint}/.default"],
        retry_policy=_retry_policy(),
    )
    with arm("listing your Azure subscriptions"):
        return [s.as_dict() for s in client.subscriptions.list()]


def connect(subscription: str | None = None) -> Azure:
    """Log in and settle the subscription: --subscription, then AZURE_SUBSCRIPTION_ID, then the only usable one
    or the Azure CLI's default (see ``subscriptions``)."""
    endpoint = settings.arm_endpoint()
    credential = make_credential()
    token = _token_check(credential, endpoint)
    try:
        principal: Principal | None = principal_from_token(token)
    except LabctlError:
        principal = None  # said when an owner is needed (Azure.principal), not for commands that need none
    chosen = subscription or os.environ.get("AZURE_SUBSCRIPTION_ID") or None
    if chosen:
        if not _SUB_RE.match(chosen):
            raise UsageError(
                f"'{chosen}' is not an Azure subscription id.",
                hint="It looks like 00000000-0000-0000-0000-000000000000; 'az account list' shows yours.",
            )
        return Azure(credential, chosen, endpoint, _principal=principal)
    from labctl.targets.azure.subscriptions import cli_default_subscription, pick_subscription

    picked = pick_subscription(list_subscriptions(credential, endpoint), cli_default_subscription())
    return Azure(
        credential, picked.subscription_id, endpoint, notes=picked.notes, warnings=picked.warnings, _principal=principal
    )
