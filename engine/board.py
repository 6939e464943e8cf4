"""The incident board: every incident at a glance, from the store's searchable rows.

Shared by the API (`GET /v1/incidents`) and the web console, so both show the same facts:
level, age, approvals waiting, measures about to lapse, reviews due, deliveries that failed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from core.timestamps import as_utc, parse_utc
from store.board import OPEN_STATES, empty_summary

if TYPE_CHECKING:  # the CLI's remote commands read a page without SQLAlchemy's import time
    from store.audit_store import AuditStore, IncidentRow

StateFilter = Literal["open", "all", "running", "standing_down", "closed", "failed"]


class PendingApproval(BaseModel):
    step_id: str
    roles: list[str]
    quorum: int
    approvals: int
    deadline: datetime | None = None
    since: datetime | None = None


class MeasureInForce(BaseModel):
    step_id: str
    lever: str | None
    expires_at: datetime | None = None
    lifted_by: str | None = Field(
        None,
        description="Another incident's restore lifted it on the settings they share, and "
        "putting it back was left to commanders",
    )
    not_restored: str | None = Field(
        None,
        description="Its undo failed for good (why): it may still be in force on the platform, "
        "even after the incident closed; restore it there by hand",
    )
    uncertain: bool = Field(
        False,
        description="Its apply had no answer: the platform may have applied it; a stand-down "
        "learns what it replaced and takes it back",
    )


class FailedDelivery(BaseModel):
    step_id: str | None
    stakeholder: str | None
    target: str | None
    error: str | None
    at: datetime


class BoardEntry(BaseModel):
    incident_id: str
    playbook: str
    version: int
    state: str
    level: str | None
    triggered_by: str | None
    triggered_at: datetime
    closed_at: datetime | None
    updated_at: datetime
    age_s: float = Field(description="Seconds since the incident was triggered")
    pending_approvals: list[PendingApproval]
    measures: list[MeasureInForce] = Field(description="Measures in force, soonest lapse first")
    next_expiry: datetime | None
    review_due: datetime | None
    review_overdue: bool
    failed_deliveries: list[FailedDelivery]


class BoardPage(BaseModel):
    items: list[BoardEntry]
    limit: int
    offset: int
    next_offset: int | None = Field(description="Pass as `offset` for the next page; null at end")


def board_page(
    store: AuditStore,
    *,
    state: StateFilter = "open",
    playbook: str | None = None,
    level: str | None = None,
    triggered_by: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
    now: datetime | None = None,
) -> BoardPage:
    """One page of the board, newest first (one query: a page never asks the workflows)."""
    states: str | list[str] | None = {"open": OPEN_STATES, "all": None}.get(state, state)
    rows = store.search(
        playbook=playbook,
        state=states,
        level=level,
        triggered_by=triggered_by,
        since=since,
        until=until,
        limit=limit + 1,  # one more tells whether there is a next page
        offset=offset,
        or_not_restored=state == "open",  # closed, yet something may still be in force
    )
    moment = now or datetime.now(UTC)
    items = [board_entry(row, moment) for row in rows[:limit]]
    return BoardPage(
        items=items,
        limit=limit,
        offset=offset,
        next_offset=offset + limit if len(rows) > limit else None,
    )


def board_entry(row: IncidentRow, now: datetime) -> BoardEntry:
    facts: dict[str, Any] = row.summary or empty_summary()
    measures = sorted(
        (
            MeasureInForce(step_id=step_id, **measure)
            for step_id, measure in facts["measures"].items()
        ),
        key=lambda m: (m.expires_at is None, m.expires_at or now),
    )
    review_due = _when(facts.get("review_due"))
    triggered_at = as_utc(row.triggered_at)
    closed_at = as_utc(row.closed_at) if row.closed_at else None
    return BoardEntry(
        incident_id=row.incident_id,
        playbook=row.playbook,
        version=row.version,
        state=row.state,
        level=row.level,
        triggered_by=row.triggered_by,
        triggered_at=triggered_at,
        closed_at=closed_at,
        updated_at=as_utc(row.updated_at),
        age_s=round(((closed_at or now) - triggered_at).total_seconds(), 1),
        pending_approvals=[
            PendingApproval(step_id=step_id, **pending)
            for step_id, pending in facts["pending_approvals"].items()
        ],
        measures=measures,
        next_expiry=next((m.expires_at for m in measures if m.expires_at), None),
        review_due=review_due,
        review_overdue=review_due is not None and review_due < now,
        failed_deliveries=[FailedDelivery(**failed) for failed in facts["failed_deliveries"]],
    )


def _when(text: str | None) -> datetime | None:
    return parse_utc(text) if text else None
