"""`down`, `stop` and `start` never act on a colleague's lab by accident: only with --force and its name typed."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from labctl.errors import UsageError
from labctl.state import LabRecord
from labctl.targets.base import Target
from labctl.ui import Reporter


@dataclass
class Override:  # what the user said to act on a lab that is not theirs
    force: bool = False
    confirm_name: str | None = None


def check_owner(record: LabRecord, target: Target, verb: str, override: Override, ui: Reporter) -> bool:
    """Refuse ``verb`` on someone else's lab unless forced and confirmed; True when so confirmed (ask nothing more)."""
    owner = target.owner_of(record)
    if owner is None or owner.mine:
        return False
    action = {"down": "delete"}.get(verb, verb)
    whose = f"belongs to {owner.name}" if owner.name else "does not say who made it (it predates per-person labs)"
    what = f"Lab '{record.name}' {whose}, and you are signed in as {owner.you}"
    flags = f"--name {record.name} --force --confirm-name {record.name}"
    if not override.force:
        raise UsageError(
            f"{what}; labctl does not {action} a lab that is not yours.",
            hint=f"Ask its owner, or, if you mean to {action} it anyway, run 'labctl {verb} {flags}'.",
        )
    typed = override.confirm_name
    if typed is None:
        if not sys.stdin.isatty():
            raise UsageError(
                f"{what}; to {action} it, its name must be typed as confirmation.",
                hint=f"Add --confirm-name {record.name} to confirm from a script.",
            )
        try:
            typed = input(f"{what}. Type the lab's name to {action} it anyway: ").strip()
        except EOFError:
            typed = ""
    if typed != record.name:
        raise UsageError(
            f"'{typed}' is not the lab's name '{record.name}'; nothing was done to the lab.",
            hint=f"Type '{record.name}' exactly, or leave the lab to its owner.",
        )
    ui.warn(f"Going to {action} lab '{record.name}', which {whose}, as --force and the typed name confirm.")
    return True
