"""Scheduled Events of the fake's instance metadata service, for the VM named by ``FakeArm.imds_vm``.

As the Scheduled Events page documents them (api-version 2020-07-01; "Example responses" there):
``GET /metadata/scheduledevents`` answers ``{"DocumentIncarnation": N, "Events": [...]}``, each event with
EventId, EventType, ResourceType, Resources (VM names), EventStatus, NotBefore (an RFC 1123 date, "" once
started), Description, EventSource and DurationInSeconds; the incarnation grows with every change. ``POST`` with
``{"StartRequests": [{"EventId": ...}]}`` approves events (200, empty body; 400 for a malformed body). The
``Metadata: true`` header is required as everywhere in IMDS. A Preempt starts when approved or once its NotBefore
(30 s notice) has passed, and the Spot VM is then evicted: deallocated, as labctl's Spot VMs' eviction policy says.
"""

from __future__ import annotations

import json
import time
import uuid
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakearm.server import FakeArm

EVENTS_ROUTES: list[tuple[str, str, str]] = [("*", r"^/metadata/scheduledevents$", "imds_events")]
Result = tuple[int, Any, dict[str, str]]


class ScheduledEvents:
    """The events document and when each event may start (epoch seconds)."""

    def __init__(self) -> None:
        self.incarnation = 1
        self.events: list[dict[str, Any]] = []
        self.not_before: dict[str, float] = {}
        self.approved: list[str] = []  # event ids, in the order the StartRequests came

    def preempt(self, vm_name: str, notice: float = 30.0) -> str:
        """A Spot eviction of ``vm_name`` in ``notice`` seconds, as Azure announces one."""
        event_id = str(uuid.uuid4()).upper()
        when = time.time() + notice
        self.events.append(
            {
                "EventId": event_id,
                "EventStatus": "Scheduled",
                "EventType": "Preempt",
                "ResourceType": "VirtualMachine",
                "Resources": [vm_name],
                "NotBefore": formatdate(when, usegmt=True),
                "Description": "",
                "EventSource": "Platform",
                "DurationInSeconds": -1,
            }
        )
        self.not_before[event_id] = when
        self.incarnation += 1
        return event_id

    def start_due(self) -> list[dict[str, Any]]:
        """Start the events approved or past their NotBefore; returns those started now."""
        started = []
        for event in self.events:
            due = event["EventId"] in self.approved or self.not_before[event["EventId"]] <= time.time()
            if event["EventStatus"] == "Scheduled" and due:
                event.update(EventStatus="Started", NotBefore="")
                started.append(event)
        self.incarnation += 1 if started else 0
        return started


class EventsHandlers:
    """Mixed into the fake's request handler beside the rest of its IMDS."""

    arm: FakeArm

    def _imds_refusal(self, q: dict[str, str]) -> Result | None:
        raise NotImplementedError

    def h_imds_events(self, method: str, m: dict[str, str], q: dict[str, str], raw: bytes) -> Result:
        refusal = self._imds_refusal(q)
        if refusal:
            return refusal
        events = self.arm.scheduled_events
        if method == "POST":
            try:
                requests = json.loads(raw)["StartRequests"]
                events.approved += [str(request["EventId"]) for request in requests]
            except (ValueError, KeyError, TypeError):
                return 400, {"error": "Bad request. The request body is malformed."}, {}
        elif method != "GET":
            return 405, {"error": "Method not allowed"}, {}
        for event in events.start_due():
            if event["EventType"] == "Preempt" and self.arm.imds_vm:
                self.arm.power[self.arm.imds_vm.lower()] = "deallocated"
        body = {"DocumentIncarnation": events.incarnation, "Events": [dict(e) for e in events.events]}
        return (200, None, {}) if method == "POST" else (200, body, {})
