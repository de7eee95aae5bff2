"""Every ARM request labctl makes in this process, and what ARM answered, kept in the format of
``tests/fakearm/recorded.json`` so that ``tests/integration/test_azure_recorded.py`` replays it against the fake.

Kept: method, path, query, api-version, the request body with its secrets blanked, the status, which of the
long-running-operation headers came back, and the answer's keys (never its values). Left out: the token
endpoint, anything not on management.azure.com, and the polls of operation monitors (the fake has its own).
The subscription id becomes ``{subscription}`` and principal ids ``{principal}``; read a recording before
committing it all the same.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests

ARM_HOST = "management.azure.com"
MONITORS = ("Azure-AsyncOperation", "Location", "Retry-After")
POLLS = re.compile(r"/(operations|operationresults|operationstatuses|asyncoperations)/", re.IGNORECASE)
SECRET_KEYS = frozenset({"customData", "userData", "keyData", "adminPassword"})
PRINCIPAL_KEYS = frozenset({"principalId", "tenantId", "labctl-owner", "labctl-owner-name"})


class Recorder:
    def __init__(self, subscription: str) -> None:
        self.subscription = subscription
        self.principals: set[str] = set()
        self.interactions: list[dict[str, Any]] = []

    def wrap(self, send: Any) -> Any:
        """``requests.Session.send``, noting each ARM exchange on the way back."""

        def recorded_send(session: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> Any:
            response = send(session, request, **kwargs)
            self.note(request, response)
            return response

        return recorded_send

    def note(self, request: requests.PreparedRequest, response: requests.Response) -> None:
        url = urlsplit(str(request.url))
        if url.hostname != ARM_HOST or POLLS.search(url.path):
            return
        query = dict(parse_qsl(url.query))
        version = query.pop("api-version", "")
        body = json.loads(request.body) if request.body else None
        answer = response.json() if "json" in response.headers.get("Content-Type", "") and response.content else None
        first = ((answer or {}).get("value") or [None])[0] if isinstance(answer, dict) else None
        self.interactions.append(
            {
                "method": request.method,
                "path": url.path,
                "query": query,
                "api_version": version,
                "body": self._blank(body),
                "status": response.status_code,
                "headers": [h for h in MONITORS if h in response.headers],
                "body_keys": sorted(answer) if isinstance(answer, dict) else None,
                "properties_keys": _keys((answer or {}).get("properties") if isinstance(answer, dict) else None),
                "item_keys": _keys(first),
            }
        )

    def _blank(self, value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if key in SECRET_KEYS:
                    out[key] = "<scrubbed>"
                elif key in PRINCIPAL_KEYS and isinstance(item, str):
                    self.principals.add(item)
                    out[key] = "{principal}"
                else:
                    out[key] = self._blank(item)
            return out
        return [self._blank(item) for item in value] if isinstance(value, list) else value

    def save(self, path: Path) -> None:
        about = f"labctl against a real subscription: {path.stem}"
        text = json.dumps({"about": about, "interactions": self.interactions}, indent=1)
        for secret in (self.subscription, *self.principals):
            text = text.replace(secret, "{subscription}" if secret == self.subscription else "{principal}")
        path.write_text(text + "\n")


def _keys(value: Any) -> list[str] | None:
    return sorted(value) if isinstance(value, dict) else None
