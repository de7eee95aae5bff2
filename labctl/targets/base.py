"""The one interface every target implements, and the optional capabilities some targets add.

Every target can plan, provision, describe and destroy a lab (``Target``). What only some targets can do is a
small protocol of its own, declared here and implemented in the target's module:

- ``PowerControl``: switch the machine off without losing it, and on again (Azure: deallocate / start).
- ``LabDiscovery``: find labs that this computer has no record of, and rebuild a record for one (Azure: tags).
- ``UnreachableExplainer``: say why a machine does not answer when the reason is known (Azure: deallocated).
- ``Ownership``: tell whose a lab is where several people share the place labs live (Azure: a subscription).
- ``IdleStop``: let the machine switch itself off when idle, with rights of its own (Azure: the VM's managed
  identity holds a role that may only read and deallocate that VM). Elsewhere the idle agent stops the container.

Workflows ask ``get_target(record.target)`` and then ``as_power_control(target)``; a ``None`` means
the target cannot, and the workflow says so in plain words instead of naming the target.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from labctl.errors import LabctlError, NoCapacity
from labctl.spec import LabSpec
from labctl.state import LabRecord, SaveFn
from labctl.ui import Outcome, Reporter

__all__ = [
    "FoundLab",
    "IdleStop",
    "LabDiscovery",
    "LabOwner",
    "Ownership",
    "PowerControl",
    "Target",
    "UnreachableExplainer",
    "as_discovery",
    "as_explainer",
    "as_idle_stop",
    "as_ownership",
    "as_power_control",
    "first_that_fits",
]


@runtime_checkable
class Target(Protocol):
    kind: str  # the --target name
    label: str  # how messages name where the lab lives: "Azure", "an SSH host", "this computer"
    # True when the target made the machine and removes it with the lab (a cloud VM): a record of such a lab
    # is never dropped while something may be left, and `down` cannot be forced past a failure to delete it.
    owns_machine: bool
    # False when the lab runs on this computer: there is no machine to log in to or tunnel to.
    remote: bool
    # The config settings (labctl.config.SETTINGS) only this target reads; `up` applies them to its labs only.
    settings: tuple[str, ...]

    def plan(self, spec: LabSpec) -> Outcome:
        """What `up` would create, without creating anything (`up --dry-run`)."""
        ...

    def provision(self, spec: LabSpec, record: LabRecord, ui: Reporter, save: SaveFn) -> LabRecord:
        """Create or converge the machine and fill in how to reach it (host, port, user, key, pinned host key).

        ``save`` is called after each step that created something, so an interrupted `up` can be resumed and a
        half-made lab can be removed by `down`.
        """
        ...

    def destroy(self, record: LabRecord, ui: Reporter) -> None:
        """Remove everything this target created for the lab, and check that nothing is left."""
        ...

    def describe(self, record: LabRecord) -> dict[str, Any]:
        """Every live fact `labctl status` shows: the machine (power, address, size, $/hour, uptime, shutdown
        time) and, where the machine answers, the lab container, Jupyter and the runs."""
        ...

    def removal(self, record: LabRecord) -> str:
        """What `down` deletes, in words for its confirmation question."""
        ...

    def where(self, record: LabRecord) -> tuple[str, str | None]:
        """(where the lab runs, the machine's size if known), for `labctl list`."""
        ...


@runtime_checkable
class PowerControl(Protocol):
    """Machines that can be switched off without being lost (no compute charges) and on again unchanged."""

    # What a switched-off machine still is and costs, for `labctl stop` to tell the user.
    off_means: str

    def power_off(self, record: LabRecord) -> dict[str, Any]:
        """Switch the machine off; updates ``record`` and returns the facts of ``describe`` afterwards."""
        ...

    def power_on(self, record: LabRecord) -> dict[str, Any]:
        """Switch the machine on; updates ``record`` (its address may be new) and returns its facts."""
        ...


@dataclass
class FoundLab:
    """A lab a target found by itself (not from this computer's records)."""

    name: str
    target: str
    where: str | None
    deleting: bool = False
    mine: bool | None = None  # made by the signed-in user; None when the lab does not say who made it
    details: dict[str, str | None] = field(default_factory=dict)  # shown by `list --json` as they are


@runtime_checkable
class LabDiscovery(Protocol):
    """Targets whose labs can be found without local state, so a lost state file never means a forgotten lab."""

    def find_labs(self, subscription: str | None) -> list[FoundLab]: ...

    def recover_record(self, name: str, subscription: str | None = None) -> LabRecord:
        """A record rebuilt from what the target knows, enough for `down`; NotFound when there is no such lab."""
        ...


@runtime_checkable
class UnreachableExplainer(Protocol):
    """Targets that can tell why a machine does not answer (e.g. it was switched off by a schedule)."""

    def explain_unreachable(self, record: LabRecord) -> LabctlError | None:
        """The reason as an error with the way out, or None when the target knows of none."""
        ...


@dataclass
class LabOwner:
    """Whose a lab is, as far as the target can tell."""

    name: str | None  # who made it, in words people read (a sign-in name); None when the lab does not say
    mine: bool  # made by the user signed in now (a lab without an owner counts as theirs when recorded here)
    you: str  # the user signed in now, in the same words


@runtime_checkable
class Ownership(Protocol):
    """Targets where colleagues' labs live side by side (Azure: one subscription), so each lab has an owner."""

    def owner_of(self, record: LabRecord) -> LabOwner:
        """Whose lab ``record`` is, compared with who is signed in now."""


@runtime_checkable
class IdleStop(Protocol):
    """Machines that can switch themselves off when idle, with their own narrowly scoped rights.

    ``provision`` sets the rights up when ``spec.idle_stop`` asks for it, checking first (before anything is
    created) that the user may grant them; where not, a default window is dropped with a warning and an asked-for
    one is refused, so the machine never holds half of them. ``destroy`` removes them with the lab.
    """

    default_idle_minutes: float  # the window `up` uses when none is asked for

    def idle_agent(self, record: LabRecord) -> dict[str, Any]:
        """The target's part of the agent's config (mode, endpoints, prices); LabctlError when the machine has
        no rights to switch itself off (the reason, and what to ask for)."""
        ...


def as_power_control(target: Target) -> PowerControl | None:
    """``target`` when it can switch machines off and on, else None."""
    return target if isinstance(target, PowerControl) else None


def as_discovery(target: Target) -> LabDiscovery | None:
    """``target`` when it can find labs without local records, else None."""
    return target if isinstance(target, LabDiscovery) else None


def as_idle_stop(target: Target) -> IdleStop | None:
    """``target`` when its machines can switch themselves off when idle, else None."""
    return target if isinstance(target, IdleStop) else None


def as_explainer(target: Target) -> UnreachableExplainer | None:
    """``target`` when it can explain an unreachable machine, else None."""
    return target if isinstance(target, UnreachableExplainer) else None


def as_ownership(target: Target) -> Ownership | None:
    """``target`` when its labs have owners, else None (a lab on one's own SSH host or computer)."""
    return target if isinstance(target, Ownership) else None


C = TypeVar("C")
R = TypeVar("R")


def first_that_fits(choices: Iterator[C], attempt: Callable[[C], R], ui: Reporter) -> R:
    """``attempt`` the choices in turn until one is not refused for capacity (``NoCapacity``).

    The next choice is drawn only after a refusal, so a provider can compute it from what was refused; the
    refusal of the last one is raised as it is.
    """
    choice = next(choices, None)
    if choice is None:
        raise LabctlError("There is nothing to try: no size and region were chosen.", hint="Give --size or --region.")
    while True:
        try:
            return attempt(choice)
        except NoCapacity as refused:
            following = next(choices, None)
            if following is None:
                raise
            ui.warn(f"{refused.message} Trying the next choice.")
            choice = following
