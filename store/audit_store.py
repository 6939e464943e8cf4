"""The audit store: an append-only, hash-chained table of audit events (SQLite or PostgreSQL).

The workflow numbers and chains the events; this store only accepts a row that continues the
chain, treats a row it already holds as done (so a retried write never duplicates), and refuses
a different row under the same number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Column, DateTime, Text, UniqueConstraint, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, create_engine, select

from workflows.audit import GENESIS_HASH, AuditEvent, chain_hash

log = structlog.get_logger(__name__)


class AuditStoreError(RuntimeError):
    """Base of the audit store's errors."""


class AuditConflict(AuditStoreError):
    """A different event already holds this incident's sequence number."""


class AuditGap(AuditStoreError):
    """An event arrived before the one it chains to."""


class AuditRow(SQLModel, table=True):
    __tablename__ = "audit_events"
    __table_args__ = (UniqueConstraint("incident_id", "seq", name="uq_audit_incident_seq"),)

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(index=True, max_length=200)
    seq: int
    kind: str = Field(max_length=100)
    at: str = Field(max_length=64)
    actor: str | None = Field(default=None, max_length=200)
    step_id: str | None = Field(default=None, max_length=100)
    data: str = Field(sa_column=Column(Text, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
    recorded_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))

    def to_event(self) -> AuditEvent:
        return AuditEvent(
            incident_id=self.incident_id,
            seq=self.seq,
            kind=self.kind,
            at=self.at,
            actor=self.actor,
            step_id=self.step_id,
            data=json.loads(self.data),
            prev_hash=self.prev_hash,
            hash=self.hash,
        )


@dataclass(frozen=True)
class Verification:
    """The result of recomputing one incident's chain."""

    incident_id: str
    ok: bool
    events: int
    first_bad_seq: int | None = None
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "ok": self.ok,
            "events": self.events,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
        }


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite files get WAL so readers never block the writer."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


class AuditStore:
    """Append and read audit events; verify an incident's chain."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        SQLModel.metadata.create_all(self.engine)

    def append(self, events: list[AuditEvent]) -> int:
        """Write events (one incident, ascending seq) in one transaction; return rows inserted."""
        if not events:
            return 0
        for attempt in range(3):
            try:
                return self._append_once(events)
            except IntegrityError:
                # Another writer inserted the same rows first; re-read and compare.
                if attempt == 2:
                    raise
        return 0

    def _append_once(self, events: list[AuditEvent]) -> int:
        incident_id = events[0].incident_id
        first, last = events[0].seq, events[-1].seq
        with Session(self.engine) as session:
            rows = session.exec(
                select(AuditRow).where(
                    AuditRow.incident_id == incident_id,
                    AuditRow.seq >= first - 1,
                    AuditRow.seq <= last,
                )
            ).all()
            held = {row.seq: row.hash for row in rows}
            previous_hash = GENESIS_HASH if first == 1 else held.get(first - 1)
            inserted = 0
            now = datetime.now(UTC)
            for item in events:
                if item.seq in held:
                    if held[item.seq] != item.hash:
                        raise AuditConflict(
                            f"{incident_id} seq {item.seq}: a different event is already recorded"
                        )
                    previous_hash = item.hash
                    continue
                if previous_hash is None:
                    raise AuditGap(
                        f"{incident_id} seq {item.seq}: event {item.seq - 1} is not recorded yet"
                    )
                if item.prev_hash != previous_hash or item.expected_hash() != item.hash:
                    raise AuditConflict(
                        f"{incident_id} seq {item.seq}: does not continue the chain"
                    )
                session.add(
                    AuditRow(
                        incident_id=item.incident_id,
                        seq=item.seq,
                        kind=item.kind,
                        at=item.at,
                        actor=item.actor,
                        step_id=item.step_id,
                        data=json.dumps(item.data, sort_keys=True, default=str),
                        prev_hash=item.prev_hash,
                        hash=item.hash,
                        recorded_at=now,
                    )
                )
                previous_hash = item.hash
                inserted += 1
            session.commit()
        return inserted

    def events(self, incident_id: str) -> list[AuditEvent]:
        with Session(self.engine) as session:
            rows = session.exec(
                select(AuditRow).where(AuditRow.incident_id == incident_id).order_by(AuditRow.seq)
            ).all()
            return [row.to_event() for row in rows]

    def verify(self, incident_id: str) -> Verification:
        """Recompute the chain; name the first row that was altered, removed or reordered."""
        with Session(self.engine) as session:
            rows = session.exec(
                select(AuditRow).where(AuditRow.incident_id == incident_id).order_by(AuditRow.seq)
            ).all()
            expected_prev = GENESIS_HASH
            for position, row in enumerate(rows, start=1):
                if row.seq != position:
                    return Verification(
                        incident_id,
                        False,
                        len(rows),
                        position,
                        f"row {position} is missing (next row is {row.seq})",
                    )
                if row.prev_hash != expected_prev:
                    return Verification(
                        incident_id,
                        False,
                        len(rows),
                        row.seq,
                        f"row {row.seq} does not link to row {row.seq - 1}",
                    )
                body = row.to_event().body()
                if chain_hash(row.prev_hash, body) != row.hash:
                    return Verification(
                        incident_id,
                        False,
                        len(rows),
                        row.seq,
                        f"row {row.seq} ({row.kind}) was altered",
                    )
                expected_prev = row.hash
            return Verification(incident_id, True, len(rows))

    def dispose(self) -> None:
        self.engine.dispose()
