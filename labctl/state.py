"""The local record of labs: one JSON file per lab, written atomically, readable by the owner only.

The record holds secrets (the Jupyter token, the path of the private key), so the directory is 0700 and
every file 0600 (on Windows: private by living in the user's profile, see labctl.files). For Azure labs the
cloud's tags stay the source of truth: a lost state file means labctl finds the lab again by its tags, never
a forgotten VM.
"""

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
from typing import Any

from labctl.errors import NotFound, NotReady, UsageError
from labctl.files import make_private_dir, write_private

STATE_ENV = "LABCTL_STATE_DIR"
STATUSES = ("creating", "ready", "stopped", "deleting", "found-in-azure")
TARGET_KINDS = ("azure", "ssh", "local")
_HOST_RE = re.compile(r"^[A-Za-z0-9.:_-]{1,253}$")  # a host name or an address, nothing a shell would read
_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_HOST_KEY_RE = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,2}( \S.*)?$")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,22}[a-z0-9]$|^[a-z]$")


def validate_lab_name(name: str) -> str:
    """Lab names end up in resource-group, VM and container names, so they keep to what all of those accept."""
    if not NAME_RE.match(name):
        raise UsageError(
            f"'{name}' is not a valid lab name.",
            hint="Use 1-24 characters: lowercase letters, digits and '-', starting with a letter and not "
            "ending with '-' (for example 'lab' or 'cifar-gpu').",
        )
    return name


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def state_dir() -> Path:
    env = os.environ.get(STATE_ENV)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_state_dir("labctl", appauthor=False))


@dataclass
class RunRecord:
    """One run of the lab on a machine, as far as this computer knows."""

    run_id: str
    started_at: str
    state: str = "running"  # running | succeeded | failed | stopped
    options: dict[str, Any] = field(default_factory=dict)
    fetched_to: str | None = None
    accuracy: float | None = None
    finished_at: str | None = None


@dataclass
class NodeRecord:
    """One more machine of a lab that trains on several (node 1, 2, ...); node 0 is the lab record's own machine.

    A node is reached with the lab's SSH key and its own pinned host key: directly at ``host``, or, where it
    has no public address (an Azure worker), through node 0 at its private address.
    """

    host: str  # where labctl's SSH goes: an address of its own, or the private address reached through node 0
    port: int = 22
    user: str | None = None
    host_key: str | None = None  # pinned public host key, "ssh-ed25519 AAAA..."
    private_address: str | None = None  # where the other nodes reach it; None: the same as host
    via_head: bool = False  # reached through node 0's SSH (no public address of its own)
    name: str | None = None  # what the target calls it (an Azure VM name), for messages
    container_name: str | None = None  # its lab container, once prepared

    def check_values(self, index: int) -> None:
        problems = [
            ("host", self.host, bool(_HOST_RE.match(self.host))),
            ("port", self.port, 0 < self.port < 65536),
            ("user", self.user, self.user is None or bool(_USER_RE.match(self.user))),
            ("host_key", self.host_key, self.host_key is None or bool(_HOST_KEY_RE.match(self.host_key))),
            (
                "private_address",
                self.private_address,
                self.private_address is None or bool(_HOST_RE.match(self.private_address)),
            ),
        ]
        for key, value, ok in problems:
            if not ok:
                raise ValueError(f"'{key}' of node {index} in the lab record is {value!r}, which no lab has")


@dataclass
class LabRecord:
    """What labctl knows about one lab: where it is, how to reach it, what runs there."""

    name: str
    target: str  # "azure" | "ssh" | "local"
    created_at: str = field(default_factory=now_iso)
    status: str = "creating"  # creating | ready | stopped | deleting
    # How to reach the machine (absent for target "local").
    host: str | None = None
    port: int = 22
    user: str | None = None
    ssh_key_path: str | None = None
    host_key: str | None = None  # pinned public host key, "ssh-ed25519 AAAA..."
    # The lab container.
    gpu: bool = False
    image: str | None = None
    container_name: str | None = None
    jupyter_token: str | None = None
    jupyter_port: int = 8888  # on the machine's loopback
    # What only the target knows (Azure: subscription, resource group, region, size, ...). Each target reads
    # and writes it through its own typed view (e.g. labctl.targets.azure.record.AzureData); workflows never do.
    target_data: dict[str, Any] = field(default_factory=dict)
    # Idle stop as `up` set it: window_minutes, budget_usd, action, and why not where it could not be set up.
    idle: dict[str, Any] = field(default_factory=dict)
    runs: list[RunRecord] = field(default_factory=list)
    # A lab on several machines: node 0 is the machine above, these are nodes 1, 2, ... in order.
    workers: list[NodeRecord] = field(default_factory=list)
    private_address: str | None = None  # node 0's address inside the lab's network (the rendezvous), if known

    @property
    def nodes(self) -> int:
        """How many machines the lab has (1 for a lab on one machine)."""
        return 1 + len(self.workers)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> LabRecord:
        """The record in ``data``; ValueError saying what is wrong when it is not the shape labctl writes.

        Checked here rather than trusted, since a hand-edited or half-written file would otherwise fail later
        with a bare TypeError somewhere far from the file.
        """
        values = _checked_fields(cls, data, "the lab record")
        runs = values.get("runs", [])
        if not isinstance(runs, list):
            raise ValueError("'runs' is not a list")
        values["runs"] = [RunRecord(**_checked_fields(RunRecord, r, f"run {i + 1}")) for i, r in enumerate(runs)]
        workers = values.get("workers", [])
        if not isinstance(workers, list):
            raise ValueError("'workers' is not a list")
        values["workers"] = [
            NodeRecord(**_checked_fields(NodeRecord, w, f"node {i + 1}")) for i, w in enumerate(workers)
        ]
        record = cls(**values)
        record.check_values()
        return record

    def check_values(self) -> None:
        """ValueError naming the first value no lab of labctl's could hold (they reach SSH, Docker and paths)."""
        from labctl.validate import RUN_ID_RE

        problems = [
            ("status", self.status, self.status in STATUSES),
            ("target", self.target, self.target in TARGET_KINDS),
            ("port", self.port, 0 < self.port < 65536),
            ("jupyter_port", self.jupyter_port, 0 < self.jupyter_port < 65536),
            ("host", self.host, self.host is None or bool(_HOST_RE.match(self.host))),
            ("user", self.user, self.user is None or bool(_USER_RE.match(self.user))),
            ("host_key", self.host_key, self.host_key is None or bool(_HOST_KEY_RE.match(self.host_key))),
        ]
        problems += [("run_id", r.run_id, bool(RUN_ID_RE.match(r.run_id)) and ".." not in r.run_id) for r in self.runs]
        problems.append(
            (
                "private_address",
                self.private_address,
                self.private_address is None or bool(_HOST_RE.match(self.private_address)),
            )
        )
        for key, value, ok in problems:
            if not ok:
                raise ValueError(f"'{key}' in the lab record is {value!r}, which no lab of labctl's has")
        for index, worker in enumerate(self.workers, start=1):
            worker.check_values(index)

    def require_ready(self) -> None:
        """NotReady (exit code 3) with the command that makes the lab ready, unless it is ready to use."""
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
        """The record without secrets, for ``--json`` output."""
        data = self.to_json()
        data.pop("jupyter_token", None)
        return data

    def find_run(self, run_id: str | None) -> RunRecord:
        if not self.runs:
            raise NotFound(f"Lab '{self.name}' has no runs yet.", hint="Start one with 'labctl run-lab'.")
        if run_id is None:
            return self.runs[-1]
        for run in self.runs:
            if run.run_id == run_id or run.run_id.startswith(run_id):
                return run
        known = ", ".join(r.run_id for r in self.runs[-5:])
        raise NotFound(f"Lab '{self.name}' has no run '{run_id}'.", hint=f"Recent runs: {known}.")


# What targets call after each step that created something, so an interrupted `up` resumes (StateStore.save).
SaveFn = Callable[[LabRecord], object]


def _checked_fields(cls: type, data: object, what: str) -> dict[str, Any]:
    """The known fields of ``data`` for dataclass ``cls``, each checked against its declared type.

    Unknown keys are dropped (a newer labctl may have written them); missing required ones and values of the
    wrong type raise ValueError.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{what} is a JSON {type(data).__name__}, not an object")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ValueError(f"{what} has no '{f.name}'")
            continue
        value = data[f.name]
        if f.name not in ("runs", "workers") and not _is_instance(value, hints[f.name]):
            raise ValueError(f"'{f.name}' in {what} is {value!r}, which is not {_hint_name(hints[f.name])}")
        values[f.name] = value
    return values


def _hint_name(hint: Any) -> str:
    """'a str', 'a str | None': the declared type in words for the error message."""
    return "a " + (hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", ""))


def _is_instance(value: object, hint: Any) -> bool:
    """isinstance for the simple hints the records use: str, int, bool, float, dict[...], list[...], X | None."""
    if hint is Any:
        return True
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_is_instance(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    origin = typing.get_origin(hint) or hint
    if origin is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin)


class StateStore:
    """Reads and writes lab records under one directory."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else state_dir()
        self.problems: dict[Path, str] = {}  # why each unreadable file found by ``scan`` could not be read

    @property
    def labs_dir(self) -> Path:
        return self.root / "labs"

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
        write_private(path, json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n")
        return path

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(name).unlink()

    def scan(self) -> tuple[list[LabRecord], list[Path]]:
        """The readable lab records, and the state files that could not be read (corrupt, wrong shape, or
        named so that no lab could have written them)."""
        if not self.labs_dir.is_dir():
            return [], []
        records: list[LabRecord] = []
        unreadable: list[Path] = []
        for path in sorted(self.labs_dir.glob("*.json")):
            try:
                records.append(self.load(path.stem))
            except NotFound:  # removed since the listing (a 'down' running beside this): not a lab any more
                continue
            except UsageError as exc:
                unreadable.append(path)
                self.problems[path] = exc.message
        return records, unreadable

    def list(self) -> list[LabRecord]:
        """The readable lab records; see ``scan`` for the files skipped because they could not be read."""
        return self.scan()[0]

    def resolve(self, name: str | None) -> LabRecord:
        """The lab the user meant: the one named, or the only one there is.

        An unreadable state file may be the lab the user means, so without --name it is never silently
        passed over: it is named, with the way out, instead of picking the one readable lab.
        """
        if name is not None:
            return self.load(name)
        labs, unreadable = self.scan()
        if unreadable:
            one = len(unreadable) == 1
            why = " ".join(self.problems.get(p, f"The state file {p} could not be read.") for p in unreadable)
            if labs:
                known = ", ".join(f"'{r.name}'" for r in labs)
                message = (
                    f"Besides the lab{'s' if len(labs) > 1 else ''} {known} there "
                    f"{'is a state file' if one else 'are state files'} labctl cannot read, which may be the lab "
                    f"you mean: {why}"
                )
            else:
                message = f"There is no readable lab. {why}"
            raise UsageError(
                message,
                hint=f"Move {'it' if one else 'them'} aside (for Azure labs 'labctl list' finds the lab again "
                "from its tags)" + (", or say which lab with --name NAME." if labs else "."),
            )
        if not labs:
            raise NotFound("There is no lab yet.", hint="Create one with 'labctl up' (or 'labctl up --gpu').")
        if len(labs) > 1:
            names = ", ".join(r.name for r in labs)
            raise UsageError(f"There are several labs ({names}).", hint="Say which one with --name NAME.")
        return labs[0]
