"""Checks of what a user types or sets, before anything is made or reached: each refusal names the value, where it
came from (``what``: ``--region``, ``LABCTL_SSH_PORT``, ``region in FILE``) and what would work instead."""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from labctl.errors import UsageError

TARGETS = ("azure", "ssh", "local")
RUN_ID = r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"  # as labctl makes them: no paths, no spaces
MAX_SECONDS = 7 * 24 * 3600  # a week is past every sensible wait, and far below what sleep() takes
MAX_REQUIREMENTS = 64 * 1024  # bytes of a requirements file: a list of packages, not a file given by mistake
REFUSE_WIDER_THAN = 8  # IPv4 ranges wider than this need '--allow-ip any' (see targets/azure/plan.py)
_UNREACHABLE = (  # what an address is, by the ipaddress property that says so
    ("a loopback address (this computer talking to itself)", "is_loopback"),
    ("link-local (valid on one network segment only)", "is_link_local"),
    ("a multicast address", "is_multicast"),
    ("the unspecified address, not a host", "is_unspecified"),
    ("reserved or broadcast, not assigned to any host", "is_reserved"),
)
_YES, _NO = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def _blank(value: str, what: str) -> None:
    if not value.strip():
        raise UsageError(f"{what} is empty.", hint=f"Give a value, or leave {what} out for the default.")


def pattern_check(
    default: str, pattern: str, message: str, hint: str, clean: Callable[[str], str] = str
) -> Callable[..., str]:
    """Matched whole (no trailing newline slips through) and in ASCII (no other script's digits pass)."""

    def check(value: str, what: str = default) -> str:
        _blank(value, what)
        if not re.fullmatch(pattern, clean(value), re.ASCII):
            raise UsageError(message.format(what=what, value=value), hint=hint)
        return clean(value)

    return check


check_subscription = pattern_check(
    "--subscription",
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "{what} {value!r} is not an Azure subscription id.",
    "It looks like 00000000-0000-0000-0000-000000000000; 'az account list -o table' shows yours.",
    str.strip,
)
check_region = pattern_check(
    "--region",
    r"auto|[a-z][a-z0-9]{2,30}",
    "{what} {value!r} is not an Azure region name.",
    "Use a name like eastus, westeurope or westus2, without spaces ('az account list-locations -o table' lists "
    "them), or auto.",
    str.lower,
)
# The shape only: whether Azure offers it is up's to say, so a retired size never blocks a billing lab's down or status.
check_size_name = pattern_check(
    "--size",
    r"[A-Za-z0-9_]{2,64}",
    "labctl does not know the VM size {value!r} ({what}): Azure's size names are letters, digits and '_'.",
    "Sizes look like Standard_D4s_v5 or NC4as_T4_v3; 'labctl up --help' names the common ones.",
    str.strip,
)
check_shutdown_at = pattern_check(
    "--shutdown-at",
    r"([01][0-9]|2[0-3]):[0-5][0-9]",
    "{what} {value!r} is not a time of day.",
    "Use 24-hour HH:MM, for example 19:00, or --no-shutdown to opt out.",
)
# Azure's rule; root and admin (refused at creation) pass: tests log in to a stand-in VM as the local user, root in CI.
check_admin_user = pattern_check(
    "LABCTL_ADMIN_USER",
    r"[a-z_][a-z0-9_-]{0,31}",
    "{what} {value!r} is not a user name Azure accepts for a VM's administrator.",
    "Use 1-32 lowercase letters, digits, '_' or '-', starting with a letter (not root or admin); or unset it for "
    "the default, azureuser.",
)
check_target = pattern_check(
    "--target", "|".join(TARGETS), "{what} {value!r} is not a target.", f"Choose one of: {', '.join(TARGETS)}."
)
check_run_id = pattern_check(
    "RUN",
    RUN_ID,
    "{what} {value!r} is not a run id.",
    "Run ids look like 20260101-120000-ab12 ('labctl runs' lists them); give one or its start.",
)


def check_allow_ip(text: str, what: str = "--allow-ip") -> str:
    """The CIDR a lab's SSH rule may admit ('*' for 'any'); refused when it could never reach an IPv4 VM."""
    _blank(text, what)
    value = text.strip()
    if value.lower() == "any":
        return "*"
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise UsageError(
            f"{what} {text!r} is not an IP address or CIDR range.",
            hint="Give your address (203.0.113.7) or a range (203.0.113.0/24); 'any' opens SSH to everyone.",
        ) from None
    unreachable = [problem for problem, hit in _UNREACHABLE if getattr(net, hit)] if net.prefixlen else []
    if net.version == 6 or unreachable:
        problem = "IPv6, and the lab's VM has only a public IPv4 address" if net.version == 6 else unreachable[0]
        raise UsageError(
            f"{what} {text} is {problem}, so SSH from there would never reach the lab's VM.",
            hint="Give your public IPv4 address (what https://api.ipify.org shows) or range, or leave the "
            "setting out and labctl finds your address.",
        )
    if net.prefixlen < REFUSE_WIDER_THAN:
        covers = f"{net.num_addresses:,} addresses, a large part of the" if net.prefixlen else "the whole"
        raise UsageError(
            f"{what} {text} would open SSH to {covers} internet; labctl refuses ranges wider than "
            f"/{REFUSE_WIDER_THAN} so that SSH is not opened that far by mistake.",
            hint=f"Give your own address or a range of /{REFUSE_WIDER_THAN} or narrower, "
            "or type '--allow-ip any' if you really mean everyone.",
        )
    return str(net)


def check_port(text: str, what: str) -> int:
    port = int(text.strip()) if re.fullmatch(r"[0-9]{1,5}", text.strip(), re.ASCII) else -1
    if not 0 < port < 65536:
        raise UsageError(f"{what} {text!r} is not a port number.", hint="Use a whole number from 1 to 65535.")
    return port


def check_url(value: str, what: str, schemes: tuple[str, ...] = ("https",)) -> str:
    url = value.strip()
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname or not url.isprintable() or " " in url:
        raise UsageError(
            f"{what} {value!r} is not an {' or '.join(schemes)} URL.",
            hint=f"Give a URL such as {schemes[0]}://example.com/, or unset it for the default.",
        )
    return url


def check_seconds(text: str, what: str) -> float:
    try:
        number = float(text) if text.isascii() else math.nan
    except ValueError:
        number = math.nan
    if not 0 <= number <= MAX_SECONDS:  # nan and inf too
        raise UsageError(
            f"{what} {text!r} is not a number of seconds labctl can wait.",
            hint=f"Use a number such as 2 or 0.5, at most {MAX_SECONDS} (a week).",
        )
    return number


def check_yes_no(text: str, what: str) -> str:
    if text.strip().lower() not in _YES | _NO:
        raise UsageError(f"{what} {text!r} is neither yes nor no.", hint="Use 1 or 0 (or yes/no, true/false).")
    return text


def env_yes(name: str) -> bool:
    """A yes/no variable, in every spelling check_yes_no lets through; unset or empty is no."""
    return os.environ.get(name, "").strip().lower() in _YES


def check_directory(text: str, what: str) -> str:
    _blank(text, what)
    if Path(text).expanduser().exists() and not Path(text).expanduser().is_dir():
        raise UsageError(f"{what} '{text}' is not a directory.", hint="Point it at a directory, or unset it.")
    return text


def read_requirements(path: Path, what: str = "--requirements") -> str:
    """pip's lines: the file's, or an environment.yml's `pip:` ones. Only a regular file, read no further than the
    limit: a FIFO would hang `up`, a device never end."""
    try:
        problem = "not a regular file" if path.exists() else "missing"
        if path.is_file():
            with path.open("rb") as file:
                data = file.read(MAX_REQUIREMENTS + 1)
            problem = f"larger than {MAX_REQUIREMENTS // 1024} KiB"
            if len(data) <= MAX_REQUIREMENTS:
                text = data.decode()
                return _environment_pip(text, f"{what} {path}") if path.suffix in (".yml", ".yaml") else text
    except UnicodeDecodeError:
        problem = "not UTF-8 text"
    except OSError as exc:
        problem = f"unreadable ({exc.strerror})"
    raise UsageError(
        f"{what} {path} is {problem}.",
        hint="Give pip's requirements file (a package a line, as 'pip install -r' reads it; empty: no packages), "
        "or a conda environment.yml whose packages are under 'pip:'.",
    )


def _environment_pip(text: str, what: str) -> str:
    """The lab image installs with pip, so a conda package (other than python and pip, which it has) is refused by
    name rather than installed under another name or left out."""
    import yaml

    try:
        deps = (yaml.safe_load(text) or {}).get("dependencies") or []
    except (yaml.YAMLError, AttributeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else "not a mapping"
        raise UsageError(f"{what} is not an environment.yml ({first}).", hint=ENVIRONMENT_HINT) from None
    if not isinstance(deps, list):
        raise UsageError(f"{what}: its 'dependencies' are not a list.", hint=ENVIRONMENT_HINT)
    pip = [d["pip"] for d in deps if _pip_group(d)]
    lines = [line for group in pip for line in group]
    conda = [d if isinstance(d, str) else "an entry that is not text" for d in deps if not _pip_group(d)]
    others = [d for d in conda if re.split(r"[<>=!~ ]", d.split("::")[-1], maxsplit=1)[0] not in ("python", "pip")]
    if others:
        raise UsageError(f"{what} lists packages for conda ({', '.join(others[:5])}).", hint=ENVIRONMENT_HINT)
    return "".join(f"{line}\n" for line in lines)


def _pip_group(entry: object) -> bool:
    """``- pip: [...]`` of text lines (text only: a YAML alias's nesting is never expanded into a string)."""
    if not (isinstance(entry, dict) and list(entry) == ["pip"] and isinstance(entry["pip"], list)):
        return False
    return all(isinstance(line, str) for line in entry["pip"])


ENVIRONMENT_HINT = (
    "The lab image installs packages with pip: list them under 'pip:' in its dependencies (most have the same name "
    "on PyPI), or give a requirements.txt."
)


def check_file(text: str, what: str) -> str:
    if Path(text).expanduser().exists() and not Path(text).expanduser().is_file():
        raise UsageError(f"{what} '{text}' is not a file.", hint="Point it at a TOML file, or unset it.")
    return text


# Image refs reach root (cloud-init, the engine): only the grammar of github.com/distribution/reference passes.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"(?P<name>{_NAME})(?::{_TAG})?(?:@{_DIGEST})?", re.ASCII)
NAME_MAX = 255


def check_image_ref(value: object, what: str) -> str:
    match = _REFERENCE.fullmatch(value) if isinstance(value, str) else None
    if match is None or len(match.group("name")) > NAME_MAX:
        raise UsageError(
            f"{what} is {value!r}, which is not a container image reference.",
            hint="Write it as [registry/]repository[:tag][@sha256:digest] in lower case, for example "
            "pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime or myregistry.azurecr.io/team/lab:1.0.",
        )
    return match.string


# Variables labctl reads besides the settings, checked with them before any command starts (Settings.check).
ENV_CHECKS: dict[str, Callable[[str, str], object]] = {
    "LABCTL_SSH_PORT": check_port,
    "LABCTL_ADMIN_USER": check_admin_user,
    "LABCTL_ARM_ENDPOINT": check_url,
    "LABCTL_IP_ECHO_URL": check_url,
    "LABCTL_PRICES_URL": lambda v, w: check_url(v, w, ("https", "http")),
    "LABCTL_POLL_INTERVAL": check_seconds,
    "LABCTL_RETRY_BACKOFF": check_seconds,
    "LABCTL_RETRY_AFTER_MAX": check_seconds,
    "LABCTL_OPERATION_TIMEOUT": check_seconds,
    "LABCTL_LOCK_WAIT": check_seconds,
    "LABCTL_PREWARM_POLL": check_seconds,
    "LABCTL_ACCEPT_IMAGE_TERMS": check_yes_no,
    "LABCTL_MANAGED_IDENTITY": check_yes_no,
    "LABCTL_CACHE_DIR": check_directory,
    "LABCTL_CONFIG_DIR": check_directory,
    "LABCTL_STATE_DIR": check_directory,
    "LABCTL_CONFIG": check_file,
    "AZURE_SUBSCRIPTION_ID": check_subscription,
}
