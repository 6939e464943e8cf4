"""The incident board: `GET /v1/incidents`, filtered and paginated, from the store alone."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query

from api.auth import Permission, require
from api.deps import StoreDep
from api.errors import AUTH_ERRORS
from engine.board import BoardPage, StateFilter, board_page

router = APIRouter(
    prefix="/incidents",
    tags=["incidents"],
    dependencies=[require(Permission.READ)],
    responses=AUTH_ERRORS,
)


# A plain `def`: FastAPI runs it in its thread pool, so the query never blocks the event loop.
@router.get("", response_model=BoardPage, summary="List incidents (the incident board)")
def list_incidents(
    store: StoreDep,
    state: StateFilter = Query("open", description="open = running, standing down or failed"),
    playbook: str | None = Query(None, max_length=64),
    level: str | None = Query(None, max_length=64),
    triggered_by: str | None = Query(None, max_length=200),
    since: datetime | None = Query(
        None, description="Triggered at or after (ISO 8601; UTC without an offset)"
    ),
    until: datetime | None = Query(
        None, description="Triggered before (ISO 8601; UTC without an offset)"
    ),
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=1_000_000),
) -> BoardPage:
    """Newest first, with what a commander must act on: approvals waiting, measures about to
    lapse, reviews due, deliveries that failed."""
    return board_page(
        store,
        state=state,
        playbook=playbook,
        level=level,
        triggered_by=triggered_by,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
