"""A tiny workflow that runs one delivery with a short retry policy, as the crisis workflow would.

Its own module: the workflow sandbox re-imports the module a workflow is defined in, and this one
imports nothing but temporalio and the interface models.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from workflows.notifications import DELIVER_NOTIFICATION, DeliveryReceipt, DeliveryRequest


class DeliveryJob(BaseModel):
    request: DeliveryRequest
    activity_queue: str  # where the worker under test polls for activities
    max_attempts: int


@workflow.defn
class DeliverOnce:
    @workflow.run
    async def run(self, job: DeliveryJob) -> DeliveryReceipt:
        return await workflow.execute_activity(
            DELIVER_NOTIFICATION,
            job.request,
            result_type=DeliveryReceipt,
            task_queue=job.activity_queue,
            start_to_close_timeout=timedelta(seconds=5),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(milliseconds=200),
                backoff_coefficient=1.5,
                maximum_interval=timedelta(milliseconds=500),
                maximum_attempts=job.max_attempts,
            ),
        )
