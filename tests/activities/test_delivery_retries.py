"""Deliveries through a real Temporal worker (the one `build_worker` assembles): a receiver that
is down at first is retried until it accepts; one that stays down fails the delivery after the
last attempt, loudly; a refused message is not retried at all."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Worker

from core.net import free_port
from core.settings import Settings
from engine.temporal import SANDBOX, build_worker
from store.audit_store import AuditStore
from tests.activities.delivery_workflow import DeliverOnce, DeliveryJob
from tests.activities.receivers import WebhookReceiver, serving_on
from tests.activities.test_channels import delivery_request
from tests.helpers import assert_eventually, sdk_failure_tracebacks, serve_app
from workflows.notifications import DeliveryReceipt, WebhookChannel


@asynccontextmanager
async def delivering(
    client: Client, settings: Settings, store: AuditStore
) -> AsyncIterator[tuple[str, str]]:
    """The shipped worker on one queue (activities), the tiny workflow on another; yields both."""
    activity_queue, workflow_queue = f"deliver-{uuid.uuid4()}", f"probe-{uuid.uuid4()}"
    async with httpx.AsyncClient(timeout=2) as http:
        shipped = build_worker(
            client, settings=settings, http=http, store=store, task_queue=activity_queue
        )
        probe = Worker(
            client, task_queue=workflow_queue, workflows=[DeliverOnce], workflow_runner=SANDBOX
        )
        async with shipped, probe:
            yield activity_queue, workflow_queue


async def start(
    client: Client, queues: tuple[str, str], url: str, *, max_attempts: int
) -> WorkflowHandle[DeliverOnce, DeliveryReceipt]:
    activity_queue, workflow_queue = queues
    job = DeliveryJob(
        request=delivery_request(WebhookChannel(url=f"{url}/hooks/regulator")),
        activity_queue=activity_queue,
        max_attempts=max_attempts,
    )
    return await client.start_workflow(
        DeliverOnce.run, job, id=f"deliver-{uuid.uuid4()}", task_queue=workflow_queue
    )


async def attempts(handle: WorkflowHandle[DeliverOnce, DeliveryReceipt]) -> int:
    """How many attempts the server started for the delivery (the last start records it)."""
    started = [
        event.activity_task_started_event_attributes.attempt
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    return max(started, default=0)


async def test_a_receiver_down_at_first_gets_the_message_after_retries(
    client: Client, settings: Settings, sqlite_store: AuditStore
) -> None:
    """Refused connections, then 503s, then acceptance: the receipt holds the receiver's id and
    every attempt carried the same idempotency key."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    receiver = WebhookReceiver(secret=settings.webhook_secret, status=503, answer_id="rcv-42")
    async with delivering(client, settings, sqlite_store) as queues:
        handle = await start(client, queues, url, max_attempts=40)

        async def refused_at_least_once() -> None:
            description = await handle.describe()
            pending = description.raw_description.pending_activities
            assert pending and pending[0].attempt >= 2
            assert "unreachable" in pending[0].last_failure.message

        await assert_eventually(refused_at_least_once)
        with serving_on(receiver.app(), port):

            async def answered_unavailable() -> None:
                assert 503 in receiver.answered

            await assert_eventually(answered_unavailable)
            receiver.status = 200
            receipt = await handle.result()

    assert ("webhook", "rcv-42") == (receipt.channel, receipt.message_id)
    (accepted,) = receiver.accepted
    assert [] == receiver.refused  # every attempt was signed correctly
    keys = {accepted.headers["idempotency-key"]}
    assert {"INC-7/notify-regulator/apply-1/0"} == keys
    # Attempts that never reached the receiver (refused) plus those it answered.
    assert await attempts(handle) > len(receiver.answered) >= 2


async def test_a_receiver_that_stays_down_fails_the_delivery_after_the_last_attempt(
    client: Client,
    settings: Settings,
    sqlite_store: AuditStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="temporalio.activity")
    receiver = WebhookReceiver(secret=settings.webhook_secret, status=503)
    with serve_app(receiver.app()) as url:
        async with delivering(client, settings, sqlite_store) as queues:
            handle = await start(client, queues, url, max_attempts=3)
            with pytest.raises(WorkflowFailureError) as failed:
                await handle.result()

    activity_error = failed.value.cause
    assert isinstance(activity_error, ActivityError)
    cause = activity_error.cause
    assert isinstance(cause, ApplicationError)
    assert ("DeliveryUnavailable", False) == (cause.type, cause.non_retryable)
    assert "HTTP 503" in cause.message
    assert [503, 503, 503] == receiver.answered
    assert 3 == await attempts(handle)
    assert [] == sdk_failure_tracebacks(caplog)  # each attempt's own warning says it


async def test_a_refused_message_is_not_retried(
    client: Client, settings: Settings, sqlite_store: AuditStore
) -> None:
    receiver = WebhookReceiver(secret=settings.webhook_secret, status=422)
    with serve_app(receiver.app()) as url:
        async with delivering(client, settings, sqlite_store) as queues:
            handle = await start(client, queues, url, max_attempts=10)
            with pytest.raises(WorkflowFailureError) as failed:
                await handle.result()

    cause = failed.value.cause.cause  # type: ignore[union-attr]
    assert isinstance(cause, ApplicationError)
    assert ("DeliveryRejected", True) == (cause.type, cause.non_retryable)
    assert [422] == receiver.answered
    assert 1 == await attempts(handle)
