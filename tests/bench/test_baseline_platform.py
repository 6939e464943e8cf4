"""The baseline's lever call handles a dropped connection as the product's connector does, so
that the benchmark never charges it a retry the product would not pay."""

from __future__ import annotations

import httpx
from temporalio.testing import ActivityEnvironment

from bench.baseline import BaselinePlatform, Call
from tests.helpers import dropping_receiver


async def test_a_connection_the_platform_closed_is_replaced_at_once() -> None:
    answer = b'{"previous": {"queue": "hate", "extra_reviewers": 0}}'
    call = Call("INC-1", "surge", "apply-1", "/moderation/surge", {"queue": "hate"})
    async with dropping_receiver(answer) as platform, httpx.AsyncClient() as client:
        levers = BaselinePlatform(base_url=platform.url, client=client, webhook_secret="s")
        previous = await ActivityEnvironment().run(levers.post_lever, call)
    assert {"queue": "hate", "extra_reviewers": 0} == previous
    assert ["INC-1/surge/apply-1"] * 2 == platform.keys
