"""Sending a workflow Update so that a busy server or worker delays it instead of failing it.

The server answers an Update's RPC with DEADLINE_EXCEEDED when the workflow does not take it in
time: its worker is down, or so loaded that the workflow task carrying the Update waits in a
queue. The request may still be delivered later, so the caller must not simply send a new one:
each attempt re-sends the same update id, which the server deduplicates, until the deadline.

A server that goes away (UNAVAILABLE, or UNKNOWN for a request it cut off) may have taken the
Update and lost it with the workflow task carrying it, after the handler's lever calls reached
the platform: an Update is kept only once that task completes. The same id is sent again until
the server is back (or the deadline): the workflow then carries it out afresh, its lever calls
under the same idempotency keys, so the platform applies nothing twice and the incident's record
matches the platform again.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from typing import Any

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.service import RPCError, RPCStatusCode

# One RPC never waits longer than this: a connection that silently dropped is noticed.
_ATTEMPT = timedelta(seconds=30)


# What an RPC fails with when the connection, not the server, gave no answer: a server that
# cannot be reached, or one that went away with the request in flight ("transport error").
_CONNECTION_LOST = frozenset({RPCStatusCode.UNAVAILABLE, RPCStatusCode.UNKNOWN})
# How long the check whether a timed-out Update was at least taken may wait.
_PROBE = timedelta(seconds=2)
# Between sends to a server that could not be reached (the client has retried for seconds).
_UNREACHABLE_PAUSE_S = 1.0


class UpdateTimedOut(Exception):
    """The workflow had not answered the Update by the deadline (it may still take it later);
    `accepted`: it had taken it (its validator passed) and was still carrying it out;
    `unreachable`: why the server could not be reached when the deadline passed."""

    def __init__(
        self, message: str, *, accepted: bool = False, unreachable: str | None = None
    ) -> None:
        super().__init__(message)
        self.accepted = accepted
        self.unreachable = unreachable


async def send_update(
    client: Client, workflow_id: str, update: Any, arg: Any, *, timeout_s: float
) -> Any:
    """Run `update(arg)` on the workflow and answer its result, waiting at most `timeout_s`.

    Refusals and failures raise as they do for `execute_update` (WorkflowUpdateFailedError,
    RPCError); a deadline passed raises UpdateTimedOut.
    """
    handle = client.get_workflow_handle(workflow_id)
    name = getattr(update, "__name__", str(update))
    update_id = f"{name}-{secrets.token_hex(8)}"
    # The SDK itself re-sends an attempt the server answered before the Update was accepted,
    # outside any attempt's timeout: the overall deadline is kept here.
    overall = asyncio.timeout(timeout_s)
    unreachable: str | None = None  # the last attempt's, if the server could not be reached
    try:
        async with overall:
            while True:
                unreachable = None  # as this attempt finds it, if the deadline cuts it short
                try:
                    # One RPC when the workflow answers promptly, as `execute_update` does.
                    taken = await handle.start_update(
                        update,
                        arg,
                        id=update_id,
                        wait_for_stage=WorkflowUpdateStage.COMPLETED,
                        rpc_timeout=_ATTEMPT,
                    )
                    return await taken.result(rpc_timeout=_ATTEMPT)
                except WorkflowUpdateRPCTimeoutOrCancelledError:
                    _reraise_cancellation()
                except RPCError as error:
                    if error.status not in _CONNECTION_LOST:
                        raise
                    unreachable = error.message or "unavailable"
                    await asyncio.sleep(_UNREACHABLE_PAUSE_S)
    except TimeoutError:
        if not overall.expired():
            raise
        said = f"not answered within {timeout_s:g}s"
        # The client retries one RPC to a server that is away for seconds before it says so:
        # ask the server itself, once, whether it can be reached at all.
        unreachable = unreachable or await _unreachable(client)
        if unreachable is not None:  # nothing to ask whether it was taken
            raise UpdateTimedOut(said, unreachable=unreachable) from None
        accepted = await _accepted(handle, update, arg, update_id)
        raise UpdateTimedOut(said, accepted=accepted) from None


async def _accepted(
    handle: WorkflowHandle[Any, Any], update: Any, arg: Any, update_id: str
) -> bool:
    """Whether the workflow has taken the Update: the same id again, asking only for that stage
    (the server answers at once for one taken, and deduplicates it either way)."""
    try:
        async with asyncio.timeout(_PROBE.total_seconds()):
            await handle.start_update(
                update,
                arg,
                id=update_id,
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                rpc_timeout=_PROBE,
            )
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        _reraise_cancellation()
        return False
    return True


async def _unreachable(client: Client) -> str | None:
    """Why the server cannot be reached now (one RPC, not retried), or None if it answers."""
    try:
        await client.workflow_service.get_system_info(
            GetSystemInfoRequest(), retry=False, timeout=_PROBE
        )
    except RPCError as error:
        if error.status == RPCStatusCode.UNAVAILABLE:
            return error.message or "unavailable"
    return None


def _reraise_cancellation() -> None:
    # The SDK reports a cancellation (the caller's, or the deadline's) as the same error as an
    # attempt's timeout.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
