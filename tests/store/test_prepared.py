"""Prepared statements (the audit store's write path) on SQLite and PostgreSQL: values go in and
come out converted exactly as SQLAlchemy converts them, and driver errors are SQLAlchemy's."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, Table, bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from store.audit_store import AuditStore
from store.prepared import Prepared


@pytest.fixture
def probe(audit_store: AuditStore) -> Iterator[Table]:
    """A table of its own (date-time and JSON columns), dropped afterwards."""
    table = Table(
        f"prepared_probe_{uuid.uuid4().hex[:8]}",
        MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("at", DateTime(timezone=True), nullable=False),
        Column("doc", JSON),
    )
    table.create(audit_store.engine)
    yield table
    table.drop(audit_store.engine)


def test_values_round_trip_as_sqlalchemy_converts_them(
    audit_store: AuditStore, probe: Table
) -> None:
    dialect = audit_store.engine.dialect
    put = Prepared(insert(probe), dialect, columns=["id", "at", "doc"])
    get = Prepared(
        select(probe).where(probe.c.id == bindparam("key")), dialect, selected=list(probe.columns)
    )
    at = datetime(2026, 11, 29, 12, 30, 15, 250000, tzinfo=UTC)
    doc = {"state": "running", "steps": [{"id": "s1", "at": None}], "count": 2}
    with audit_store.engine.begin() as conn:
        put.run(conn, {"id": 1, "at": at, "doc": doc})
        put.run_many(conn, [{"id": 2, "at": at, "doc": None}, {"id": 3, "at": at, "doc": {}}])
    with audit_store.engine.connect() as conn:
        prepared = [get.mappings(conn, {"key": key}) for key in (1, 2, 3)]
        missing = get.mappings(conn, {"key": 4})
        by_sqlalchemy = [
            [dict(row) for row in conn.execute(select(probe).where(probe.c.id == key)).mappings()]
            for key in (1, 2, 3)
        ]
    assert by_sqlalchemy == prepared
    assert doc == prepared[0][0]["doc"]
    assert [] == missing


def test_a_driver_error_is_raised_as_sqlalchemys(audit_store: AuditStore, probe: Table) -> None:
    """A duplicate key is sqlalchemy's IntegrityError, which the store's retry and grouping
    already handle, and the transaction keeps nothing of it."""
    put = Prepared(insert(probe), audit_store.engine.dialect, columns=["id", "at"])
    at = datetime(2026, 11, 29, tzinfo=UTC)
    with pytest.raises(IntegrityError), audit_store.engine.begin() as conn:
        put.run(conn, {"id": 7, "at": at})
        put.run(conn, {"id": 7, "at": at})
    with audit_store.engine.connect() as conn:
        assert [] == list(conn.execute(select(probe.c.id)))
