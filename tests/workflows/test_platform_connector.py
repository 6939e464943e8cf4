"""The platform connector sends what a real control API needs: auth, idempotency, trace headers."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.audit import AuditWriter
from activities.platform import PlatformLevers, _Attempts
from core.net import free_port
from core.settings import Settings
from tests.conftest import Sandbox
from tests.helpers import assert_eventually, dropping_receiver, serve_app
from workflows.audit import AuditBatch, AuditTrail, AuditWritten
from workflows.incident import LeverOutcome, LeverRequest
from workflows.incident_run import unanswered


async def apply(
    settings: Settings, step_id: str, lever: str, args: dict[str, Any], *, timeout: float = 5.0
) -> LeverOutcome:
    """Run the lever activity once (`first_apply`) through a fresh client."""
    async with httpx.AsyncClient(timeout=timeout) as http:
        levers = PlatformLevers(settings=settings, client=http)
        request = first_apply(step_id, lever, args)
        return await ActivityEnvironment().run(levers.apply_lever, request)


def first_apply(step_id: str, lever: str, args: dict[str, Any], **more: Any) -> LeverRequest:
    """The first application of a step's lever in incident INC-1."""
    return LeverRequest(
        incident_id="INC-1", step_id=step_id, operation="apply-1", lever=lever, args=args, **more
    )


async def test_each_call_carries_the_configured_token_and_a_stable_key() -> None:
    """Authorization comes from settings; the idempotency key is incident/step/operation."""
    seen: list[dict[str, Any]] = []
    platform = FastAPI()

    @platform.post("/detection/threshold")
    async def threshold(request: Request) -> dict[str, Any]:
        seen.append({"headers": dict(request.headers), "body": await request.json()})
        return {"previous": {"classifier": "fraud", "threshold": 0.9}}

    with serve_app(platform) as url:
        settings = Settings(detection_url=f"{url}/detection", platform_token="s3cret")
        outcome = await apply(
            settings, "raise", "detection.set_threshold", {"classifier": "fraud", "threshold": 0.3}
        )
    assert {"classifier": "fraud", "threshold": 0.9} == outcome.previous
    (call,) = seen
    assert "Bearer s3cret" == call["headers"]["authorization"]
    assert "INC-1/raise/apply-1" == call["headers"]["idempotency-key"]
    assert {"classifier": "fraud", "threshold": 0.3} == call["body"]


async def test_a_stakeholder_name_never_leaves_the_webhook_path() -> None:
    """A message to a stakeholder whose name was never checked (an incident triggered before
    names were) is posted to that name's own webhook, quoted, never to another route."""
    seen: list[str] = []
    platform = FastAPI()

    @platform.post("/{path:path}")
    async def anything(request: Request) -> dict[str, Any]:
        seen.append(request.scope["raw_path"].decode())  # as sent, before any decoding
        return {}

    with serve_app(platform) as url:
        settings = Settings(notify_url=f"{url}/notify")
        await apply(settings, "tell", "notify.webhook", {"to": "../throttle", "message": "hi"})
    assert ["/notify/webhooks/..%2Fthrottle"] == seen


async def test_a_call_sent_and_never_answered_says_so_and_one_never_sent_does_not() -> None:
    """A platform that takes the request and does not answer in time may have applied it: the
    failure says `unanswered`, which a stand-down acts on (workflows.incident_run.unanswered).
    A connection never made sent nothing."""
    platform = FastAPI()

    @platform.post("/moderation/surge")
    async def slow() -> dict[str, Any]:
        await asyncio.sleep(2)
        return {"previous": {"queue": "hate", "extra_reviewers": 0}}

    surge = {"queue": "hate", "extra_reviewers": 5}
    with serve_app(platform) as url:
        slow_platform = Settings(moderation_url=f"{url}/moderation")
        with pytest.raises(ApplicationError) as slow_answer:
            await apply(slow_platform, "surge", "moderation.surge", surge, timeout=0.3)
    assert unanswered(slow_answer.value)
    closed = Settings(moderation_url=f"http://127.0.0.1:{free_port()}/moderation")
    with pytest.raises(ApplicationError) as never_sent:
        await apply(closed, "surge", "moderation.surge", surge, timeout=0.3)
    assert not unanswered(never_sent.value)


async def test_a_call_whose_earlier_attempt_had_no_answer_stays_unanswered() -> None:
    """An attempt that timed out may have been applied; a later attempt answered with a 5xx
    says nothing of it, so the call's failure still says `unanswered`. Once the platform has
    answered the call for good, its next failure is judged on its own."""
    answers = iter(["slow", 500, 200, 500])
    platform = FastAPI()

    @platform.post("/moderation/surge")
    async def surge() -> Any:
        answer = next(answers)
        if answer == "slow":
            await asyncio.sleep(2)
        if answer == 500:
            raise HTTPException(500, "down")
        return {"previous": {"queue": "hate", "extra_reviewers": 0}}

    request = first_apply("surge", "moderation.surge", {"queue": "hate", "extra_reviewers": 5})
    with serve_app(platform) as url:
        settings = Settings(moderation_url=f"{url}/moderation")
        async with httpx.AsyncClient(timeout=0.3) as http:
            levers = PlatformLevers(settings=settings, client=http)

            async def fails(on: PlatformLevers) -> bool:
                """Whether the attempt's failure says unanswered."""
                with pytest.raises(ApplicationError) as failed:
                    await ActivityEnvironment().run(on.apply_lever, request)
                return unanswered(failed.value)

            assert await fails(levers)  # timed out
            assert await fails(levers)  # a 5xx after it
            await ActivityEnvironment().run(levers.apply_lever, request)  # answered
            assert not await fails(levers)
            answers = iter([500])
            assert not await fails(PlatformLevers(settings=settings, client=http))  # no past


def test_an_attempt_waits_until_just_before_the_first_deadline_that_cuts_it_off() -> None:
    """Its own, or an earlier attempt's: Temporal's core leaves that one's timer running, and it
    cuts off a later attempt of the same call (sdk-rust#1454). With too little time left, the
    attempt leaves it to Temporal."""
    attempts = _Attempts()
    assert attempts.wait(timedelta(seconds=10)) == pytest.approx(9.8, abs=0.01)
    # At once again: the first attempt's deadline comes first.
    assert attempts.wait(timedelta(seconds=30)) == pytest.approx(9.8, abs=0.01)
    attempts.cutoffs = [time.monotonic() + 0.3]  # an earlier attempt's, nearly due
    assert attempts.wait(timedelta(seconds=10)) is None
    assert _Attempts().wait(None) is None


async def test_a_connection_the_platform_closed_is_replaced_at_once() -> None:
    """A kept-alive connection the platform has just closed fails the request before any answer
    (every keep-alive timeout races with the pool's): the lever is sent again at once on a new
    connection, with the same idempotency key, instead of failing the attempt and waiting for
    the retry policy's first interval."""
    answer = b'{"previous": {"queue": "hate", "extra_reviewers": 0}}'
    async with dropping_receiver(answer) as platform:
        settings = Settings(moderation_url=f"{platform.url}/moderation")
        outcome = await apply(settings, "surge", "moderation.surge", {"queue": "hate"})
    assert {"queue": "hate", "extra_reviewers": 0} == outcome.previous
    assert ["INC-1/surge/apply-1"] * 2 == platform.keys


class StalledWriter(AuditWriter):
    """An audit writer whose writes never finish, noting when one is abandoned."""

    def __init__(self) -> None:  # nothing is stored
        self.started = asyncio.Event()
        self.abandoned = asyncio.Event()

    async def write(self, batch: AuditBatch) -> AuditWritten:
        self.started.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.abandoned.set()
        raise AssertionError("unreachable")


async def test_an_abandoned_call_stops_waiting_for_its_early_write(
    settings: Settings, sandbox: Sandbox
) -> None:
    """A call still unanswered after a second writes the events it was lent; if the attempt is
    then cancelled, that write is abandoned with it, not left running on its own."""
    await sandbox.fault(path_prefix="/detection/threshold", status=0, latency_ms=3000, times=1)
    lent = AuditTrail("INC-1")
    lent.record("incident.triggered", at="2026-11-29T12:00:00+00:00", actor="alice")
    request = first_apply(
        "raise",
        "detection.set_threshold",
        {"classifier": "fraud", "threshold": 0.3},
        lent=AuditBatch(events=lent.lend(), task=3),
    )
    writer = StalledWriter()
    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(
        environment.info, start_to_close_timeout=timedelta(seconds=30)
    )
    async with httpx.AsyncClient() as http:
        levers = PlatformLevers(settings=settings, client=http, audit=writer)
        call = asyncio.create_task(environment.run(levers.apply_lever, request))
        await asyncio.wait_for(writer.started.wait(), timeout=5)
        environment.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    await asyncio.wait_for(writer.abandoned.wait(), timeout=5)

    # The platform still applies what it was sent (the lost answer idempotency keys exist for).
    # Wait for it here, or it lands in whatever test runs next.
    async def applied() -> None:
        keys = [a["key"] for a in (await sandbox.state())["applications"]]
        assert ["INC-1/raise/apply-1"] == keys

    await assert_eventually(applied, timeout=10)
