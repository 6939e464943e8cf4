"""The platform connector sends what a real control API needs: auth, idempotency, trace headers."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI, Request
from temporalio.testing import ActivityEnvironment

from activities.platform import PlatformLevers
from core.settings import Settings
from tests.helpers import dropping_receiver, serve_app
from workflows.incident import LeverOutcome, LeverRequest


async def apply(settings: Settings, step_id: str, lever: str, args: dict[str, Any]) -> LeverOutcome:
    """Run the lever activity once (incident INC-1, first application) through a fresh client."""
    async with httpx.AsyncClient() as http:
        levers = PlatformLevers(settings=settings, client=http)
        request = LeverRequest(
            incident_id="INC-1", step_id=step_id, operation="apply-1", lever=lever, args=args
        )
        return await ActivityEnvironment().run(levers.apply_lever, request)


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
