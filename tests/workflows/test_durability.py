"""Crashes: a worker killed mid-playbook, the Temporal server stopped mid-incident."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client, Interceptor, OutboundInterceptor, StartWorkflowInput

from activities.audit import AuditWriter
from core.settings import Settings
from engine.devserver import free_port, start_dev_server
from engine.errors import IncidentBusy
from engine.incidents import Incidents
from engine.temporal import build_worker, connect, running_worker
from store.audit_store import AuditStore, SupersededRow
from store.seals import Signer
from tests.conftest import Sandbox
from tests.helpers import assert_eventually
from workflows.audit import AuditBatch, AuditWritten
from workflows.incident import IncidentStatus

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def worker_process(settings: Settings) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        TEMPORAL_ADDRESS=settings.temporal_address,
        CRISIS_TASK_QUEUE=settings.task_queue,
        CRISIS_SANDBOX_PORT=str(settings.sandbox_port),
        CRISIS_DATABASE_URL=settings.resolved_database_url,
        CRISIS_DATA_DIR=str(settings.data_dir),
        CRISIS_LOG_LEVEL="warning",
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log = settings.data_dir / f"worker-{len(list(settings.data_dir.glob('worker-*.log')))}.log"
    with log.open("wb") as output:  # kept for diagnosis when a test fails
        return subprocess.Popen(
            [sys.executable, "-m", "cli", "worker"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


async def lever_in_flight(sandbox: Sandbox) -> None:
    """Wait until the platform holds a (delayed) lever call. Queries cannot show this: a worker
    answers them between workflow tasks, and a local activity in flight holds its task open."""

    async def check() -> None:
        assert (await sandbox.state())["stats"]["faults_injected"] >= 1

    await assert_eventually(check, timeout=30, interval=0.05)


async def step_state(
    incidents: Incidents, incident_id: str, step_id: str, state: str
) -> IncidentStatus:
    async def check() -> IncidentStatus:
        status = await incidents.status(incident_id)
        assert state == next(s.state for s in status.steps if s.id == step_id), status
        return status

    return await assert_eventually(check, timeout=60)


def applied_once_each(state: dict) -> list[str]:
    steps = [(a["step"], a["operation"]) for a in state["applications"]]
    assert len(steps) == len(set(steps)), steps
    return [step for step, _ in steps]


async def test_killing_the_worker_mid_playbook_applies_every_lever_exactly_once(
    client: Client,
    settings: Settings,
    sandbox: Sandbox,
    sqlite_store: AuditStore,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    """SIGKILL during a lever call; a new worker finishes the playbook, no lever applied twice."""
    await sandbox.fault(path_prefix="/detection", status=0, latency_ms=2500, times=1)
    processes.append(worker_process(settings))
    incidents = Incidents(client, settings)
    triggered = await incidents.trigger("violent-disorder", {}, actor="alice")
    await lever_in_flight(sandbox)

    processes[0].send_signal(signal.SIGKILL)
    processes[0].wait()
    processes.append(worker_process(settings))
    await step_state(incidents, triggered.incident_id, "notify-crisis-team", "applied")

    state = await sandbox.state()
    assert [
        "throttle-recommender",
        "raise-detection",
        "surge-hate-queue",
        "notify-regulator",
        "notify-crisis-team",
    ] == applied_once_each(state)
    assert 0 == state["stats"]["duplicates"]
    # The lost call was answered again from the platform's idempotency memory, not re-applied.
    assert state["stats"]["replayed"] >= 1
    closed = await incidents.stand_down(triggered.incident_id, actor="bob", reason="over")
    assert "closed" == closed.state
    assert 0 == (await sandbox.state())["stats"]["duplicates"]
    await assert_eventually(lambda: _closed_and_verified(sqlite_store, triggered.incident_id))


class RestartableServer:
    """A dev server on a database file of its own, which a test stops and starts again."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.db_file = tmp_path / "temporal.db"
        self.process = start_dev_server(db_file=self.db_file, port=self.port)

    def stop(self, how: signal.Signals) -> None:
        self.process.send_signal(how)
        self.process.wait(timeout=30)

    def start(self) -> None:
        self.process = start_dev_server(db_file=self.db_file, port=self.port)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RestartableServer]:
    started = RestartableServer(tmp_path)
    yield started
    started.process.terminate()
    started.process.wait(timeout=30)


async def _closed_and_verified(store: AuditStore, incident_id: str) -> None:
    events = store.events(incident_id)
    assert events and "incident.closed" == events[-1].kind
    assert store.verify(incident_id).ok
    kinds = [e.kind for e in events]
    assert 5 == kinds.count("step.applied")


async def test_restarting_the_temporal_server_mid_incident_loses_and_repeats_nothing(
    settings: Settings, sandbox: Sandbox, sqlite_store: AuditStore, server: RestartableServer
) -> None:
    """The dev server stops during a lever call and restarts on its file; the incident completes."""
    settings = settings.model_copy(update={"temporal_address": f"127.0.0.1:{server.port}"})
    client = await connect(settings)
    before = await sandbox.state()
    await sandbox.fault(path_prefix="/moderation", status=0, latency_ms=2000, times=1)
    async with running_worker(client, settings=settings, store=sqlite_store):
        incidents = Incidents(client, settings)
        triggered = await incidents.trigger("violent-disorder", {}, actor="alice")
        await lever_in_flight(sandbox)
        server.stop(signal.SIGTERM)
        server.start()

        await step_state(incidents, triggered.incident_id, "notify-crisis-team", "applied")
        state = await sandbox.state()
        assert 5 == len(applied_once_each(state))
        assert 0 == state["stats"]["duplicates"]
        await incidents.stand_down(triggered.incident_id, actor="bob", reason="over")
        after = await sandbox.state()
        assert before["moderation"] == after["moderation"]
        assert before["detection"] == after["detection"]
        await assert_eventually(lambda: _closed_and_verified(sqlite_store, triggered.incident_id))


async def test_a_stand_down_lost_with_the_temporal_server_is_sent_again_and_carried_out(
    settings: Settings, sandbox: Sandbox, sqlite_store: AuditStore, server: RestartableServer
) -> None:
    """The server goes away while the stand-down's first undo is at the platform: the Update
    is kept only once its workflow task completes, so the server comes back without it, though
    the platform has the undo. The commander's request is sent again (same update id) until the
    server is back; the workflow carries it out afresh, the undo under the same idempotency key:
    the platform as before the incident, nothing applied twice, the trail whole."""
    settings = settings.model_copy(update={"temporal_address": f"127.0.0.1:{server.port}"})
    client = await connect(settings)
    before = await sandbox.state()
    async with running_worker(client, settings=settings, store=sqlite_store):
        incidents = Incidents(client, settings)
        triggered = await incidents.trigger("violent-disorder", {}, actor="alice")
        incident = triggered.incident_id
        await step_state(incidents, incident, "notify-crisis-team", "applied")
        slow_undo = {"path_prefix": "/moderation", "operation_prefix": "undo-"}
        await sandbox.fault(**slow_undo, status=0, latency_ms=2000, times=1)
        stand_down = asyncio.create_task(incidents.stand_down(incident, actor="bob", reason="over"))
        await lever_in_flight(sandbox)
        server.stop(signal.SIGKILL)
        # Down for longer than the client's own retries of one RPC last (about 6 s).
        await asyncio.sleep(8)
        server.start()

        status = await stand_down
        assert "closed" == status.state
        after = await sandbox.state()
        for setting in ("recommender", "detection", "moderation"):
            assert before[setting] == after[setting], setting
        assert 0 == after["stats"]["duplicates"]
        applied_once_each(after)
        await assert_eventually(lambda: _closed_and_verified(sqlite_store, incident))


async def test_an_action_that_reached_the_server_once_it_was_back_is_not_called_unreachable(
    settings: Settings, sandbox: Sandbox, sqlite_store: AuditStore, server: RestartableServer
) -> None:
    """The server is away when the stand-down is sent and back before its deadline; the workflow
    takes the request but an undo is still at the platform when the deadline passes: the answer
    says the incident has not carried it out yet, not that Temporal could not be reached."""
    settings = settings.model_copy(
        update={"temporal_address": f"127.0.0.1:{server.port}", "action_timeout_s": 25}
    )
    client = await connect(settings)
    async with running_worker(client, settings=settings, store=sqlite_store):
        incidents = Incidents(client, settings)
        incident = (await incidents.trigger("violent-disorder", {}, actor="alice")).incident_id
        await step_state(incidents, incident, "notify-crisis-team", "applied")
        await sandbox.fault(
            path_prefix="/moderation", operation_prefix="undo-", status=0, latency_ms=30_000
        )
        server.stop(signal.SIGKILL)
        stand_down = asyncio.create_task(incidents.stand_down(incident, actor="bob", reason="over"))
        try:
            # Away for longer than the client's own retries of one RPC (about 6 s) and one more.
            await asyncio.sleep(12)
            server.start()
            with pytest.raises(IncidentBusy) as busy:
                await stand_down
        finally:
            await sandbox.clear_faults()  # else the worker waits for the undo to stop
        # Taken, or (a worker slow to find the server again) not yet: either way it was reached.
        assert "could not be reached" not in str(busy.value), busy.value
        await step_state(incidents, incident, "surge-hate-queue", "undone")


class HeldActivations(ThreadPoolExecutor):
    """Runs workflow activations; while `held` is above zero, the next one waits `hold_s` first,
    as on a worker too busy to finish its workflow task in time."""

    def __init__(self, hold_s: float) -> None:
        super().__init__(max_workers=4)
        self.hold_s = hold_s
        self.held = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self.held > 0:
            self.held -= 1

            def late() -> Any:
                time.sleep(self.hold_s)
                return fn(*args, **kwargs)

            return super().submit(late)
        return super().submit(fn, *args, **kwargs)


class HoldAfterFirstWrites(AuditWriter):
    """After each of the first `times` writes of an incident's first events, holds the workflow
    activation that follows: the workflow task that wrote them times out."""

    def __init__(self, store: AuditStore, signer: Signer, executor: HeldActivations, times: int):
        super().__init__(store, signer)
        self._executor, self._times = executor, times

    async def write(self, batch: AuditBatch) -> AuditWritten:
        written = await super().write(batch)
        if batch.events[0].seq == 1 and self._times > 0:
            self._times -= 1
            self._executor.held = 1
        return written


class ShortTaskTimeout(Interceptor):
    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        class Outbound(OutboundInterceptor):
            async def start_workflow(self, input: StartWorkflowInput) -> Any:
                input.task_timeout = timedelta(seconds=1)
                return await super().start_workflow(input)

        return Outbound(next)


async def test_workflow_tasks_that_time_out_after_writing_leave_a_complete_trail(
    client: Client, settings: Settings, sandbox: Sandbox, sqlite_store: AuditStore
) -> None:
    """Twice a workflow task writes audit events and then times out (its worker too busy to
    finish it). The attempt that commits writes different rows under the same numbers (its own
    times); they replace the earlier attempts' rows, which are kept aside, and the incident runs,
    stands down and closes with an intact chain. (Attempts that share a history length are the
    store's tests: tests/store/test_audit_store.py.)"""
    before = await sandbox.state()
    executor = HeldActivations(hold_s=1.5)
    audit = HoldAfterFirstWrites(sqlite_store, Signer(settings.signing_key_path), executor, 2)
    config = client.config()
    config["interceptors"] = [ShortTaskTimeout()]
    starter = Client(**config)
    async with httpx.AsyncClient(timeout=settings.platform_timeout_s) as http:
        worker = build_worker(
            client,
            settings=settings,
            http=http,
            store=sqlite_store,
            audit=audit,
            workflow_task_executor=executor,
        )
        async with worker:
            incidents = Incidents(starter, settings)
            triggered = await incidents.trigger("violent-disorder", {}, actor="alice")
            await step_state(incidents, triggered.incident_id, "notify-crisis-team", "applied")
            await incidents.stand_down(triggered.incident_id, actor="bob", reason="over")
            await assert_eventually(
                lambda: _closed_and_verified(sqlite_store, triggered.incident_id)
            )
    executor.shutdown()

    attempts = await client.get_workflow_handle(triggered.incident_id).fetch_history()
    timed_out = [
        e for e in attempts.events if e.HasField("workflow_task_timed_out_event_attributes")
    ]
    assert timed_out, "no workflow task timed out: the test did not hold one"
    with sqlite_store.engine.connect() as connection:
        superseded = connection.execute(
            SupersededRow.__table__.select().where(  # type: ignore[attr-defined]
                SupersededRow.__table__.c.incident_id == triggered.incident_id  # type: ignore[attr-defined]
            )
        ).all()
    assert superseded and all(row.superseded_by_task >= row.task for row in superseded)
    after = await sandbox.state()
    assert before["recommender"] == after["recommender"]
    assert before["detection"] == after["detection"]
