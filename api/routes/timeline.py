"""An incident's timeline, whole (`/timeline`) or live as server-sent events (`/events`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from api.auth import Permission, require
from api.deps import IncidentsDep, StoreDep
from api.errors import AUTH_ERRORS, ErrorOut
from engine.errors import IncidentNotFound
from engine.incidents import Incidents
from engine.report import TimelineEntry
from engine.reporting import timeline_entries
from store.audit_store import AuditStore

router = APIRouter(
    prefix="/incidents",
    tags=["incidents"],
    dependencies=[require(Permission.READ)],
    responses={**AUTH_ERRORS, 404: {"model": ErrorOut}},
)
# How often a stream looks for new events, and how long it stays silent before a keep-alive.
POLL_S = 0.5
KEEPALIVE_S = 15.0


class TimelineOut(BaseModel):
    incident_id: str
    entries: list[TimelineEntry]


async def _timeline(store: AuditStore, incident_id: str) -> list[TimelineEntry]:
    entries = await timeline_entries(store, incident_id)
    if not entries:
        raise IncidentNotFound(f"no incident {incident_id}")
    return entries


@router.get("/{incident_id}/timeline", response_model=TimelineOut)
async def timeline(incident_id: str, store: StoreDep) -> TimelineOut:
    """Every audit event of the incident as one plain sentence, with its offset from trigger."""
    return TimelineOut(incident_id=incident_id, entries=await _timeline(store, incident_id))


@router.get(
    "/{incident_id}/events",
    summary="Live timeline (server-sent events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def events(
    incident_id: str,
    request: Request,
    store: StoreDep,
    incidents: IncidentsDep,
    last_event_id: int | None = Header(None, description="Resume after this event (seq)"),
) -> StreamingResponse:
    """`event: timeline` per audit event (`id:` is its seq, so a reconnecting client resumes),
    `event: status` with the incident's status after each batch, `event: end` once it is closed."""
    entries = await timeline_entries(store, incident_id)
    if not entries:
        await incidents.status(incident_id)  # just triggered, or a 404 before the stream starts
    return StreamingResponse(
        _stream(request, store, incidents, incident_id, entries, last_event_id or 0),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(
    request: Request,
    store: AuditStore,
    incidents: Incidents,
    incident_id: str,
    entries: list[TimelineEntry],
    sent: int,
) -> AsyncIterator[str]:
    quiet, first = 0.0, True
    while True:
        fresh = [entry for entry in entries if entry.seq > sent]
        if fresh or first:
            first = False
            for entry in fresh:
                yield _message("timeline", entry.model_dump_json(), event_id=entry.seq)
            sent = max([sent, *(entry.seq for entry in fresh)])
            status = await incidents.status(incident_id)
            yield _message("status", status.model_dump_json())
            quiet = 0.0
            if status.state == "closed" and entries and entries[-1].kind == "incident.closed":
                yield _message("end", json.dumps({"incident_id": incident_id}))
                return
        elif quiet >= KEEPALIVE_S:
            yield ": keep-alive\n\n"
            quiet = 0.0
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL_S)
        quiet += POLL_S
        # Rebuild the sentences only when the trail has grown; most polls find nothing new.
        if await asyncio.to_thread(store.head_seq, incident_id) > (
            entries[-1].seq if entries else 0
        ):
            entries = await timeline_entries(store, incident_id)


def _message(event: str, data: str, *, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"
