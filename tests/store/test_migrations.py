"""Schema migrations on SQLite and PostgreSQL, and the searchable incidents they add."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import inspect

from store.audit_store import AuditStore, make_engine
from store.errors import SchemaTooNew
from store.migrate import HEAD, current_revision, upgrade
from tests.conftest import postgres_schema
from tests.store.test_audit_store import chain, new_id
from workflows.audit import AuditEvent, make_event


def triggered(incident: str, *, actor: str | None = None, **data: object) -> AuditEvent:
    """An incident's first event, at 2026-11-28 10:00 UTC."""
    return make_event(
        incident_id=incident,
        seq=1,
        kind="incident.triggered",
        at="2026-11-28T10:00:00+00:00",
        prev_hash="0" * 64,
        actor=actor,
        data=data,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        with postgres_schema() as url:
            yield url


def test_an_empty_database_upgrades_to_the_current_schema(empty_url: str) -> None:
    """From nothing to head: every table exists and the revision is the latest."""
    store = AuditStore(empty_url)
    try:
        assert HEAD == current_revision(store.engine)
        tables = set(inspect(store.engine).get_table_names())
        assert {"audit_events", "audit_seals", "incidents", "api_tokens", "alembic_version"} <= (
            tables
        )
    finally:
        store.dispose()


def test_a_schema_newer_than_the_engine_is_one_clear_error(empty_url: str) -> None:
    """Migrated by a newer engine (a revision this one does not know): said, not an Alembic
    traceback, and nothing is changed."""
    AuditStore(empty_url).dispose()
    engine = make_engine(empty_url)
    newer = f"{int(HEAD) + 1:04d}"
    with engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE alembic_version SET version_num = '{newer}'")
    engine.dispose()
    with pytest.raises(SchemaTooNew, match=f"revision {newer}, newer than this version of the"):
        AuditStore(empty_url)
    assert newer == current_revision(make_engine(empty_url))


def test_the_previous_schema_upgrades_and_keeps_its_rows(empty_url: str) -> None:
    """A database at the previous revision, holding a chain, upgrades without losing a row."""
    engine = make_engine(empty_url)
    upgrade(engine, "0002")
    assert "0002" == current_revision(engine)
    incident = new_id()
    with engine.begin() as connection:
        for event in chain(incident, 3):
            connection.exec_driver_sql(
                "INSERT INTO audit_events (incident_id, seq, kind, at, actor, step_id, data, "
                "prev_hash, hash, recorded_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                if engine.dialect.name == "postgresql"
                else "INSERT INTO audit_events (incident_id, seq, kind, at, actor, step_id, data, "
                "prev_hash, hash, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event.incident_id,
                    event.seq,
                    event.kind,
                    event.at,
                    event.actor,
                    event.step_id,
                    json.dumps(event.data, sort_keys=True),
                    event.prev_hash,
                    event.hash,
                    datetime.now(UTC),
                ),
            )
    engine.dispose()
    store = AuditStore(empty_url)
    try:
        assert HEAD == current_revision(store.engine)
        assert 3 == len(store.events(incident))
        assert store.verify(incident).ok
    finally:
        store.dispose()


def test_incidents_are_searchable_by_playbook_state_level_and_time(audit_store: AuditStore) -> None:
    """The incidents table follows the events: level changes and closing are reflected."""
    incident = new_id()
    first = triggered(incident, actor="alice", playbook="search-test", version=3, level="elevated")
    escalated = make_event(
        incident_id=incident,
        seq=2,
        kind="level.escalated",
        at="2026-11-28T11:00:00+00:00",
        prev_hash=first.hash,
        data={"level": "severe"},
    )
    audit_store.append([first, escalated])
    found = audit_store.search(playbook="search-test", level="severe", state="running")
    assert [incident] == [row.incident_id for row in found]
    closed = make_event(
        incident_id=incident,
        seq=3,
        kind="incident.closed",
        at="2026-11-28T12:00:00+00:00",
        prev_hash=escalated.hash,
    )
    audit_store.append([closed])
    assert [] == audit_store.search(playbook="search-test", state="running")
    (row,) = audit_store.search(
        playbook="search-test", state="closed", since=datetime(2026, 11, 28, tzinfo=UTC)
    )
    assert (3, "severe", "alice") == (row.version, row.level, row.triggered_by)
    assert [] == audit_store.search(
        playbook="search-test", until=datetime(2026, 11, 28, tzinfo=UTC)
    )


def test_a_time_searched_by_means_the_same_instant_whatever_its_offset(
    audit_store: AuditStore,
) -> None:
    """10:00 UTC is 11:00+01:00 and 05:00-05:00; a time without an offset is read as UTC (SQLite
    stores no offset, and compared the wall clock as written)."""
    incident, playbook = new_id(), f"offsets-{new_id()}"
    audit_store.append([triggered(incident, playbook=playbook, version=1)])

    def found(**when: datetime) -> bool:
        return [incident] == [
            row.incident_id for row in audit_store.search(playbook=playbook, **when)
        ]

    plus_one, minus_five = timezone(timedelta(hours=1)), timezone(timedelta(hours=-5))
    for since in (
        datetime(2026, 11, 28, 10, 0, tzinfo=UTC),
        datetime(2026, 11, 28, 11, 0, tzinfo=plus_one),
        datetime(2026, 11, 28, 5, 0, tzinfo=minus_five),
        datetime(2026, 11, 28, 10, 0),
    ):
        assert found(since=since), since
        assert not found(since=since + timedelta(seconds=1)), since
        assert found(until=since + timedelta(seconds=1)), since
        assert not found(until=since), since


def test_a_date_like_playbook_version_is_recorded(audit_store: AuditStore) -> None:
    """202612011200 is beyond a 32-bit integer: PostgreSQL refused the incident's first write."""
    incident = new_id()
    audit_store.append([triggered(incident, playbook="dated", version=202612011200)])
    row = audit_store.incident(incident)
    assert row is not None and 202612011200 == row.version


def test_superseded_rows_are_taken_out_of_the_searchable_incident(audit_store: AuditStore) -> None:
    """A level change that never committed does not linger in the incidents table."""
    incident = new_id()
    first = triggered(incident, playbook="supersede-test", version=1, level="elevated")
    audit_store.append([first], task=3)
    lost = make_event(
        incident_id=incident,
        seq=2,
        kind="level.escalated",
        at="2026-11-28T10:05:00+00:00",
        prev_hash=first.hash,
        data={"level": "severe"},
    )
    audit_store.append([lost], task=8)
    retried = make_event(
        incident_id=incident,
        seq=2,
        kind="note.added",
        at="2026-11-28T10:06:00+00:00",
        prev_hash=first.hash,
        data={"text": "x"},
    )
    assert 1 == audit_store.append([retried], task=11).superseded
    (row,) = audit_store.search(playbook="supersede-test")
    assert ("elevated", 2) == (row.level, row.last_seq)
