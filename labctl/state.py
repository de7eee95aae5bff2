"""The local record of labs: one private JSON file per lab (it holds the Jupyter token), written atomically."""

from __future__ import annotations

import contextlib
import json
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, TypeVar

from labctl.errors import NotFound, NotReady, UsageError
from labctl.files import make_private_dir, write_private
from labctl.validate import RUN_ID, TARGETS, pattern_check

DEFAULT_NAME = "lab"  # the lab every command means when there is one and no --name is given
STATUSES = ("creating", "ready", "stopped", "deleting", "found-in-azure", "kept")  # kept: down, its workspace kept
T = TypeVar("T")

# Lab names end up in resource-group, VM and container names, so they keep to what all of those accept.
validate_lab_name = pattern_check(
    "--name",
    r"[a-z]([a-z0-9-]{0,22}[a-z0-9])?",
    "{what} {value!r} is not a valid lab name.",
    "Use 1-24 characters: lowercase letters, digits and '-', starting with a letter and not ending with '-' (for "
    "example 'lab' or 'cifar-gpu').",
)


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def user_dir(kind: str) -> Path:
    """labctl's ``state``, ``cache`` or ``config`` directory: ``LABCTL_<KIND>_DIR``, else the platform's own."""
    import platformdirs

    own = os.environ.get(f"LABCTL_{kind.upper()}_DIR")
    return Path(own or getattr(platformdirs, f"user_{kind}_dir")("labctl", appauthor=False))


def _matching(pattern: str) -> Callable[[str | None], bool]:
    return lambda value: value is None or bool(re.fullmatch(pattern, value, re.ASCII))


# Values no lab of labctl's could hold (they reach SSH, Docker and paths), refused by ``from_dict`` on reading.
Address = Annotated[str | None, _matching(r"[A-Za-z0-9.:_-]{1,253}")]  # nothing a shell would read
Port = Annotated[int, lambda port: 0 < port < 65536]
User = Annotated[str | None, _matching(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")]
HostKey = Annotated[  # pinned public host key, "ssh-ed25519 AAAA..."
    str | None, _matching(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,2}( \S.*)?")
]


@dataclass
class RunRecord:
    run_id: Annotated[str, _matching(RUN_ID)]
    started_at: str
    state: str = "running"  # running | succeeded | failed | stopped | interrupted | lost, as the machine says it
    shown: str | None = None  # as `runs` showed it when the machine stopped: `status` says it while the machine is off
    options: dict[str, Any] = field(default_factory=dict)
    fetched_to: str | None = None
    accuracy: float | None = None
    finished_at: str | None = None


@dataclass
class NodeRecord:
    """One machine of a lab, reached with the lab's SSH key and its own pinned host key. Node 0 runs Jupyter."""

    host: Address = None  # None: this computer (target local)
    port: Port = 22
    user: User = None  # None on nodes 1, 2, ...: node 0's
    host_key: HostKey = None
    private_address: Address = None  # where the other nodes reach it (node 0: the rendezvous); None: host
    via_head: bool = False  # reached through node 0's SSH (no public address of its own)
    name: str | None = None  # what the target calls it (an Azure VM name), for messages
    container_name: str | None = None  # its lab container, once prepared


@dataclass
class LabRecord:
    name: str
    target: Annotated[str, TARGETS.__contains__]
    created_at: str = field(default_factory=now_iso)
    status: Annotated[str, STATUSES.__contains__] = "creating"
    # The machines, node 0 first; one for a lab on one machine. Each is reached with the lab's one SSH key.
    nodes: Annotated[list[NodeRecord], bool] = field(default_factory=lambda: [NodeRecord()])
    ssh_key_path: str | None = None
    gpu: bool = False
    image: str | None = None  # what node 0's container runs: the lab image, `up --image`'s, or a packages layer over it
    image_asked: str | None = None  # `up --image`'s: every later up and resize makes the container from it again
    container_name: str | None = None  # node 0's, with Jupyter
    jupyter_token: str | None = None
    jupyter_port: Port = 8888  # on node 0's loopback
    requirements: str | None = None  # the text of `up --requirements`: its layer is rebuilt or found without the file
    # What only the target knows (Azure: subscription, region, size...), used only through its view (azure's AzureData).
    target_data: dict[str, Any] = field(default_factory=dict)
    # Idle stop as `up` set it: window_minutes, budget_usd, action, and why not where it could not be set up.
    idle: dict[str, Any] = field(default_factory=dict)
    runs: list[RunRecord] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: object) -> LabRecord:
        """Also reads a record from before a lab was a list of nodes (node 0's own fields, then ``workers``)."""
        if isinstance(data, dict) and "nodes" not in data:
            workers = data.get("workers", [])
            if not isinstance(workers, list):
                raise ValueError("'workers' is not a list")
            data = {**data, "nodes": [{k: data[k] for k in _NODE_0_KEYS if k in data}, *workers]}
        return from_dict(cls, data, "the lab record")

    def require_machines(self) -> None:
        """For every command but up, down, status, list and runs: a kept lab has no machine to act on."""
        if self.status == "kept":
            raise NotReady(
                f"Lab '{self.name}' is down; only its workspace is kept.",
                hint=f"'labctl up --name {self.name}' brings the lab back with it.",
            )

    def require_ready(self) -> None:
        self.require_machines()
        if self.status == "stopped":
            raise NotReady(
                f"Lab '{self.name}' is stopped (deallocated).",
                hint=f"'labctl start --name {self.name}' brings it back with the same address and keys.",
            )
        if self.status != "ready" or not self.container_name:
            raise NotReady(
                f"Lab '{self.name}' is not ready (state: {self.status}).",
                hint=f"Run 'labctl up --name {self.name}' to finish or repair it.",
            )

    def public_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("jupyter_token", "requirements")}


# What targets call after each step that created something, so an interrupted `up` resumes (StateStore.save).
SaveFn = Callable[[LabRecord], object]
_NODE_0_KEYS = ("host", "port", "user", "host_key", "private_address")
_ITEMS = {RunRecord: ("run", 1), NodeRecord: ("node", 0)}  # how errors name an element of a list, and the first


def from_dict(cls: type[T], data: object, what: str) -> T:
    """Unknown keys are dropped: a newer labctl may have written them, an older one keys no longer read."""
    if not isinstance(data, dict):
        raise ValueError(f"{what} is a JSON {type(data).__name__}, not an object")
    hints = typing.get_type_hints(cls, include_extras=True)
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ValueError(f"{what} has no '{f.name}'")
            continue
        value, hint = data[f.name], hints[f.name]
        checks: tuple[Callable[[Any], bool], ...] = getattr(hint, "__metadata__", ())
        hint = typing.get_args(hint)[0] if checks else hint
        if not _is_instance(value, hint):
            named = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")  # list[...]: list
            raise ValueError(f"'{f.name}' in {what} is {value!r}, which is not a {named}")
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        if item in _ITEMS:
            label, first = _ITEMS[item]
            value = [from_dict(item, v, f"{label} {i}") for i, v in enumerate(value, start=first)]
        if not all(ok(value) for ok in checks):
            raise ValueError(f"'{f.name}' in {what} is {value!r}, which no lab of labctl's has")
        values[f.name] = value
    return cls(**values)


def _is_instance(value: object, hint: Any) -> bool:
    if isinstance(hint, types.UnionType):
        return any(_is_instance(value, arg) for arg in typing.get_args(hint))
    origin = typing.get_origin(hint) or hint
    if origin in (int, float):  # a bool is no number here; an int is a float
        return isinstance(value, (int, origin)) and not isinstance(value, bool)
    return isinstance(value, origin)


class StateStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or user_dir("state")
        self.labs_dir = self.root / "labs"

    def _path(self, name: str) -> Path:
        return self.labs_dir / f"{validate_lab_name(name)}.json"

    def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def load(self, name: str) -> LabRecord:
        path = self._path(name)
        try:
            record = LabRecord.from_json(json.loads(path.read_text()))
            if record.name != name:
                raise ValueError(f"it holds lab '{record.name}', not '{name}'")
            return record
        except FileNotFoundError:
            raise NotFound(
                f"There is no lab named '{name}' on this computer.",
                hint="'labctl list' shows the labs labctl knows; create one with 'labctl up'.",
            ) from None
        except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError, as is a wrong shape
            raise UsageError(
                f"The state file {path} could not be read ({exc}).",
                hint="Move it aside; for Azure labs 'labctl list' finds the lab again from its tags.",
            ) from None

    def save(self, record: LabRecord) -> Path:
        path = self._path(record.name)
        make_private_dir(self.root)
        make_private_dir(path.parent)
        write_private(path, json.dumps(asdict(record), indent=2, sort_keys=True) + "\n")
        return path

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(name).unlink()

    def scan(self) -> tuple[list[LabRecord], dict[Path, str]]:
        records: list[LabRecord] = []
        unreadable: dict[Path, str] = {}
        for path in sorted(self.labs_dir.glob("*.json")) if self.labs_dir.is_dir() else []:
            try:
                records.append(self.load(path.stem))
            except NotFound:  # removed since the listing (a 'down' running beside this): not a lab any more
                continue
            except UsageError as exc:
                unreadable[path] = exc.message
        return records, unreadable

    def name_flag(self, name: str) -> str:
        """None only where `up` (the default lab) and the other commands (the only lab) would both pick this one."""
        return "" if name == DEFAULT_NAME and [r.name for r in self.scan()[0]] == [name] else f" --name {name}"

    def resolve(self, name: str | None) -> LabRecord:
        """The lab named, or the only one; never the one readable lab beside an unreadable file, which may be it."""
        if name is not None:
            return self.load(name)
        labs, unreadable = self.scan()
        if unreadable:
            readable = f" (readable: {', '.join(r.name for r in labs)})" if labs else ""
            raise UsageError(
                f"{' '.join(unreadable.values())} It may be the lab you mean{readable}.",
                hint="Move it aside (for Azure labs 'labctl list' finds the lab again from its tags)"
                + (", or say which lab with --name NAME." if labs else "."),
            )
        if not labs:
            raise NotFound("There is no lab yet.", hint="Create one with 'labctl up' (or 'labctl up --gpu').")
        if len(labs) > 1:
            names = ", ".join(r.name for r in labs)
            raise UsageError(f"There are several labs ({names}).", hint="Say which one with --name NAME.")
        return labs[0]
