"""Whether any worker is taking the task queue's workflow tasks, and whether Temporal answers.

Temporal accepts a trigger with no worker running and keeps it until one polls; meanwhile nothing
happens on the platform. Health reports it, and a trigger made then says so, so nobody waits on a
crisis measure that no process will apply.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

# A worker's poll waits up to a minute for a task, and the server records when each poll began:
# an idle worker is seen within this; one stopped (or with every slot busy) drops out of it.
POLL_FRESH = timedelta(seconds=70)


@dataclass(frozen=True)
class WorkerPresence:
    task_queue: str
    pollers: int  # workers seen polling within POLL_FRESH
    last_poll: datetime | None  # the newest poll seen by the server, however old

    @property
    def present(self) -> bool:
        return self.pollers > 0

    def problem(self) -> str | None:
        """One line for an operator, or None when a worker is polling."""
        if self.present:
            return None
        seen = (
            f"last poll at {self.last_poll.isoformat(timespec='seconds')}"
            if self.last_poll is not None
            else "none seen in the last 5 minutes"
        )
        return (
            f"no worker has polled task queue {self.task_queue!r} in the last "
            f"{int(POLL_FRESH.total_seconds())} s ({seen}): workers stopped, or every slot busy"
        )


async def worker_presence(
    client: Client, task_queue: str, *, now: datetime | None = None
) -> WorkerPresence:
    """Ask the server which workers polled the task queue for workflow tasks lately."""
    answer = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    polls = [
        poller.last_access_time.ToDatetime(tzinfo=UTC)
        for poller in answer.pollers
        if poller.HasField("last_access_time")
    ]
    since = (now or datetime.now(UTC)) - POLL_FRESH
    return WorkerPresence(
        task_queue=task_queue,
        pollers=sum(1 for at in polls if at >= since),
        last_poll=max(polls, default=None),
    )


async def temporal_problem(client: Client, *, timeout_s: float = 3) -> str | None:
    """Why Temporal does not answer a health check now, or None if it does."""
    try:
        await asyncio.wait_for(client.service_client.check_health(), timeout=timeout_s)
    except TimeoutError:  # says nothing of itself
        return f"no answer within {timeout_s:g} s"
    except Exception as error:  # any failure to answer is the answer
        return str(error) or type(error).__name__
    return None
