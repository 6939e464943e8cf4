"""The audit writer: the one activity that appends the workflow's audit events to the store and
seals the new chain head with the engine's key."""

from __future__ import annotations

import asyncio
import contextvars

import structlog
from temporalio import activity

from store.audit_store import AppendResult, AuditStore, Write
from store.errors import AuditConflict
from store.seals import Signer
from workflows.audit import AuditBatch, AuditWritten
from workflows.incident import WRITE_AUDIT

log = structlog.get_logger(__name__)
SEAL_EVERY = 16
# Writes waiting while a group is being written go in the next group, up to this many.
GROUP_LIMIT = 200


class AuditWriter:
    """Writes are grouped: one at a time goes to the store, and whatever arrived meanwhile goes
    next, in one transaction. Under a burst of incidents that is one commit for many writes (no
    lock contention between them); a lone write goes at once."""

    def __init__(self, store: AuditStore, signer: Signer) -> None:
        self._store = store
        self._signer = signer
        self._waiting: list[tuple[Write, asyncio.Future[AppendResult]]] = []
        self._writing: asyncio.Task[None] | None = None

    @activity.defn(name=WRITE_AUDIT)
    async def write_audit(self, batch: AuditBatch) -> AuditWritten:
        return await self.write(batch)

    async def write(self, batch: AuditBatch) -> AuditWritten:
        """Append and seal a batch (from an activity: its own, or a lever call's)."""
        first, head = batch.events[0], batch.events[-1]
        # Seal the head when the incident closes, and at checkpoints while it runs (whenever a
        # batch crosses a multiple of SEAL_EVERY events): signing every batch costs throughput.
        # The seal is written in the same transaction as the rows it covers.
        closed = any(event.kind == "incident.closed" for event in batch.events)
        seal = None
        if closed or head.seq // SEAL_EVERY > (first.seq - 1) // SEAL_EVERY:
            seal = self._signer.seal(head, reason="closed" if closed else "checkpoint")
        try:
            result = await self._append(Write(batch.events, batch.task, seal, batch.task_time))
        except AuditConflict as error:
            # The record disagrees with the workflow: never overwrite it. Keep failing loudly
            # (the workflow retries) until a person looks; the levers carry on meanwhile.
            log.error("audit.conflict", incident_id=first.incident_id, error=str(error))
            raise
        log.debug(
            "audit.written",
            incident_id=first.incident_id,
            workflow_run=activity.info().workflow_run_id,
            task=batch.task,
            inserted=result.inserted,
            superseded=result.superseded,
            last_seq=head.seq,
        )
        return AuditWritten(
            inserted=result.inserted,
            superseded=result.superseded,
            last_seq=head.seq,
            head_hash=head.hash,
        )

    async def _append(self, write: Write) -> AppendResult:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((write, future))
        if self._writing is None or self._writing.done():
            # A context of its own: it writes for many activities, not the one that started it.
            self._writing = asyncio.create_task(self._write_groups(), context=contextvars.Context())
        return await future

    async def _write_groups(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting[:GROUP_LIMIT], self._waiting[GROUP_LIMIT:]
            try:
                outcomes = await asyncio.to_thread(self._store.append_many, [w for w, _ in group])
            except Exception as error:  # handed to each waiting activity, never lost
                outcomes = [error] * len(group)
            for (_, future), outcome in zip(group, outcomes, strict=True):
                if future.done():  # the activity was cancelled; its write stands regardless
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
