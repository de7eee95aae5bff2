"""Who is signed in, which subscription, the azure-mgmt clients (imported lazily), and ARM errors as sentences."""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import importlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from labctl.errors import LabctlError, NoCapacity, UsageError
from labctl.targets.azure import settings
from labctl.validate import check_subscription, env_yes

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
# Set by Azure where a managed identity can exist (App Service, Functions, AKS pod and workload identity).
_MANAGED_IDENTITY_HINTS = (
    "IDENTITY_ENDPOINT",
    "MSI_ENDPOINT",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_FEDERATED_TOKEN_FILE",
)
_HEX_RE = re.compile(r"[^0-9a-f]")

_REGISTER = (
    "The subscription is not registered for a resource provider labctl needs",
    "Run 'az provider register --namespace Microsoft.Compute' (and Microsoft.Network, Microsoft.DevTestLab).",
)
_NO_ROOM = "Try again later, another --region (or --region auto), or give fall-back sizes with repeated --size."
_THROTTLED = ("Azure is throttling this subscription", "Wait a few minutes and try again.")
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
    "SubscriptionNotRegistered": _REGISTER,
    "MissingSubscriptionRegistration": _REGISTER,
    "ReadOnlyDisabledSubscription": (
        "The subscription is disabled (read-only)",
        "Re-enable it in the Azure portal or pick another --subscription.",
    ),
    "SkuNotAvailable": (
        "That VM size is not available to this subscription in this region right now",
        "Try another --region (or --region auto) or another --size.",
    ),
    "AllocationFailed": ("Azure has no capacity for that VM size in this region right now", _NO_ROOM),
    "ZonalAllocationFailed": ("Azure has no capacity for that VM size in this zone right now", _NO_ROOM),
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
    "OperationNotAllowedThrottled": _THROTTLED,
    "TooManyRequests": _THROTTLED,
}


# Refusals that mean "no room for this size here now": another size or region may have it (NoCapacity).
_CAPACITY_CODES = (
    "AllocationFailed",
    "ZonalAllocationFailed",
    "OverconstrainedAllocationRequest",
    "SkuNotAvailable",
    "QuotaExceeded",
)


def arm_error_code(exc: BaseException | None) -> str | None:
    code = getattr(getattr(exc, "error", None), "code", None)
    return str(code) if code else None


def explain(exc: Exception, doing: str) -> LabctlError:
    """One paragraph for an Azure failure: what failed, Azure's own words, and the way out."""
    from azure.core import exceptions as e

    if isinstance(exc, e.ClientAuthenticationError) and getattr(exc, "response", None) is None:
        return LabctlError(f"Could not log in to Azure while {doing}.", hint=LOGIN_HINT)
    if isinstance(exc, e.ServiceResponseError):
        return LabctlError(
            f"The connection to Azure Resource Manager broke while {doing} ({exc}).",
            hint="Whatever Azure had started goes on there; run the same command again to resume.",
        )
    if isinstance(exc, e.ServiceRequestError):
        return LabctlError(
            f"Could not reach Azure Resource Manager at {settings.arm_endpoint()} while {doing} ({exc}).",
            hint="Check your network connection (and LABCTL_ARM_ENDPOINT if you set it), then run the command again.",
        )
    if isinstance(exc, e.DecodeError) or not type(exc).__module__.startswith("azure."):
        what = _one_line(str(exc)) if isinstance(exc, e.DecodeError) else "it has a shape no ARM answer has"
        return LabctlError(
            f"Azure's answer could not be read while {doing} ({what}).",
            hint="A proxy, a firewall or LABCTL_ARM_ENDPOINT may have changed it, or Azure failed for a moment: run "
            "the command again; if it keeps failing, run it with --verbose and check your proxy settings.",
        )
    if not isinstance(exc, e.HttpResponseError):
        return LabctlError(f"Azure failed while {doing}: {exc}.", hint="Run again with --verbose for details.")
    code, status = arm_error_code(exc) or "", exc.status_code
    message = getattr(getattr(exc, "error", None), "message", None) or (exc.reason or "")
    sentence, hint = ERROR_SENTENCES.get(code, ("", ""))
    if status == 429:
        sentence, hint = _THROTTLED
        wait = (getattr(exc.response, "headers", None) or {}).get("Retry-After")
        if wait and str(wait).isdigit():
            hint = f"Azure asks to wait {int(wait) // 60} min {int(wait) % 60} s; run the command again after that."
    elif status == 401 and not sentence:
        sentence, hint = "Azure did not accept your login", LOGIN_HINT
    elif status == 403 and not sentence:
        sentence, hint = ERROR_SENTENCES["AuthorizationFailed"]
    detail = f" (Azure: {code + ': ' if code else ''}{_one_line(message)})" if message else ""
    capacity = code in _CAPACITY_CODES or (code == "OperationNotAllowed" and "quota" in str(message).lower())
    return (NoCapacity if status != 429 and capacity else LabctlError)(
        f"{sentence or f'Azure answered {status} {code}'.strip()} while {doing}{detail}.",
        hint=hint or "Run the command again; if it keeps failing, run it with --verbose and see Azure's activity log.",
    )


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:400].rstrip(".")


_DOING: contextvars.ContextVar[str] = contextvars.ContextVar("labctl_azure_doing", default="an Azure operation")


@contextlib.contextmanager
def arm(doing: str) -> Iterator[None]:
    """ARM failures, and answers of a shape no ARM answer has, become a LabctlError that says what to do."""
    token = _DOING.set(doing)
    try:
        yield
    except LabctlError:
        raise
    except Exception as exc:
        shape = isinstance(exc, (ValueError, TypeError, AttributeError, KeyError))  # an answer no ARM answer is
        if not shape and not type(exc).__module__.startswith("azure."):
            raise
        raise explain(exc, doing) from exc
    finally:
        _DOING.reset(token)


def _stopped_waiting(doing: str, seconds: float) -> LabctlError:
    return LabctlError(
        f"Azure had not finished {doing} after {seconds:.0f} s; labctl stopped waiting.",
        hint="It goes on in Azure: run the same command again to pick it up (Azure's activity log if it seems stuck).",
    )


def finish(poller: Any) -> Any:
    result = poller.result(timeout=settings.operation_timeout())
    if not poller.done():
        raise _stopped_waiting(_DOING.get(), settings.operation_timeout())
    return result


def get_or_none(doing: str, call: Callable[[], Any]) -> dict[str, Any] | None:
    from azure.core.exceptions import ResourceNotFoundError

    with arm(doing):
        try:
            result = call()
        except ResourceNotFoundError:
            return None
        return dict(result.as_dict()) if hasattr(result, "as_dict") else dict(result)


def dig(data: Any, *path: str) -> Any:
    """``data[path[0]][path[1]]...`` of an ARM answer, None where a step is missing or not an object."""
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


T = TypeVar("T")


def poll(read: Callable[[], T], done: Callable[[T], bool], seconds: float | None = None, doing: str = "") -> T:
    """The last ``read()`` once ``done`` or out of time; out of time with ``doing`` named, "labctl stopped waiting"."""
    seconds = settings.operation_timeout() if seconds is None else seconds
    deadline = time.monotonic() + seconds
    while not done(answer := read()) and time.monotonic() < deadline:
        time.sleep(max(settings.poll_interval(), 0.01))
    if doing and not done(answer):
        raise _stopped_waiting(doing, seconds)
    return answer


def attempt(call: Callable[[], T]) -> T | LabctlError:
    """A refusal as a value: for calls made side by side whose failure matters only to some callers."""
    try:
        return call()
    except LabctlError as exc:
        return exc


def wait_rg_gone(azure: Azure, rg: str) -> None:
    doing, groups = f"deleting the resource group {rg}", azure.resources.resource_groups
    poll(lambda: get_or_none(doing, lambda: groups.get(rg)), lambda group: group is None, doing=doing)


def client_options(endpoint: str) -> dict[str, Any]:
    from azure.core.pipeline.policies import RetryPolicy

    class LabRetryPolicy(RetryPolicy):
        def is_retry(self, settings_: dict[str, Any], response: Any) -> bool:
            # A longer Retry-After than LABCTL_RETRY_AFTER_MAX is not waited out: the user gets a message instead.
            wait = self.get_retry_after(response)
            if wait is not None and wait > float(os.environ.get("LABCTL_RETRY_AFTER_MAX") or 60):
                return False
            return bool(super().is_retry(settings_, response))

    retry = LabRetryPolicy(
        retry_total=5,
        retry_connect=3,
        retry_read=3,
        retry_status=4,
        retry_backoff_factor=float(os.environ.get("LABCTL_RETRY_BACKOFF") or 1),  # seconds, doubled on each try
        retry_backoff_max=30,
        timeout=600,
    )
    return {"base_url": endpoint, "credential_scopes": [f"{endpoint}/.default"], "retry_policy": retry}


def make_credential() -> Any:
    from azure.identity import DefaultAzureCredential

    if not logging.getLogger().handlers:  # without --verbose, failures reach the user once, as a LabctlError
        logging.getLogger("azure.identity").setLevel(logging.ERROR)
    authority = os.environ.get("AZURE_AUTHORITY_HOST", "")
    host = urlparse(authority if "//" in authority else f"https://{authority}").hostname or ""
    # The instance metadata endpoint is only probed where a managed identity can exist, or when asked to: on a
    # laptop the probe costs seconds per command and reaches for an address that is not there.
    return DefaultAzureCredential(
        exclude_interactive_browser_credential=True,
        exclude_managed_identity_credential=not (
            env_yes("LABCTL_MANAGED_IDENTITY") or any(os.environ.get(v) for v in _MANAGED_IDENTITY_HINTS)
        ),
        # A custom authority (Azure Stack, a private cloud) cannot be validated against Microsoft's public list.
        disable_instance_discovery=bool(authority) and host not in _KNOWN_AUTHORITIES,
    )


@dataclass(frozen=True)
class Principal:
    oid: str  # the object id: the same for one person in every tenant's subscription
    name: str  # how people read it: the user's sign-in name, else the application's name or id

    @property
    def short(self) -> str:
        """What resource-group names carry."""
        return _HEX_RE.sub("", self.oid.lower())[:8]


def principal_from_token(token: str) -> Principal:
    """Labctl's own token, just received over TLS: its payload is read unverified (ARM checks it)."""
    claims: object = None
    payload = token.split(".")[1] if token.count(".") == 2 else ""
    with contextlib.suppress(ValueError, binascii.Error):  # not a token's shape: no oid, said below
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    oid = claims.get("oid") if isinstance(claims, dict) else None
    if not isinstance(claims, dict) or not isinstance(oid, str) or not _HEX_RE.sub("", oid.lower()):
        raise LabctlError(
            "The Azure login token names no object id ('oid'), so labctl cannot tell your labs from a colleague's.",
            hint="Log in as an Entra ID user, service principal or managed identity ('az login', or the "
            "AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_CLIENT_SECRET variables), then run the command again.",
        )
    keys = ("upn", "unique_name", "preferred_username", "app_displayname", "appid")
    return Principal(oid=oid, name=next((str(claims[k]) for k in keys if claims.get(k)), oid))


_CLIENTS = {
    "network": ("azure.mgmt.network", "NetworkManagementClient"),
    "resources": ("azure.mgmt.resource.resources", "ResourceManagementClient"),
    "compute": ("azure.mgmt.compute", "ComputeManagementClient"),
}


@dataclass
class Azure:
    credential: Any
    subscription_id: str
    endpoint: str = field(default_factory=settings.arm_endpoint)
    notes: list[str] = field(default_factory=list)  # what to tell the user about the subscription chosen
    warnings: list[str] = field(default_factory=list)
    _principal: Principal | None = None
    _clients: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __getattr__(self, name: str) -> Any:
        """``compute``, ``network``, ``resources``: made when first used (each module takes a second to import)."""
        if name not in _CLIENTS:
            raise AttributeError(name)
        module, class_name = _CLIENTS[name]
        with self._lock:
            if name not in self._clients:
                factory = getattr(importlib.import_module(module), class_name)
                options = client_options(self.endpoint) | {"polling_interval": settings.poll_interval()}
                self._clients[name] = factory(self.credential, self.subscription_id, **options)
            return self._clients[name]

    @property
    def principal(self) -> Principal:
        with self._lock:
            if self._principal is None:
                with arm("reading who is signed in"):
                    token = self.credential.get_token(f"{self.endpoint}/.default").token
                self._principal = principal_from_token(token)
            return self._principal

    def warm(self) -> None:
        threading.Thread(
            target=lambda: [getattr(self, n) for n in _CLIENTS], name="labctl-azure-clients", daemon=True
        ).start()


def list_subscriptions(credential: Any, endpoint: str) -> list[dict[str, Any]]:
    from azure.mgmt.resource.subscriptions import SubscriptionClient

    client = SubscriptionClient(credential, **client_options(endpoint))
    with arm("listing your Azure subscriptions"):
        return [s.as_dict() for s in client.subscriptions.list()]


def cli_default_subscription() -> str | None:
    """The Azure CLI's default: ``isDefault`` in its ``azureProfile.json``, which it writes with a byte-order mark."""
    folder = Path(os.environ.get("AZURE_CONFIG_DIR") or Path.home() / ".azure")
    try:
        data = json.loads((folder / "azureProfile.json").read_text(encoding="utf-8-sig"))
        return next((str(s["id"]) for s in data["subscriptions"] if s.get("isDefault") and s.get("id")), None)
    except (OSError, ValueError, LookupError, TypeError, AttributeError):  # no profile, or not one of this shape
        return None


def _label(sub: dict[str, Any]) -> str:
    return f"{sub['subscriptionId']} ({sub.get('displayName', '')})"


def pick_subscription(subs: list[dict[str, Any]], cli_default: str | None) -> Azure:
    """Warned and PastDue subscriptions still work (Azure warns before it disables one); the other states do not."""
    usable = [s for s in subs if str(s.get("state", "Enabled")).lower() in ("enabled", "warned", "pastdue")]
    if not usable:
        seen = "; ".join(f"{_label(s)}: {s.get('state')}" for s in subs)
        raise LabctlError(
            "Your Azure login sees no usable subscription" + (f" ({seen})." if seen else "."),
            hint="Re-enable one in the Azure portal, or create one or ask to be added to one, then log in again.",
        )
    default = [s for s in usable if str(s["subscriptionId"]).lower() == (cli_default or "").lower()]
    if len(usable) > 1 and not default:
        raise UsageError(
            f"Your Azure login sees several subscriptions: {'; '.join(_label(s) for s in usable)}.",
            hint="Choose one with --subscription ID or AZURE_SUBSCRIPTION_ID (or 'az account set --subscription ID').",
        )
    chosen = usable[0] if len(usable) == 1 else default[0]
    picked = Azure(None, str(chosen["subscriptionId"]))
    if len(usable) > 1:
        picked.notes.append(
            f"Using subscription {_label(chosen)}, the Azure CLI's default; pass --subscription to use another."
        )
    state = str(chosen.get("state", "Enabled"))
    if state.lower() != "enabled":
        picked.warnings.append(
            f"Subscription {_label(chosen)} is in state {state}: Azure may disable it soon (usually a billing "
            "problem). Resolve it in the Azure portal to keep the lab running."
        )
    return picked


def connect(subscription: str | None = None) -> Azure:
    """Logs in before choosing the subscription, so that a missing login is one clear message."""
    from azure.core.exceptions import ClientAuthenticationError

    endpoint, credential = settings.arm_endpoint(), make_credential()
    try:
        token = str(credential.get_token(f"{endpoint}/.default").token)
    except ClientAuthenticationError as exc:
        # The chain lists every credential it tried; the ones that were present but failed say why.
        tried = [ln.strip() for ln in str(exc).splitlines() if "Credential:" in ln and "unavailable" not in ln.lower()]
        failed = [ln for ln in tried if "failed" in ln.lower() or "AADSTS" in ln]
        reason = f" ({_one_line('; '.join(failed))})" if failed else ""
        raise LabctlError(f"No usable Azure login was found{reason}.", hint=LOGIN_HINT) from None
    found = attempt(lambda: principal_from_token(token))  # said when an owner is needed (Azure.principal), not now
    principal = found if isinstance(found, Principal) else None
    chosen = subscription or os.environ.get("AZURE_SUBSCRIPTION_ID") or None
    if chosen:
        chosen = check_subscription(chosen, "--subscription" if subscription else "AZURE_SUBSCRIPTION_ID")
        return Azure(credential, chosen, endpoint, _principal=principal)
    picked = pick_subscription(list_subscriptions(credential, endpoint), cli_default_subscription())
    return replace(picked, credential=credential, endpoint=endpoint, _principal=principal)
