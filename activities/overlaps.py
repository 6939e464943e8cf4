"""After a measure lapses or is withdrawn: which later incidents hold measures on the settings it
changed (read from the audit store), and telling the one that may put its own back (an update)."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from store.audit_store import AuditStore
from store.overlaps import Measure, later_chain, settings_changed
from workflows.incident import (
    REASSERT_LATER,
    REASSERT_UPDATE,
    ReassertAnswer,
    ReassertLaterOutcome,
    ReassertLaterRequest,
)


class LaterIncidents:
    def __init__(self, store: AuditStore) -> None:
        self._store = store

    @activity.defn(name=REASSERT_LATER)
    async def reassert_later(self, request: ReassertLaterRequest) -> ReassertLaterOutcome:
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
        by_incident: dict[str, list[str]] = defaultdict(list)
        for overlap in overlaps:
            by_incident[overlap.incident_id].append(overlap.theirs.step_id)
        if len(by_incident) > 1:
            # Putting one back would disturb another: only lifting them all, newest first, and
            # putting them back oldest first would leave each right. Left to commanders.
            return ReassertLaterOutcome(unresolved={k: sorted(v) for k, v in by_incident.items()})
        incident = overlaps[0].incident_id
        steps = sorted({o.theirs.step_id for o in overlaps if o.ours == ours})
        handle = activity.client().get_workflow_handle(incident)
        try:
            answer = await handle.execute_update(
                REASSERT_UPDATE,
                asked.model_copy(update={"steps": steps}),
                result_type=ReassertAnswer,
            )
        except WorkflowUpdateFailedError:
            # Refused: it is standing down. Its restores put back this measure's state, so the
            # earlier incident applies its restore again once that one has closed.
            await handle.result()
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
            # It closed meanwhile (an update sent as it closes is aborted, not failed).
        else:
            return ReassertLaterOutcome(told=incident, steps=steps, answer=answer)
        return ReassertLaterOutcome(told=incident, steps=steps, closed=True)
