"""Whether a worker is there to run what is triggered (`engine.workers`), on the real dev server."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from temporalio.client import Client

from core.settings import Settings
from engine.workers import POLL_FRESH, worker_presence
from tests.helpers import assert_eventually


@pytest.mark.usefixtures("worker")
async def test_a_running_worker_is_seen_polling(client: Client, settings: Settings) -> None:
    async def seen() -> None:
        presence = await worker_presence(client, settings.task_queue)
        assert presence.present, presence
        assert presence.problem() is None

    await assert_eventually(seen)


async def test_a_task_queue_nobody_polls_names_itself(client: Client) -> None:
    queue = f"nobody-{uuid.uuid4()}"
    presence = await worker_presence(client, queue)
    assert (0, None) == (presence.pollers, presence.last_poll)
    problem = presence.problem()
    assert problem is not None
    assert repr(queue) in problem and "none seen in the last 5 minutes" in problem


@pytest.mark.usefixtures("worker")
async def test_a_worker_whose_last_poll_is_too_old_is_not_counted(
    client: Client, settings: Settings
) -> None:
    """What the server remembers of a stopped worker (up to 5 minutes) does not count as one."""

    async def seen() -> None:
        assert (await worker_presence(client, settings.task_queue)).present

    await assert_eventually(seen)
    later = datetime.now(UTC) + POLL_FRESH * 2
    presence = await worker_presence(client, settings.task_queue, now=later)
    assert 0 == presence.pollers
    assert presence.last_poll is not None
    problem = presence.problem()
    assert problem is not None and "last poll at " in problem
