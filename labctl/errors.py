"""Errors a user can cause or meet, each carrying the way out.

Every failure that reaches the CLI is a ``LabctlError``: the CLI prints ``message`` and ``hint`` as one
paragraph and exits with ``exit_code``; only ``--verbose`` shows a traceback.

One exit-code table for every command:

====  ==========================================================================================================
code  meaning
====  ==========================================================================================================
0     done
1     a runtime failure: the cloud, the network, the machine or a run failed (``LabctlError``); a run that
      did not succeed
2     a usage error: a flag, a ``LABCTL_*`` variable, a config file, a state or key file is wrong, or the
      command needs a confirmation it did not get (``UsageError``); nothing was started or created
3     not ready: the lab does not exist, is not ready yet, or is stopped/deallocated (``NotFound``,
      ``NotReady``); the message names the command that makes it ready
130   interrupted (Ctrl-C); what exists is left for ``up`` to resume and ``down`` to remove
====  ==========================================================================================================

``labctl ssh`` ends with the remote shell's own exit code once the shell has started.
"""

from __future__ import annotations


class LabctlError(Exception):
    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def render(self) -> str:
        text = self.message.rstrip()
        if self.hint:
            sep = "" if text.endswith((".", "?", "!", ":")) else "."
            text = f"{text}{sep} {self.hint.strip()}"
        return text


class UsageError(LabctlError):
    exit_code = 2


class NoCapacity(LabctlError):
    """The cloud has no room (or no quota) for this size in this region now; another choice may have it.

    Targets raise it for every such refusal, whatever the provider's own code for it, so that the fall-back
    to the next choice (``labctl.targets.base.first_that_fits``) is written once.
    """


class NotFound(LabctlError):
    """A lab, run or file the user named does not exist."""

    exit_code = 3


class NotReady(LabctlError):
    """The lab exists but cannot do this yet: still being created, or stopped (deallocated)."""

    exit_code = 3
