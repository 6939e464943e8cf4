"""Statements of the audit write path rendered once per engine and run on the driver's cursor.

Every audit write runs the same handful of small statements. SQLAlchemy's per-execute work
(execution context, parameter processing, result proxy) cost more than SQLite's own for them, on
the worker's interpreter lock. A `Prepared` keeps what SQLAlchemy would do for its statement
(the SQL for this dialect, the column types' bind and result conversions) and does only that.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.expression import Executable

Converter = Callable[[Any], Any]


class Prepared:
    """One statement for one dialect: `run` and `run_many` bind named parameters, `mappings`
    also converts the selected columns as SQLAlchemy would (e.g. SQLite's stored date-times and
    JSON)."""

    def __init__(
        self,
        statement: Executable,
        dialect: Dialect,
        *,
        columns: Sequence[str] | None = None,
        selected: Sequence[ColumnElement[Any]] = (),
    ) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(columns or []) or None)
        self.sql = compiled.string
        # Positional paramstyles (SQLite's "?") take values in this order; named ones a mapping.
        self._order: tuple[str, ...] | None = (
            tuple(compiled.positiontup) if compiled.positiontup is not None else None
        )
        self._bind: dict[str, Converter] = {}
        for name, bind in compiled.binds.items():
            convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if convert is not None:
                self._bind[name] = convert
        self._result: list[Converter | None] = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in selected
        ]
        self._names = [column.key for column in selected]
        self._dbapi_error: type[Exception] = dialect.loaded_dbapi.Error

    def _params(self, values: Mapping[str, Any]) -> Any:
        if self._bind:
            values = dict(values)
            for name, convert in self._bind.items():
                if name in values:
                    values[name] = convert(values[name])
        if self._order is None:
            return values
        return tuple(values[name] for name in self._order)

    def run(self, conn: Connection, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Execute with one set of parameters; the rows it selects (none for a write)."""
        params = self._params(values)
        cursor = conn.connection.cursor()
        try:
            cursor.execute(self.sql, params)
            return list(cursor.fetchall()) if cursor.description else []
        except self._dbapi_error as error:
            raise _translated(self.sql, params, error, self._dbapi_error) from error
        finally:
            cursor.close()

    def run_many(self, conn: Connection, values: Sequence[Mapping[str, Any]]) -> None:
        params = [self._params(each) for each in values]
        cursor = conn.connection.cursor()
        try:
            cursor.executemany(self.sql, params)
        except self._dbapi_error as error:
            raise _translated(self.sql, params, error, self._dbapi_error) from error
        finally:
            cursor.close()

    def mappings(self, conn: Connection, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The selected rows as {column: value}, converted as SQLAlchemy would."""
        return [
            {
                name: (convert(value) if convert is not None else value)
                for name, convert, value in zip(self._names, self._result, row, strict=True)
            }
            for row in self.run(conn, values)
        ]


def _translated(sql: str, params: Any, error: Exception, dbapi_error: type[Exception]) -> Exception:
    # The same exception types SQLAlchemy raises (IntegrityError, OperationalError, ...), so
    # callers handle a prepared statement's failure exactly like any other.
    return DBAPIError.instance(sql, params, error, dbapi_error)
