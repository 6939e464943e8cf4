"""The audit writer: the one activity that appends the workflow's audit events to the store and
seals the new chain head with the engine's key."""

from __future__ import annotations

import asyncio

import structlog
from temporalio import activity

from store.audit_store import AuditStore
from store.errors import AuditConflict
from store.seals import Signer
from workflows.audit import AuditBatch, AuditWritten
from workflows.incident import WRITE_AUDIT

log = structlog.get_logger(__name__)
SEAL_EVERY = 16


class AuditWriter:
    def __init__(self, store: AuditStore, signer: Signer) -> None:
        self._store = store
        self._signer = signer

    @activity.defn(name=WRITE_AUDIT)
    async def write_audit(self, batch: AuditBatch) -> AuditWritten:
        first, head = batch.events[0], batch.events[-1]
        # Seal the head when the incident closes, and at checkpoints while it runs (whenever a
        # batch crosses a multiple of SEAL_EVERY events): signing every batch costs throughput.
        # The seal is written in the same transaction as the rows it covers.
        closed = any(event.kind == "incident.closed" for event in batch.events)
        seal = None
        if closed or head.seq // SEAL_EVERY > (first.seq - 1) // SEAL_EVERY:
            seal = self._signer.seal(head, reason="closed" if closed else "checkpoint")
        try:
            result = await asyncio.to_thread(
                self._store.append, batch.events, task=batch.task, seal=seal
            )
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
