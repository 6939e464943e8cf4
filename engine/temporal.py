"""Connecting to Temporal and running workers: the one place that wires workflows to activities."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import sys
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.audit import AuditWriter
from activities.delivery import NotificationDelivery
from activities.overlaps import LaterIncidents
from activities.platform import PlatformLevers
from core.settings import Settings
from store.audit_store import AuditStore
from store.seals import Signer
from workflows.crisis import CrisisWorkflow

WORKFLOWS = [CrisisWorkflow]
# Third-party model code is imported once, outside the sandbox: re-importing pydantic for every
# workflow run is what made an earlier interpreter prototype slow (0.56x the throughput of a
# hand-written workflow).
_MODELS = ("pydantic", "pydantic_core")


def shipped_runner(*modules: str) -> SandboxedWorkflowRunner:
    """The sandbox for workflow code imported once, outside it (`modules`, passed through), and
    held to the sandbox's restrictions by the test suite instead (STRICT_SANDBOX).

    Without the sandbox's checks of builtins either: to make them, it swaps `isinstance`,
    `issubclass`, `open`, ... in the `builtins` module for wrappers while any workflow
    activation runs, so every `isinstance` in the process (the event loop's, the HTTP client's,
    the store's) goes through a Python wrapper meanwhile. A replay of an incident cost 12-15%
    more CPU for it. The strict sandbox keeps them."""
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*_MODELS, *modules)
    members = restrictions.invalid_module_members
    unchecked = {k: v for k, v in members.children.items() if k != "__builtins__"}
    return SandboxedWorkflowRunner(
        restrictions=dataclasses.replace(
            restrictions, invalid_module_members=dataclasses.replace(members, children=unchecked)
        )
    )


# Shipping workers import the engine's own workflow package once too: re-executing the
# interpreter module and re-reading its handlers cost every run (and every replay) several ms.
# It is deterministic by construction, and the test suite holds it to that under STRICT_SANDBOX.
SANDBOX = shipped_runner("workflows")
# Re-imports the interpreter module inside the sandbox for every run, so the sandbox's proxies
# refuse a non-deterministic call in it (the clock, random, I/O). CRISIS_STRICT_WORKFLOW_SANDBOX
# turns it on; the test suite runs every worker with it.
STRICT_SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(*_MODELS)
)


def workflow_runner(settings: Settings) -> SandboxedWorkflowRunner:
    return STRICT_SANDBOX if settings.strict_workflow_sandbox else SANDBOX


_runtime: Runtime | None = None


def quiet_runtime() -> Runtime:
    """The SDK core logs warnings to stdout by default, which would corrupt `--json` output:
    one runtime per process that logs only its errors (ours go through structlog)."""
    global _runtime  # one runtime per process, as the SDK expects
    if _runtime is None:
        _runtime = Runtime(
            telemetry=TelemetryConfig(
                logging=LoggingConfig(
                    filter=TelemetryFilter(core_level="ERROR", other_level="ERROR")
                )
            )
        )
    return _runtime


# The dev server opens its port a moment before its frontend is healthy: a process started
# beside it (`crisis up`'s worker and API, a test) waits that moment out instead of failing.
# Any other failure (nothing listening, a bad address) is reported at once.
_STARTING = "not healthy yet"
_STARTING_WITHIN_S = 15.0


async def connect(settings: Settings) -> Client:
    return await connect_address(settings.temporal_address, namespace=settings.temporal_namespace)


async def connect_address(address: str, *, namespace: str = "default") -> Client:
    deadline = time.monotonic() + _STARTING_WITHIN_S
    while True:
        try:
            return await Client.connect(
                address,
                namespace=namespace,
                data_converter=pydantic_data_converter,
                runtime=quiet_runtime(),
            )
        except RuntimeError as error:
            if _STARTING not in str(error) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def build_worker(
    client: Client,
    *,
    settings: Settings,
    http: httpx.AsyncClient,
    store: AuditStore,
    task_queue: str | None = None,
    audit: AuditWriter | None = None,
    workflow_task_executor: ThreadPoolExecutor | None = None,
) -> Worker:
    """The worker of every product activity and workflow. `audit`: the audit writer, by default
    one over `store` sealing with the engine's key; `workflow_task_executor`: where workflow
    activations run (by default the SDK's own thread pool)."""
    audit = audit or AuditWriter(store, Signer(settings.signing_key_path))
    levers = PlatformLevers(settings=settings, client=http, audit=audit)
    delivery = NotificationDelivery(settings=settings, client=http)
    later = LaterIncidents(store)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=WORKFLOWS,
        activities=[
            levers.apply_lever,
            delivery.deliver,
            audit.write_audit,
            later.reassert_later,
            later.wait_closed,
        ],
        workflow_runner=workflow_runner(settings),
        workflow_task_executor=workflow_task_executor,
    )


@asynccontextmanager
async def running_worker(
    client: Client,
    *,
    settings: Settings,
    store: AuditStore | None = None,
    task_queue: str | None = None,
) -> AsyncIterator[Worker]:
    """A worker polling in the background for the duration of the block."""
    own_store = store is None
    audit_store = store or AuditStore(settings.resolved_database_url)
    async with httpx.AsyncClient(timeout=settings.platform_timeout_s) as http:
        worker = build_worker(
            client, settings=settings, http=http, store=audit_store, task_queue=task_queue
        )
        try:
            async with worker:
                yield worker
        finally:
            if own_store:
                audit_store.dispose()


def installed_binary(name: str) -> Path:
    """A binary shipped by a Python package into this environment's bin directory."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install the project (pip install -e .)")
    return Path(found)
