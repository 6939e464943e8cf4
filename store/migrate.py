"""Bring an audit database to the current schema with Alembic (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from store.errors import SchemaTooNew

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The newest revision: migration files are numbered, and a file's revision is its number.
HEAD = max(path.name[:4] for path in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))
# Tables the engine created itself before it had migrations, and the revision each matches.
CREATED_BEFORE_MIGRATIONS = (("0001", "audit_events"), ("0002", "audit_seals"))


def _config(connection: object) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade to `revision`. A database made before migrations existed (tables created
    directly) is stamped at the revision its tables match, then upgraded like any other."""
    current = current_revision(engine)
    if revision in ("head", HEAD) and current == HEAD:
        return  # the usual case, on every start and every CLI command: Alembic is not even loaded
    if current is not None and current > HEAD:  # revisions are numbered
        raise SchemaTooNew(
            f"the audit store's schema is at revision {current}, newer than this version of the "
            f"engine knows (up to {HEAD}): a newer engine migrated it; run that version here too"
        )
    from alembic import command

    with engine.begin() as connection:
        tables = set(inspect(connection).get_table_names())
        config = _config(connection)
        if "alembic_version" not in tables:
            made = [rev for rev, table in CREATED_BEFORE_MIGRATIONS if table in tables]
            if made:
                command.stamp(config, made[-1])
        command.upgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        if "alembic_version" not in inspect(connection).get_table_names():
            return None
        return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
