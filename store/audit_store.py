"""The audit store: an append-only, hash-chained table of audit events (SQLite or PostgreSQL).

The workflow numbers and chains the events; this store only accepts a row that continues the
chain, treats a row it already holds as done (so a retried write never duplicates), and refuses
a different row under the same number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    delete,
    event,
    func,
    insert,
    or_,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, create_engine, select

from core.validation import first_problem
from store.board import empty_summary, fold
from store.errors import (
    AuditConflict,
    AuditGap,
    AuditRowUnreadable,
    AuditStoreError,
    AuditStoreUnavailable,
    SchemaTooNew,
)
from store.migrate import upgrade
from store.prepared import Prepared
from store.seals import Seal
from workflows.audit import GENESIS_HASH, AuditEvent, chain_hash

log = structlog.get_logger(__name__)


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
    task: int = 0  # workflow history length the event was produced at; 0 = committed
    # When that workflow task started (µs since the epoch): its attempts share its history length.
    task_time: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )


class IncidentRow(SQLModel, table=True):
    """One searchable row per incident, kept up to date from its audit events."""

    __tablename__ = "incidents"

    incident_id: str = Field(primary_key=True, max_length=200)
    playbook: str = Field(index=True, max_length=64)
    version: int = Field(sa_column=Column(BigInteger, nullable=False))
    state: str = Field(index=True, max_length=32)
    level: str | None = Field(default=None, index=True, max_length=64)
    triggered_by: str | None = Field(default=None, max_length=200)
    triggered_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, index=True)
    )
    closed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    last_seq: int
    # The board's facts (store.board); None on rows projected before it existed.
    summary: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


# How events move an incident's searchable state.
_STATE_BY_KIND = {
    "incident.failed": "failed",
    "stand_down.requested": "standing_down",
    "incident.closed": "closed",
}


def _to_event(row: Any) -> AuditEvent:
    """An event from a stored row of `audit_events`."""
    try:
        return AuditEvent(
            incident_id=row.incident_id,
            seq=row.seq,
            kind=row.kind,
            at=row.at,
            actor=row.actor,
            step_id=row.step_id,
            data=json.loads(row.data),
            prev_hash=row.prev_hash,
            hash=row.hash,
        )
    except (ValueError, TypeError) as error:  # pydantic's ValidationError is a ValueError
        why = first_problem(error.errors()) if isinstance(error, ValidationError) else str(error)
        raise AuditRowUnreadable(
            f"{row.incident_id} row {row.seq} cannot be read as an audit event ({why}): the "
            "store was edited by hand or damaged"
        ) from None


@dataclass(frozen=True)
class _Held:
    """What an append compares of a row it finds under a number it is writing."""

    seq: int
    hash: str
    task: int
    task_time: int

    def superseded_by(self, task: int, task_time: int) -> bool:
        """Whether a write produced at (task, task_time) comes from a later workflow task, or a
        later attempt of the same one, than this row: only then may its rows replace this one.
        Both must come from a task (0: a committed write, which nothing supersedes)."""
        return task > 0 and self.task > 0 and (task, task_time) > (self.task, self.task_time)


@dataclass(frozen=True)
class AppendResult:
    inserted: int
    superseded: int


@dataclass(frozen=True)
class Write:
    """One append, as `AuditStore.append` takes it."""

    events: list[AuditEvent]
    task: int = 0
    seal: Seal | None = None
    task_time: int = 0


class SupersededRow(SQLModel, table=True):
    """A row written by a workflow task attempt that never committed, kept for forensics."""

    __tablename__ = "audit_superseded"

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(index=True, max_length=200)
    seq: int
    task: int
    row: str = Field(sa_column=Column(Text, nullable=False))
    superseded_by_task: int
    superseded_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class SealRow(SQLModel, table=True):
    __tablename__ = "audit_seals"
    __table_args__ = (UniqueConstraint("incident_id", "seq", name="uq_seal_incident_seq"),)

    id: int | None = Field(default=None, primary_key=True)
    incident_id: str = Field(index=True, max_length=200)
    seq: int
    head_hash: str = Field(max_length=64)
    sealed_at: str = Field(max_length=64)
    reason: str = Field(max_length=32)
    key_id: str = Field(max_length=64)
    signature: str = Field(max_length=200)


# The write path speaks SQLAlchemy Core on one connection: the ORM's unit of work (identity
# map, flushes, change tracking) cost most of an append and nothing here needs it.
_EVENTS: Table = AuditRow.__table__  # type: ignore[attr-defined]
_INCIDENTS: Table = IncidentRow.__table__  # type: ignore[attr-defined]
_SEALS: Table = SealRow.__table__  # type: ignore[attr-defined]
_SUPERSEDED: Table = SupersededRow.__table__  # type: ignore[attr-defined]
# Hot statements are built once; only their parameters change per write.
_HELD = select(_EVENTS.c.seq, _EVENTS.c.hash, _EVENTS.c.task, _EVENTS.c.task_time).where(
    _EVENTS.c.incident_id == bindparam("incident_id"),
    _EVENTS.c.seq.between(bindparam("first"), bindparam("last")),
)
_INCIDENT = select(_INCIDENTS).where(_INCIDENTS.c.incident_id == bindparam("incident_id"))
_INCIDENT_FIELDS = [column.key for column in _INCIDENTS.columns if column.key != "incident_id"]
_UPDATE_INCIDENT = (
    update(_INCIDENTS)
    .where(_INCIDENTS.c.incident_id == bindparam("key"))
    .values({name: bindparam(name) for name in _INCIDENT_FIELDS})
)
_SEALED = select(_SEALS.c.id).where(
    _SEALS.c.incident_id == bindparam("incident_id"), _SEALS.c.seq == bindparam("seq")
)
_EVENT_FIELDS = [column.key for column in _EVENTS.columns if column.key != "id"]
_SEAL_FIELDS = [column.key for column in _SEALS.columns if column.key != "id"]


@dataclass(frozen=True)
class _WritePath:
    """The statements every append runs, prepared for one engine's dialect (store.prepared)."""

    held: Prepared
    insert_events: Prepared
    incident: Prepared
    insert_incident: Prepared
    update_incident: Prepared
    sealed: Prepared
    insert_seal: Prepared

    @classmethod
    def for_engine(cls, engine: Engine) -> _WritePath:
        dialect = engine.dialect
        return cls(
            held=Prepared(_HELD, dialect),
            insert_events=Prepared(insert(_EVENTS), dialect, columns=_EVENT_FIELDS),
            incident=Prepared(_INCIDENT, dialect, selected=list(_INCIDENTS.columns)),
            insert_incident=Prepared(
                insert(_INCIDENTS), dialect, columns=["incident_id", *_INCIDENT_FIELDS]
            ),
            update_incident=Prepared(_UPDATE_INCIDENT, dialect),
            sealed=Prepared(_SEALED, dialect),
            insert_seal=Prepared(insert(_SEALS), dialect, columns=_SEAL_FIELDS),
        )


def _events_from(
    conn: Connection, incident_id: str, since: int, *, before: int | None = None
) -> list[Any]:
    """Stored rows with since <= seq (< before, if given), in order."""
    query = select(_EVENTS).where(_EVENTS.c.incident_id == incident_id, _EVENTS.c.seq >= since)
    if before is not None:
        query = query.where(_EVENTS.c.seq < before)
    return list(conn.execute(query.order_by(_EVENTS.c.seq)))


def _project(conn: Connection, sql: _WritePath, events: list[AuditEvent]) -> None:
    """Bring the incident's searchable row (and its board summary) up to date with events."""
    if not events:
        return
    incident_id = events[0].incident_id
    found = sql.incident.mappings(conn, {"incident_id": incident_id})
    current = found[0] if found else None
    # A fresh read hands out a fresh summary: folding into it in place touches nothing stored.
    row = dict(current) if current is not None else None
    changed = False
    for item in events:
        if item.kind == "incident.triggered":
            if row is None:  # else already projected (a retried write)
                row, changed = _triggered_row(item), True
            continue
        if row is None or item.seq <= row["last_seq"]:
            continue
        if row["summary"] is None:  # projected before the board existed: catch up once
            earlier = _events_from(conn, incident_id, 1, before=item.seq)
            row["summary"] = empty_summary()
            for stored in earlier:
                fold(row["summary"], _to_event(stored))
        _advance(row, item)
        changed = True
    if row is None or not changed:
        return
    if current is None:
        sql.insert_incident.run(conn, row)
    else:
        changes = {name: row[name] for name in _INCIDENT_FIELDS}
        sql.update_incident.run(conn, {"key": incident_id, **changes})


def _triggered_row(item: AuditEvent) -> dict[str, Any]:
    """The incident's searchable row as its first event makes it."""
    at = datetime.fromisoformat(item.at)
    summary = empty_summary()
    fold(summary, item)
    return {
        "incident_id": item.incident_id,
        "playbook": str(item.data.get("playbook", "")),
        "version": int(item.data.get("version", 0)),
        "state": "running",
        "level": item.data.get("level"),
        "triggered_by": item.actor,
        "triggered_at": at,
        "closed_at": None,
        "updated_at": at,
        "last_seq": item.seq,
        "summary": summary,
    }


def _advance(row: dict[str, Any], item: AuditEvent) -> None:
    """Move the row, in place, by one more event after its first."""
    at = datetime.fromisoformat(item.at)
    fold(row["summary"], item)
    if item.kind in ("level.escalated", "level.de_escalated"):
        row["level"] = item.data.get("level")
    if item.kind in _STATE_BY_KIND:
        row["state"] = _STATE_BY_KIND[item.kind]
    if item.kind == "incident.closed":
        row["closed_at"] = at
    row["updated_at"], row["last_seq"] = at, item.seq


def projected(events: list[AuditEvent]) -> dict[str, Any] | None:
    """The incident's searchable row as its events make it; None if they hold no
    incident.triggered."""
    made: dict[str, Any] | None = None
    for item in events:
        if item.kind == "incident.triggered" and made is None:
            made = _triggered_row(item)
        elif made is not None:
            _advance(made, item)
    return made


# The columns verify holds against the trail. The board's summary is left out: its rules (`fold`)
# change between versions, and a summary written by an older one differs without any edit.
_CHECKED_FIELDS = [name for name in ["incident_id", *_INCIDENT_FIELDS] if name != "summary"]


def projection_problem(row: IncidentRow, events: list[AuditEvent]) -> str | None:
    """How the stored row of the incidents table (the board, search) differs from what its
    audit trail makes of it, or None. The trail is hash-chained and sealed, the row is not: an
    edit there would change what the board shows and leave the chain intact."""
    made = projected(events)
    if made is None:
        return "the incidents table has a row for it, but its trail has no incident.triggered"
    if made["last_seq"] != row.last_seq:  # read after the events (engine.integrity)
        if made["last_seq"] > row.last_seq:
            side = "the board shows the incident as it stood then"
        elif events[-1].kind == "incident.closed":
            side = "no row follows the trail's close: the row was edited"
        else:
            side = "rows are missing from the trail"
        return (
            f"the incidents table's row ends at row {row.last_seq}, the trail at row "
            f"{made['last_seq']}: {side}"
        )
    for name in _CHECKED_FIELDS:
        stored, expected = _shown(getattr(row, name)), _shown(made[name])
        if stored != expected:
            return (
                f"the incidents table's row shows {name} {stored!r} where its trail says "
                f"{expected!r}"
            )
    return None


def _shown(value: Any) -> Any:
    return _utc(value).isoformat() if isinstance(value, datetime) else value


def summary_differs(row: IncidentRow, events: list[AuditEvent]) -> bool:
    """Whether the row's board summary is not what today's rules make of its trail (written by
    an older version, or before the board had one, or edited): the board shows the stored one."""
    made = projected(events)
    return made is not None and row.summary != made["summary"]


def _add_seal(conn: Connection, sql: _WritePath, seal: Seal) -> bool:
    """Add the seal unless its head is sealed already (a retried write); True if added."""
    if sql.sealed.run(conn, {"incident_id": seal.incident_id, "seq": seal.seq}):
        return False
    sql.insert_seal.run(conn, seal.model_dump())
    return True


# What json.dumps(data, sort_keys=True, default=str) builds anew for every row.
_DATA_JSON = json.JSONEncoder(sort_keys=True, default=str)


def _row(item: AuditEvent, task: int, task_time: int, now: datetime) -> dict[str, Any]:
    return {
        "incident_id": item.incident_id,
        "seq": item.seq,
        "kind": item.kind,
        "at": item.at,
        "actor": item.actor,
        "step_id": item.step_id,
        "data": _DATA_JSON.encode(item.data),
        "prev_hash": item.prev_hash,
        "hash": item.hash,
        "recorded_at": now,
        "task": task,
        "task_time": task_time,
    }


def _supersede(conn: Connection, incident_id: str, seq: int, task: int, now: datetime) -> int:
    """Move this incident's rows from `seq` on (and the seals over them) out of the chain."""
    stale = _events_from(conn, incident_id, seq)
    if stale:
        kept = [
            {
                "incident_id": incident_id,
                "seq": row.seq,
                "task": row.task,
                "row": _to_event(row).model_dump_json(),
                "superseded_by_task": task,
                "superseded_at": now,
            }
            for row in stale
        ]
        conn.execute(insert(_SUPERSEDED), kept)
    for table in (_EVENTS, _SEALS):
        conn.execute(delete(table).where(table.c.incident_id == incident_id, table.c.seq >= seq))
    return len(stale)


def _append_in(conn: Connection, sql: _WritePath, write: Write) -> AppendResult:
    """Write events (one incident, ascending seq), and the seal if given, in the caller's
    transaction; see `AuditStore.append`."""
    events, task = write.events, write.task
    incident_id = events[0].incident_id
    first, last = events[0].seq, events[-1].seq
    span = {"incident_id": incident_id, "first": first - 1, "last": last}
    held = {row[0]: _Held(*row) for row in sql.held.run(conn, span)}
    previous_hash = GENESIS_HASH if first == 1 else getattr(held.get(first - 1), "hash", None)
    inserted = superseded = 0
    now = datetime.now(UTC)
    fresh: list[dict[str, Any]] = []
    for item in events:
        row = held.get(item.seq)
        if row is not None and row.hash == item.hash:
            previous_hash = item.hash
            continue
        if row is not None:
            if not row.superseded_by(task, write.task_time):
                raise AuditConflict(
                    f"{incident_id} seq {item.seq}: a different event is already recorded"
                )
            superseded = _supersede(conn, incident_id, item.seq, task, now)
            held = {seq: r for seq, r in held.items() if seq < item.seq}
        if previous_hash is None:
            raise AuditGap(
                f"{incident_id} seq {item.seq}: event {item.seq - 1} is not recorded yet"
            )
        if item.prev_hash != previous_hash or item.expected_hash() != item.hash:
            raise AuditConflict(f"{incident_id} seq {item.seq}: does not continue the chain")
        fresh.append(_row(item, task, write.task_time, now))
        previous_hash = item.hash
        inserted += 1
    if fresh:
        sql.insert_events.run_many(conn, fresh)
    if superseded:
        # The searchable row may reflect what never committed: rebuild it.
        conn.execute(delete(_INCIDENTS).where(_INCIDENTS.c.incident_id == incident_id))
        earlier = _events_from(conn, incident_id, 1, before=first)
        _project(conn, sql, [_to_event(row) for row in earlier] + list(events))
    elif inserted:
        _project(conn, sql, [e for e in events if e.seq not in held])
    if write.seal is not None:
        _add_seal(conn, sql, write.seal)
    return AppendResult(inserted, superseded)


def _log_superseded(write: Write, result: AppendResult) -> None:
    if result.superseded:
        log.warning(
            "audit.superseded",
            incident_id=write.events[0].incident_id,
            rows=result.superseded,
            task=write.task,
            task_time=write.task_time,  # tells attempts of one task apart (AuditBatch)
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


def verify_chain(incident_id: str, events: list[AuditEvent]) -> Verification:
    """Recompute a chain (from the store or an export bundle) and name the first bad row."""
    expected_prev = GENESIS_HASH
    for position, item in enumerate(events, start=1):
        if item.seq != position:
            problem = _out_of_place(events, position)
            return Verification(incident_id, False, len(events), position, problem)
        if item.prev_hash != expected_prev:
            problem = f"row {item.seq} does not link to row {item.seq - 1}"
            return Verification(incident_id, False, len(events), item.seq, problem)
        if chain_hash(item.prev_hash, item.body()) != item.hash:
            problem = f"row {item.seq} ({item.kind}) was altered"
            return Verification(incident_id, False, len(events), item.seq, problem)
        expected_prev = item.hash
    return Verification(incident_id, True, len(events))


def _out_of_place(events: list[AuditEvent], position: int) -> str:
    """Why the row at `position` (1-based) is not row `position`: rows are numbered from 1, in
    order, each once (a bundle's events.json can be edited into any order)."""
    found = events[position - 1].seq
    if found < 1:
        return f"a row numbered {found} where row {position} belongs: rows are numbered from 1"
    if found < position:
        return f"row {found} appears again where row {position} belongs"
    if any(e.seq == position for e in events[position:]):
        return f"rows out of order: row {found} comes before row {position}"
    return f"row {position} is missing (next row is {found})"


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


def _utc(moment: datetime) -> datetime:
    """The instant in UTC (a time without an offset is taken as UTC): SQLite keeps times without
    their offset, so a bound time is compared by its wall clock as written."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class AuditStore:
    """Append and read audit events; verify an incident's chain."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        try:
            upgrade(self.engine)
        except (SQLAlchemyError, SchemaTooNew) as error:
            self.engine.dispose()
            shown = make_url(url).render_as_string(hide_password=True)
            why = " ".join(str(getattr(error, "orig", None) or error).split())
            kind = SchemaTooNew if isinstance(error, SchemaTooNew) else AuditStoreUnavailable
            raise kind(f"cannot open the audit store {shown}: {why}") from None
        self._sql = _WritePath.for_engine(self.engine)

    def append(
        self,
        events: list[AuditEvent],
        *,
        task: int = 0,
        seal: Seal | None = None,
        task_time: int = 0,
    ) -> AppendResult:
        """Write events (one incident, ascending seq) in one transaction, with the seal of their
        head if given (unless that head is sealed already: a retried write).

        `task` is the workflow history length the events were produced at (0 = committed), and
        `task_time` when that workflow task started: the attempts of one task share its length.
        A held row that differs is superseded only by a later task or attempt; otherwise it is
        a conflict.
        """
        return self._append(Write(events, task, seal, task_time))

    def _append(self, write: Write) -> AppendResult:
        if not write.events:
            return AppendResult(0, 0)
        for attempt in range(3):
            try:
                return self._append_once(write)
            except IntegrityError:
                # Another writer inserted the same rows first; re-read and compare.
                if attempt == 2:
                    raise
        return AppendResult(0, 0)

    def append_many(self, writes: Sequence[Write]) -> list[AppendResult | Exception]:
        """Several appends, of any incidents, in one transaction: a burst of writes costs one
        commit instead of one each. If any of them fails, none of the group is kept and each is
        written on its own, so a bad write fails alone (its exception in its place)."""
        try:
            with self.engine.begin() as conn:
                results = [
                    _append_in(conn, self._sql, w) if w.events else AppendResult(0, 0)
                    for w in writes
                ]
        except (AuditStoreError, SQLAlchemyError):
            outcomes: list[AppendResult | Exception] = []
            for w in writes:
                try:
                    outcomes.append(self._append(w))
                except (AuditStoreError, SQLAlchemyError) as error:
                    outcomes.append(error)
            return outcomes
        for w, result in zip(writes, results, strict=True):
            _log_superseded(w, result)
        return list(results)

    def _append_once(self, write: Write) -> AppendResult:
        with self.engine.begin() as conn:
            result = _append_in(conn, self._sql, write)
        _log_superseded(write, result)
        return result

    def events(self, incident_id: str) -> list[AuditEvent]:
        with self.engine.connect() as conn:
            return [_to_event(row) for row in _events_from(conn, incident_id, 1)]

    def verify(self, incident_id: str) -> Verification:
        """Recompute the chain; name the first row that was altered, removed or reordered."""
        return verify_chain(incident_id, self.events(incident_id))

    def add_seal(self, seal: Seal) -> bool:
        """Record a seal; False if that head was already sealed (a retried write)."""
        try:
            with self.engine.begin() as conn:
                return _add_seal(conn, self._sql, seal)
        except IntegrityError:
            return False

    def seals(self, incident_id: str) -> list[Seal]:
        with Session(self.engine) as session:
            rows = session.exec(
                select(SealRow).where(SealRow.incident_id == incident_id).order_by(SealRow.seq)
            ).all()
            return [Seal.model_validate(row.model_dump(exclude={"id"})) for row in rows]

    def search(
        self,
        *,
        playbook: str | None = None,
        state: str | list[str] | None = None,
        level: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        triggered_by: str | None = None,
        limit: int = 100,
        offset: int = 0,
        or_not_restored: bool = False,
    ) -> list[IncidentRow]:
        """Incidents, newest first, filtered by playbook, state(s), level, who triggered them and
        trigger time. `or_not_restored`: also those, in any state, with a measure whose undo
        failed for good (store.board: it may still be in force)."""
        query = select(IncidentRow)
        if playbook:
            query = query.where(IncidentRow.playbook == playbook)
        if isinstance(state, str):
            state = [state]
        if state:
            wanted = IncidentRow.state.in_(state)  # type: ignore[attr-defined]
            if or_not_restored:
                left = IncidentRow.summary["not_restored"].as_integer() > 0  # type: ignore[index]
                wanted = or_(wanted, left)
            query = query.where(wanted)
        if triggered_by:
            query = query.where(IncidentRow.triggered_by == triggered_by)
        if level:
            query = query.where(IncidentRow.level == level)
        if since:
            query = query.where(IncidentRow.triggered_at >= _utc(since))
        if until:
            query = query.where(IncidentRow.triggered_at < _utc(until))
        query = query.order_by(IncidentRow.triggered_at.desc()).offset(offset).limit(limit)  # type: ignore[attr-defined]
        with Session(self.engine) as session:
            return list(session.exec(query).all())

    def incident(self, incident_id: str) -> IncidentRow | None:
        """The incident's searchable row (None: nothing recorded of it)."""
        with Session(self.engine) as session:
            return session.get(IncidentRow, incident_id)

    def head_seq(self, incident_id: str) -> int:
        """The number of the incident's newest recorded event (0: none yet): a cheap "anything
        new?" for readers that follow an incident."""
        query = select(func.max(AuditRow.seq)).where(AuditRow.incident_id == incident_id)
        with Session(self.engine) as session:
            return session.exec(query).one() or 0

    def unsealed_writes(self, incident_id: str, *, every: int) -> list[tuple[int, int]]:
        """The stored writes (rows first..head) that reached a multiple of `every` yet have no
        seal over their head: the writer seals each such write in its own transaction, so that
        seal was deleted. None for an incident with superseded rows (a write rewritten by a
        later attempt can leave a checkpoint whose seal went with the rows it replaced)."""
        write_of = (_EVENTS.c.recorded_at, _EVENTS.c.task, _EVENTS.c.task_time)
        mine = _EVENTS.c.incident_id == incident_id
        with self.engine.connect() as conn:
            superseded = select(func.count()).where(_SUPERSEDED.c.incident_id == incident_id)
            if conn.execute(superseded).scalar():
                return []
            # Rows before seals: a write committed in between adds its seal and rows not read.
            rows = conn.execute(
                select(_EVENTS.c.seq, *write_of).where(mine).order_by(_EVENTS.c.seq)
            )
            writes: list[list[Any]] = []
            for seq, *write in rows:
                if writes and writes[-1][2] == write and writes[-1][1] == seq - 1:
                    writes[-1][1] = seq
                else:
                    writes.append([seq, seq, write])
            sealed = set(
                conn.execute(select(_SEALS.c.seq).where(_SEALS.c.incident_id == incident_id))
                .scalars()
                .all()
            )
        return [
            (first, head)
            for first, head, _ in writes
            if head // every > (first - 1) // every and head not in sealed
        ]

    def knows(self, incident_id: str) -> bool:
        """Whether anything of the incident was ever recorded: a row, its board row or a seal (a
        trail whose rows were all deleted is still known, and named missing, not unknown)."""
        return bool(
            self.head_seq(incident_id)
            or self.incident(incident_id) is not None
            or self.seals(incident_id)
        )

    def incident_ids(self) -> list[str]:
        with Session(self.engine) as session:
            return list(session.exec(select(AuditRow.incident_id).distinct()).all())

    def dispose(self) -> None:
        self.engine.dispose()
