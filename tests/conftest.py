"""Session-wide real services: a Temporal dev server, the platform sandbox, audit stores."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from temporalio.client import Client

from core.settings import Settings
from engine.devserver import free_port, start_dev_server
from engine.temporal import connect_address, running_worker
from sandbox.app import create_app
from store.audit_store import AuditStore
from tests.helpers import serve_app

# The engine's tests run on a frozen playbook library (see its header), whoever tunes `playbooks/`.
ENGINE_PLAYBOOKS = Path(__file__).resolve().parent / "fixtures" / "playbooks"
os.environ["CRISIS_PLAYBOOKS_DIR"] = str(ENGINE_PLAYBOOKS)
# Every worker the tests start (in-process or as a child) re-imports the interpreter per run, so
# the workflow sandbox refuses a non-deterministic call in it; test_workflow_runners.py runs the
# shipped runner as well.
os.environ["CRISIS_STRICT_WORKFLOW_SANDBOX"] = "1"

POSTGRES_URL = os.environ.get(
    "CRISIS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


# --- the SDK's exit crash (temporalio/sdk-python#300) ---------------------------------------
# After a Temporal client has been used the interpreter can die at exit (134/139) although every
# test passed. Keep pytest's real status and leave with os._exit once everything is flushed.
# Under pytest-xdist (`make test`) only the workers use clients, and a worker's results reach
# the controller before it exits: the controller is the process whose status counts.
_exit_status: dict[str, int] = {}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status["status"] = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    if "status" in _exit_status and not hasattr(config, "workerinput"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status["status"])


# --- services ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def temporal_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    directory = tmp_path_factory.mktemp("temporal")
    process = start_dev_server(
        db_file=directory / "temporal.db", port=port, log_file=directory / "server.log"
    )
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="session")
async def client(temporal_address: str) -> Client:
    return await connect_address(temporal_address)


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    with serve_app(create_app(webhook_secret=Settings().webhook_secret)) as url:
        yield url


class Sandbox:
    """The platform sandbox as tests see it: state, faults, reset."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.AsyncClient(base_url=url, timeout=10)

    async def state(self) -> dict[str, Any]:
        response = await self.http.get("/state")
        response.raise_for_status()
        return response.json()

    async def fault(self, **rule: Any) -> None:
        (await self.http.post("/faults", json=rule)).raise_for_status()

    async def clear_faults(self) -> None:
        (await self.http.delete("/faults")).raise_for_status()

    async def reset(self) -> None:
        (await self.http.post("/reset")).raise_for_status()


@pytest.fixture
async def sandbox(sandbox_url: str) -> AsyncIterator[Sandbox]:
    box = Sandbox(sandbox_url)
    await box.reset()
    yield box
    await box.http.aclose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('audit') / 'audit.db'}"


@pytest.fixture(scope="session")
def sqlite_store(sqlite_url: str) -> Iterator[AuditStore]:
    store = AuditStore(sqlite_url)
    yield store
    store.dispose()


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema in the test database, as a URL whose connections use it; dropped after."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {schema}")
    except psycopg.Error as error:
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required for the tests: {error}")
    separator = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


@pytest.fixture(scope="session")
def postgresql_store(postgresql_url: str) -> Iterator[AuditStore]:
    store = AuditStore(postgresql_url)
    yield store
    store.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_store(request: pytest.FixtureRequest) -> AuditStore:
    return request.getfixturevalue(f"{request.param}_store")


def make_settings(
    *, temporal_address: str, sandbox_url: str, database_url: str, **extra: Any
) -> Settings:
    port = int(sandbox_url.rsplit(":", 1)[1])
    return Settings(
        temporal_address=temporal_address,
        sandbox_port=port,
        database_url=database_url,
        task_queue=f"test-{uuid.uuid4()}",
        **{"playbooks_dir": ENGINE_PLAYBOOKS, **extra},
    )


@pytest.fixture
def settings(temporal_address: str, sandbox_url: str, sqlite_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        temporal_address=temporal_address,
        sandbox_url=sandbox_url,
        database_url=sqlite_url,
        data_dir=tmp_path / "data",
    )


@pytest.fixture
async def worker(
    client: Client, settings: Settings, sqlite_store: AuditStore
) -> AsyncIterator[None]:
    async with running_worker(client, settings=settings, store=sqlite_store):
        yield
