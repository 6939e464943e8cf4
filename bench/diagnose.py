"""Diagnostic variants of the interpreter, for `run_bench.py --diagnose` only (never shipped).

Each is `CrisisWorkflow` with one thing changed, so the bench can show what the interpreter's extra
cost is made of. They change only how audit events leave the workflow (`_pump_audit`); applying
and undoing levers is the shipped code.

- `CrisisWorkflowAuditDropped`: events are computed (hashes and all) but never written: no
  `write_audit` activity at all. The gap between it and the baseline is the interpreter's own
  work; the gap between it and the shipped interpreter is the audit activities.
- `CrisisWorkflowAuditAtClose`: one `write_audit` per incident, with every event, at close
  (the shipped workflow writes a batch as soon as events are pending, one at a time).

Neither lets a lever call carry the trail (the shipped interpreter's last lever call of a phase
writes the events so far with its own outcome's): everything leaves through `_pump_audit`.

Imports: `workflows.crisis` comes through the shipped runner's pass-through of the `workflows`
package (engine.temporal.SANDBOX), exactly as for the shipped workflow, and the bench passes this
file through as well, so a diagnostic run pays no import the shipped one does not.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from workflows.crisis import AUDIT_RETRY, CrisisWorkflow

with workflow.unsafe.imports_passed_through():
    from workflows.audit import AuditBatch
    from workflows.incident import WRITE_AUDIT, IncidentInput, IncidentOutcome


@workflow.defn(name="CrisisWorkflowAuditDropped")
class CrisisWorkflowAuditDropped(CrisisWorkflow):
    @workflow.run
    async def run(self, incident: IncidentInput) -> IncidentOutcome:
        return await super().run(incident)

    def _carries_audit(self) -> bool:
        return False

    async def _pump_audit(self) -> None:
        while True:
            await workflow.wait_condition(lambda: bool(self._audit.pending) or self._audit_done)
            self._audit.take()
            if self._audit_done:
                return


@workflow.defn(name="CrisisWorkflowAuditAtClose")
class CrisisWorkflowAuditAtClose(CrisisWorkflow):
    @workflow.run
    async def run(self, incident: IncidentInput) -> IncidentOutcome:
        return await super().run(incident)

    def _carries_audit(self) -> bool:
        return False

    async def _pump_audit(self) -> None:
        await workflow.wait_condition(lambda: self._audit_done)
        await workflow.execute_activity(
            WRITE_AUDIT,
            AuditBatch(events=self._audit.take()),
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=AUDIT_RETRY,
        )


DIAGNOSTIC_MODULE = __name__
DIAGNOSTIC_WORKFLOWS = {
    "audit_dropped": CrisisWorkflowAuditDropped,
    "audit_at_close": CrisisWorkflowAuditAtClose,
}
