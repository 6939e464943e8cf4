"""The audit writer: the one activity that appends the workflow's audit events to the store."""

from __future__ import annotations

import asyncio

import structlog
from temporalio import activity

from store.audit_store import AuditConflict, AuditStore
from workflows.audit import AuditBatch
from workflows.incident import WRITE_AUDIT

log = structlog.get_logger(__name__)


class AuditWriter:
    def __init__(self, store: AuditStore) -> None:
        self._store = store

    @activity.defn(name=WRITE_AUDIT)
    async def write_audit(self, batch: AuditBatch) -> int:
        if not batch.events:
            return 0
        first = batch.events[0]
        try:
            inserted = await asyncio.to_thread(self._store.append, batch.events)
        except AuditConflict as error:
            # The record disagrees with the workflow: never overwrite it. Keep failing loudly
            # (the workflow retries) until a person looks; the levers carry on meanwhile.
            log.error("audit.conflict", incident_id=first.incident_id, error=str(error))
            raise
        log.debug(
            "audit.written",
            incident_id=first.incident_id,
            workflow_run=activity.info().workflow_run_id,
            inserted=inserted,
            last_seq=batch.events[-1].seq,
        )
        return inserted
