"""After a measure lapses or is withdrawn: which later incidents hold measures on the settings it
changed (read from the audit store), telling the one that may put its own back (an update), or,
when that is left to commanders, each whose measures were lifted (so its status says so), and
waiting for one standing down to close."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Literal

import structlog
from pydantic import BaseModel
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from store.audit_store import AuditStore
from store.overlaps import Measure, later_chain, settings_changed
from workflows.incident import (
    LIFTED_UPDATE,
    REASSERT_LATER,
    REASSERT_UPDATE,
    REFUSED_NOW,
    WAIT_CLOSED,
    LiftedNotice,
    ReassertLaterOutcome,
    ReassertLaterRequest,
)

log = structlog.get_logger(__name__)
# How often a wait for an incident to close asks the server (and heartbeats).
POLL_S = 2.0


class LaterIncidents:
    def __init__(self, store: AuditStore) -> None:
        self._store = store

    @activity.defn(name=REASSERT_LATER)
    async def reassert_later(self, request: ReassertLaterRequest) -> ReassertLaterOutcome:
        began = time.monotonic()
        outcome = await self._reassert_later(request)
        outcome.elapsed_s = time.monotonic() - began
        return outcome

    async def _reassert_later(self, request: ReassertLaterRequest) -> ReassertLaterOutcome:
        asked = request.reassert
        ours = Measure(
            asked.step_id,
            asked.lever,
            settings_changed(asked.lever, asked.args),
            request.applied_at,
        )
        overlaps = await asyncio.to_thread(later_chain, self._store, asked.incident_id, ours)
        if not overlaps:
            return ReassertLaterOutcome()
        by_incident: dict[str, set[str]] = defaultdict(set)
        lifted: dict[str, set[str]] = defaultdict(set)  # what our restore lifted: direct ones
        for overlap in overlaps:
            by_incident[overlap.incident_id].add(overlap.theirs.step_id)
            if overlap.ours == ours:
                lifted[overlap.incident_id].add(overlap.theirs.step_id)
        own = by_incident.pop(asked.incident_id, None)
        if own and request.in_force is not None:
            own &= set(request.in_force)  # the store may not hold this incident's latest undos
        lifted.pop(asked.incident_id, None)
        if not by_incident:
            return ReassertLaterOutcome()
        why = None
        if request.restacked or own:
            why = "this incident's own later measures on these settings were restacked over them"
        elif len(by_incident) > 1:
            why = "more than one later incident holds measures on these settings"
        if why:
            # Putting one back would disturb another: only lifting them all, newest first, and
            # putting them back oldest first would leave each right. Left to commanders; the
            # incidents whose measures the restore lifted are told, so their status says so.
            unresolved = {k: sorted(v) for k, v in by_incident.items()}
            told = {k: sorted(v) for k, v in sorted(lifted.items())}
            log.warning(
                "overlap.unresolved",
                incident_id=asked.incident_id,
                step_id=asked.step_id,
                workflow_run=activity.info().workflow_run_id,
                incidents=unresolved,
                lifted=told,
                reason=why,
            )
            for incident, steps in told.items():
                notice = LiftedNotice(
                    incident_id=asked.incident_id,
                    step_id=asked.step_id,
                    reason=asked.reason,
                    steps=steps,
                    why=why,
                )
                await _tell(incident, LIFTED_UPDATE, notice, f"{asked.operation}-lifted")
            return ReassertLaterOutcome(
                unresolved=unresolved, why_unresolved=why, lifted=told or None
            )
        (incident,) = by_incident
        steps = sorted(lifted[incident])
        answer = await _tell(
            incident, REASSERT_UPDATE, asked.model_copy(update={"steps": steps}), asked.operation
        )
        return ReassertLaterOutcome(
            told=incident, steps=steps, refused=answer == "refused", closed=answer == "closed"
        )

    @activity.defn(name=WAIT_CLOSED)
    async def wait_closed(self, incident_id: str) -> None:
        """Return once the incident's workflow has closed (heartbeating while it runs)."""
        handle = activity.client().get_workflow_handle(incident_id)
        while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            activity.heartbeat()
            await asyncio.sleep(POLL_S)


Told = Literal["told", "refused", "closed"]


async def _tell(incident_id: str, update: str, request: BaseModel, update_id: str) -> Told:
    """Send a later incident an update: "told"; "refused" if it stands down (or has closed
    since); "closed" if it closed as the update arrived (then it is aborted, not refused)."""
    handle = activity.client().get_workflow_handle(incident_id)
    try:
        # The id makes a retried activity's update the same one, not a second.
        await handle.execute_update(update, request, id=update_id)
    except WorkflowUpdateFailedError as error:
        cause = error.cause
        if not (isinstance(cause, ApplicationError) and cause.type == REFUSED_NOW):
            raise
        return "refused"
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        return "closed"
    return "told"
