"""The one base class of every target. What only some targets can do has a default here: a refusal that says what
to do instead (exit 2), or the neutral answer of a target with nothing to add. Workflows never ask which they hold."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from labctl.errors import LabctlError, NoCapacity, NotFound, UsageError
from labctl.pricing import VmSize
from labctl.spec import LabSpec
from labctl.state import LabRecord, SaveFn
from labctl.ui import Outcome, Reporter


@dataclass
class FoundLab:
    name: str
    target: str
    where: str | None
    deleting: bool = False
    mine: bool | None = None  # made by the signed-in user; None when the lab does not say who made it
    details: dict[str, str | None] = field(default_factory=dict)  # shown by `list --json` as they are


@dataclass
class LabOwner:
    name: str | None  # who made it, in words people read (a sign-in name); None when the lab does not say
    mine: bool  # made by the user signed in now (a lab without an owner counts as theirs when recorded here)
    you: str  # the user signed in now, in the same words


class Target(ABC):
    kind: str
    label: str  # how messages name where the lab lives: "Azure", "an SSH host", "this computer"
    # True when the target made the machine and removes it with the lab (a cloud VM): a record of such a lab
    # is never dropped while something may be left, and `down` cannot be forced past a failure to delete it.
    owns_machine = False
    # False when the lab runs on this computer: there is no machine to log in to or tunnel to.
    remote = True
    # The config settings (labctl.spec.SETTINGS) only this target reads; `up` applies them to its labs only.
    settings: tuple[str, ...] = ()
    off_means = ""  # what a switched-off machine still is and costs, for `labctl stop` to tell the user
    default_idle_minutes = 0.0  # the idle window `up` uses when none is asked for
    workspace_kind = "a Docker volume of its own"  # where /workspace lives, for the plan

    @abstractmethod
    def plan(self, spec: LabSpec) -> Outcome:
        """What `up` would create, without creating anything (`up --dry-run`)."""

    @abstractmethod
    def provision(self, spec: LabSpec, record: LabRecord, ui: Reporter, save: SaveFn) -> LabRecord:
        """``save`` after each step that created something, so `down` can remove a half-made lab."""

    def destroy(self, record: LabRecord, ui: Reporter, keep_workspace: bool = False) -> None:
        """Remove everything made for the lab but a workspace kept, and check that nothing is left (by default each
        node's lab container and volume; a failure names what is left and how to remove it)."""
        from labctl.labhost import teardown_lab

        teardown_lab(record, ui, keep_volume=keep_workspace)

    def workspace_home(self, record: LabRecord) -> str | None:
        """Where node 0's /workspace lives and what keeping it costs, in words: what `down --keep-workspace` keeps
        and the next `up` of the lab's name finds again; None where it cannot outlive the lab."""
        from labctl.container import volume_name

        where = self.where(record)[0]
        return f"Docker volume {volume_name(record.name)} on {where} (disk space there, no charge of its own)"

    @abstractmethod
    def describe(self, record: LabRecord) -> dict[str, Any]:
        """The machines' live facts for `status` (power, address, size, $/hour, uptime, shutdown time)."""

    @abstractmethod
    def removal(self, record: LabRecord, keep: bool = False) -> str:
        """What `down` deletes, in words for its confirmation question; ``keep``: the workspace is kept."""

    @abstractmethod
    def where(self, record: LabRecord) -> tuple[str, str | None]:
        """(where the lab runs, the machine's size if known), for `labctl list`."""

    def check_workspace(self, record: LabRecord, ui: Reporter) -> None:
        """After `up` made the containers: /workspace is where `workspace_home` says (a Docker volume always is)."""
        return None

    def power_off(self, record: LabRecord, ui: Reporter) -> dict[str, Any]:
        raise self._cannot_power(record, "stop")

    def power_on(self, record: LabRecord, ui: Reporter) -> dict[str, Any]:
        raise self._cannot_power(record, "start")

    def resize(self, record: LabRecord, size: VmSize, ui: Reporter, agree: Callable[[], bool]) -> dict[str, Any]:
        raise self._cannot_power(record, "resize")

    def _cannot_power(self, record: LabRecord, verb: str) -> UsageError:
        return UsageError(
            f"'labctl {verb}' needs a target that can switch machines off and on; lab '{record.name}' runs on "
            f"{self.label} (target '{record.target}'), which cannot.",
            hint=f"{verb.capitalize()} the machine yourself, or 'labctl down' to remove the lab container.",
        )

    def find_labs(self, subscription: str | None) -> list[FoundLab] | None:
        """Labs found without local records, so a lost state file never means a forgotten lab; None: not searched."""
        return None

    def recover_record(self, name: str, subscription: str | None = None) -> LabRecord:
        raise NotFound(f"{self.label.capitalize()} keeps no lab that labctl could find without its record.")

    def explain_unreachable(self, record: LabRecord) -> LabctlError | None:
        return None

    def owner_of(self, record: LabRecord) -> LabOwner | None:
        """Whose lab ``record`` is, where colleagues' labs live side by side; None where labs have no owners."""
        return None

    def idle_agent(self, record: LabRecord) -> dict[str, Any]:
        """The target's part of the idle agent's config; LabctlError when the machine cannot have one."""
        return {"mode": "shutdown" if record.idle.get("action") == "shutdown" else "container"}


C = TypeVar("C")
R = TypeVar("R")


def first_that_fits(choices: Iterator[C], attempt: Callable[[C], R], ui: Reporter) -> R:
    """The next choice is drawn only after a ``NoCapacity`` refusal, so it may depend on it; the last one is raised."""
    refused: NoCapacity | None = None
    for choice in choices:
        if refused is not None:
            ui.warn(f"{refused.message} Trying the next choice.")
        try:
            return attempt(choice)
        except NoCapacity as exc:
            refused = exc
    assert refused is not None  # the plan has a size and a region at least
    raise refused
