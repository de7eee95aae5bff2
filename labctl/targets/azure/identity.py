"""Who is signed in to Azure: the principal's object id, read from the ARM access token labctl was given.

Labs are per person: the object id (``oid``) of the signed-in user, service principal or managed identity is
the owner recorded on a lab (tag ``labctl-owner``) and, shortened, part of its resource group's name. The token
is labctl's own, just received from Entra ID over TLS, so its payload is read without checking the signature
(ARM checks it on every call). Nothing about the local computer (user or host name) goes into Azure.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

from labctl.errors import LabctlError

_HEX_RE = re.compile(r"[^0-9a-f]")


@dataclass(frozen=True)
class Principal:
    oid: str  # the object id: the same for one person in every tenant's subscription
    name: str  # how people read it: the user's sign-in name, else the application's name or id

    @property
    def short(self) -> str:
        """The first 8 hex digits of the object id, which resource-group names carry."""
        return _HEX_RE.sub("", self.oid.lower())[:8]


def principal_from_token(token: str) -> Principal:
    parts = token.split(".")
    claims: object = None
    if len(parts) == 3:
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (ValueError, binascii.Error):
            claims = None
    oid = claims.get("oid") if isinstance(claims, dict) else None
    if not isinstance(claims, dict) or not isinstance(oid, str) or not _HEX_RE.sub("", oid.lower()):
        raise LabctlError(
            "The Azure login token names no object id ('oid'), so labctl cannot tell your labs from a colleague's.",
            hint="Log in as an Entra ID user, service principal or managed identity ('az login', or the "
            "AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_CLIENT_SECRET variables), then run the command again.",
        )
    name = next(
        (
            str(claims[k])
            for k in ("upn", "unique_name", "preferred_username", "app_displayname", "appid")
            if claims.get(k)
        ),
        oid,
    )
    return Principal(oid=oid, name=name)
