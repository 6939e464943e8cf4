"""Every command starts without loading what only other commands use (start-up is most of a
short command's time: the Temporal client, SQLAlchemy, FastAPI and Alembic took 2.4 s)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.cli.test_cli import REPO

# Loaded by the commands that use them, never by `crisis --help` or at import.
HEAVY = (
    "alembic",
    "fastapi",
    "sqlalchemy",
    "temporalio.client",
    "temporalio.worker",
    "uvicorn",
    "engine.simulate",
    "engine.protocol",
    "store.audit_store",
)


def test_importing_the_cli_loads_no_engine_service() -> None:
    code = (
        f"import json, sys, cli.main; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert [] == json.loads(done.stdout.splitlines()[-1])
