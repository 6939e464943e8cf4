"""CrisisWorkflow: the playbook interpreter. One run per incident; workflow id = incident id.

Deterministic: every side effect is a (local) activity called by name, time is `workflow.now()`,
and audit events (with their chain hashes) are produced here so a replay reproduces them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, CancelledError, FailureError

with workflow.unsafe.imports_passed_through():
    from workflows.audit import GENESIS_HASH, AuditBatch, AuditEvent, make_event
    from workflows.durations import parse_duration
    from workflows.incident import (
        APPLY_LEVER,
        WORKFLOW_NAME,
        WRITE_AUDIT,
        IncidentInput,
        IncidentState,
        IncidentStatus,
        LeverOutcome,
        LeverRequest,
        StandDownRequest,
        StepState,
        StepStatus,
    )
    from workflows.levers import LEVERS
    from workflows.playbook import Step, retry_timings
    from workflows.substitution import substitute

# Platform rejections (4xx) are final; anything else is retried per the step's policy.
NON_RETRYABLE = ["PlatformRejected"]
AUDIT_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10)
)
UNDO_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=20,
    non_retryable_error_types=NON_RETRYABLE,
)


@dataclass
class _StepRun:
    step: Step
    state: StepState = "pending"
    started_at: str | None = None
    finished_at: str | None = None
    undone_at: str | None = None
    error: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    previous: dict[str, Any] | None = None


class _AuditTrail:
    """Numbers, timestamps and chains events; hands them out in batches for writing."""

    def __init__(self, incident_id: str) -> None:
        self._incident_id = incident_id
        self._last_hash = GENESIS_HASH
        self._seq = 0
        self.pending: list[AuditEvent] = []

    def record(
        self,
        kind: str,
        *,
        actor: str | None = None,
        step_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        self._seq += 1
        event = make_event(
            incident_id=self._incident_id,
            seq=self._seq,
            kind=kind,
            at=_now(),
            prev_hash=self._last_hash,
            actor=actor,
            step_id=step_id,
            data=data,
        )
        self._last_hash = event.hash
        self.pending.append(event)

    def take(self) -> list[AuditEvent]:
        batch, self.pending = self.pending, []
        return batch


def _now() -> str:
    return workflow.now().isoformat()


@workflow.defn(name=WORKFLOW_NAME)
class CrisisWorkflow:
    @workflow.init
    def __init__(self, incident: IncidentInput) -> None:
        self._incident = incident
        self._state: IncidentState = "running"
        self._runs = [_StepRun(step) for step in incident.playbook.steps]
        self._stand_down: StandDownRequest | None = None
        self._audit = _AuditTrail(incident.incident_id)
        self._audit_done = False
        self._triggered_at = _now()
        self._closed_at: str | None = None
        self._context = {
            "inputs": dict(incident.inputs),
            "incident": {
                "id": incident.incident_id,
                "playbook": incident.playbook.playbook,
                "triggered_by": incident.triggered_by,
            },
        }

    @workflow.run
    async def run(self, incident: IncidentInput) -> IncidentStatus:
        self._audit.record(
            "incident.triggered",
            actor=incident.triggered_by,
            data={
                "playbook": incident.playbook.playbook,
                "version": incident.playbook.version,
                "playbook_hash": incident.playbook_hash,
                "inputs": incident.inputs,
            },
        )
        pump = asyncio.create_task(self._pump_audit())

        for run in self._runs:
            if self._stand_down is not None:
                break
            if not await self._apply(run):
                self._state = "failed"
                self._audit.record(
                    "incident.failed", step_id=run.step.id, data={"error": run.error}
                )
                break

        await workflow.wait_condition(lambda: self._stand_down is not None)
        self._state = "standing_down"
        for run in self._runs:
            if run.state == "pending":
                run.state = "skipped"
        for run in reversed(self._runs):
            if run.state == "applied":
                await self._undo(run)

        self._state = "closed"
        self._closed_at = _now()
        self._audit.record(
            "incident.closed", actor=self._stand_down.actor if self._stand_down else None
        )
        self._audit_done = True
        await pump
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._status()

    @workflow.update
    async def stand_down(self, request: StandDownRequest) -> IncidentStatus:
        """Undo every applied measure in reverse order, close the incident, answer its status."""
        self._stand_down = request
        self._audit.record(
            "stand_down.requested", actor=request.actor, data={"reason": request.reason}
        )
        await workflow.wait_condition(lambda: self._state == "closed")
        return self._status()

    @stand_down.validator
    def _check_stand_down(self, request: StandDownRequest) -> None:
        if self._stand_down is not None:
            raise ApplicationError(
                f"incident is already {self._state.replace('_', ' ')}", type="InvalidState"
            )

    @workflow.query
    def status(self) -> IncidentStatus:
        return self._status()

    async def _apply(self, run: _StepRun) -> bool:
        step = run.step
        run.state, run.started_at = "running", _now()
        run.args = substitute(step.with_, self._context)
        self._audit.record(
            "step.started", step_id=step.id, data={"lever": step.do, "args": run.args}
        )
        try:
            outcome = await self._call(step, step.do, run.args, operation="apply-1")
        except CancelledError:
            raise
        except (
            FailureError
        ) as error:  # local activities raise the failure itself, not ActivityError
            run.state, run.finished_at, run.error = "failed", _now(), _cause(error)
            self._audit.record(
                "step.failed", step_id=step.id, data={"lever": step.do, "error": run.error}
            )
            return False
        run.state, run.finished_at, run.previous = "applied", _now(), outcome.previous
        self._audit.record(
            "step.applied", step_id=step.id, data={"lever": step.do, "previous": outcome.previous}
        )
        return True

    async def _undo(self, run: _StepRun) -> None:
        step = run.step
        if step.undo is not None:
            lever, args, restore = step.undo.do, substitute(step.undo.with_, self._context), None
        elif LEVERS[step.do].reversible:
            lever, args, restore = step.do, run.args, run.previous or {}
        else:
            run.state = "kept"  # e.g. a notification: nothing to take back
            return
        run.state = "undoing"
        try:
            await self._call(
                step, lever, args, operation="undo-1", restore=restore, retry=UNDO_RETRY
            )
        except CancelledError:
            raise
        except FailureError as error:
            run.state, run.error = "undo_failed", _cause(error)
            self._audit.record(
                "step.undo_failed", step_id=step.id, data={"lever": lever, "error": run.error}
            )
            return
        run.state, run.undone_at = "undone", _now()
        self._audit.record(
            "step.undone", step_id=step.id, data={"lever": lever, "restored": restore}
        )

    async def _call(
        self,
        step: Step,
        lever: str,
        args: dict[str, Any],
        *,
        operation: str,
        restore: dict[str, Any] | None = None,
        retry: RetryPolicy | None = None,
    ) -> LeverOutcome:
        if retry is None:
            initial, maximum = retry_timings(step.retry)
            retry = RetryPolicy(
                initial_interval=initial,
                maximum_interval=maximum,
                backoff_coefficient=step.retry.backoff,
                maximum_attempts=step.retry.max_attempts,
                non_retryable_error_types=NON_RETRYABLE,
            )
        request = LeverRequest(
            incident_id=self._incident.incident_id,
            step_id=step.id,
            operation=operation,
            lever=lever,
            args=args,
            restore=restore,
        )
        return await workflow.execute_local_activity(
            APPLY_LEVER,
            request,
            result_type=LeverOutcome,
            start_to_close_timeout=parse_duration(step.timeout),
            retry_policy=retry,
        )

    async def _pump_audit(self) -> None:
        # Audit writes run beside the levers, never in front of them. A regular (not local)
        # activity: it is scheduled only when the workflow task commits, so the store receives
        # exactly the events in the history, never those of a task lost with a crashed worker.
        while True:
            await workflow.wait_condition(lambda: bool(self._audit.pending) or self._audit_done)
            if not self._audit.pending:
                return
            await workflow.execute_activity(
                WRITE_AUDIT,
                AuditBatch(events=self._audit.take()),
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=AUDIT_RETRY,
            )

    def _status(self) -> IncidentStatus:
        playbook = self._incident.playbook
        return IncidentStatus(
            incident_id=self._incident.incident_id,
            state=self._state,
            playbook=playbook.playbook,
            version=playbook.version,
            playbook_hash=self._incident.playbook_hash,
            inputs=self._incident.inputs,
            triggered_by=self._incident.triggered_by,
            triggered_at=self._triggered_at,
            stand_down=self._stand_down,
            closed_at=self._closed_at,
            steps=[
                StepStatus(
                    id=r.step.id,
                    lever=r.step.do,
                    state=r.state,
                    started_at=r.started_at,
                    finished_at=r.finished_at,
                    undone_at=r.undone_at,
                    error=r.error,
                )
                for r in self._runs
            ],
        )


def _cause(error: BaseException) -> str:
    # The useful message is the innermost cause (the platform's answer), not "activity failed".
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error)
