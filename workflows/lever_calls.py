"""A lever pulled: one local activity per call, with the step's retry policy and timeout, the
audit events it carries (interpreter v5) and the time it took (the incident's clock, see
`IncidentRun._clock`). A notification goes to each of the stakeholder's channels, a delivery
activity each."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, CancelledError, FailureError

with workflow.unsafe.imports_passed_through():
    from workflows.audit import AuditBatch, CarriedOutcome
    from workflows.durations import parse_duration
    from workflows.incident import (
        APPLY_LEVER,
        DeliveryRecord,
        LeverOutcome,
        LeverRequest,
        message_context,
    )
    from workflows.levers import is_notification
    from workflows.notifications import DELIVER_NOTIFICATION, DeliveryReceipt, DeliveryRequest
    from workflows.playbook import Step, retry_timings

from workflows.incident_run import (
    LEVER_TIME,
    NON_RETRYABLE,
    NOTICE_REFUSED_PATCH,
    IncidentRun,
    cause_of,
    failure_facts,
    iso,
    refused,
)


class LeverCalls(IncidentRun):
    """Every call of a lever, for a step's apply and undo and for another incident's restore."""

    async def _call(
        self,
        step: Step,
        lever: str,
        args: dict[str, Any],
        operation: str,
        *,
        restore: dict[str, Any] | None = None,
        retry: RetryPolicy | None = None,
        carry: CarriedOutcome | None = None,
        close_actor: str | None = None,
    ) -> LeverOutcome:
        if retry is None:
            retry = self._retry_policies.get(step.id)
            if retry is None:
                initial, maximum = retry_timings(step.retry)
                retry = self._retry_policies[step.id] = RetryPolicy(
                    initial_interval=initial,
                    maximum_interval=maximum,
                    backoff_coefficient=step.retry.backoff,
                    maximum_attempts=step.retry.max_attempts,
                    non_retryable_error_types=NON_RETRYABLE,
                )
        if lever == "notify.send" and self._incident.channels is not None:
            return await self._deliver(step, args, operation, retry)
        request = LeverRequest(
            incident_id=self._incident.incident_id,
            step_id=step.id,
            operation=operation,
            lever=lever,
            args=args,
            restore=restore,
        )
        if lever == "notify.send":
            # Incidents triggered before the directory had channels notify via the platform.
            request.message = self._incident.templates.get(str(args.get("template")))
            request.context = self._message_context(step)
        began = self._clock()
        request.began = iso(began)
        if carry is not None:
            request.audit = self._audit.carry(
                **self._task(),
                began=request.began,
                outcome=carry,
                close_actor=close_actor,
            )
        elif self._carries_audit() and (lent := self._audit.lend()):
            request.lent = AuditBatch(events=lent, **self._task())
        self._inflight += 1
        outcome: LeverOutcome | None = None
        try:
            outcome = await workflow.execute_local_activity(
                APPLY_LEVER,
                request,
                result_type=LeverOutcome,
                start_to_close_timeout=parse_duration(step.timeout),
                retry_policy=retry,
            )
        except FailureError as error:
            # Stamped when it failed (its retries took time), from what the failure recorded.
            if (tried := failure_facts(error).get("tried_s")) is not None:
                LEVER_TIME.set(began + timedelta(seconds=float(tried)))
                self._unheard_s += float(tried)
            raise
        finally:
            self._inflight -= 1
            if request.audit is not None:
                self._audit.settle(
                    written=outcome is not None and outcome.audit is not None,
                    elapsed_s=outcome.elapsed_s if outcome else None,
                    previous=outcome.previous if outcome else None,
                )
        if outcome.elapsed_s is not None:
            LEVER_TIME.set(began + timedelta(seconds=outcome.elapsed_s))
            self._unheard_s += outcome.elapsed_s
        return outcome

    async def _deliver(
        self, step: Step, args: dict[str, Any], operation: str, retry: RetryPolicy
    ) -> LeverOutcome:
        """Tell a stakeholder on every one of its channels, each delivery an activity of its own;
        raise only if no channel got through (the failed ones are recorded either way)."""
        record = self._records[step.id]
        to, template_name = str(args["to"]), str(args["template"])
        channels = (self._incident.channels or {}).get(to)
        template = self._incident.templates.get(template_name)
        if not channels or template is None:
            missing = f"stakeholder {to!r}" if not channels else f"template {template_name!r}"
            raise ApplicationError(f"{missing} was not in the directory at trigger")
        context = self._message_context(step)
        requests = [
            DeliveryRequest(
                incident_id=self._incident.incident_id,
                step_id=step.id,
                stakeholder=to,
                channel=channel,
                template_name=template_name,
                template=template,
                context=context,
                data=dict(args.get("data") or {}),
                severity=args.get("severity", "warning"),
                idempotency_key=f"{self._incident.incident_id}/{step.id}/{operation}/{index}",
                operation=f"{operation}/{index}",
            )
            for index, channel in enumerate(channels)
        ]

        async def deliver(request: DeliveryRequest) -> tuple[DeliveryReceipt | BaseException, str]:
            try:
                outcome: DeliveryReceipt | BaseException = await workflow.execute_activity(
                    DELIVER_NOTIFICATION,
                    request,
                    result_type=DeliveryReceipt,
                    start_to_close_timeout=parse_duration(step.timeout),
                    retry_policy=retry,
                )
            except Exception as error:  # recorded below, as gather(return_exceptions) would
                outcome = error
            return outcome, iso(workflow.now())  # its result came with the history: its time

        self._delivering += 1
        try:
            done = await asyncio.gather(*(deliver(request) for request in requests))
        finally:
            self._delivering -= 1
        LEVER_TIME.set(None)  # activity results arrive with the history: workflow time is right
        if self._version() >= 6:  # each when it was delivered, not when the last one was
            when = [at for _, at in done]
        else:
            when = [iso(self._clock())] * len(requests)
        failures = []
        for request, (outcome, _), at in sorted(
            zip(requests, done, when, strict=True), key=lambda each: each[2]
        ):
            if isinstance(outcome, CancelledError):
                raise outcome
            delivery = DeliveryRecord(
                operation=operation,
                stakeholder=to,
                channel=request.channel.type,
                target=request.channel.describe(),
                at=at,
            )
            if isinstance(outcome, BaseException):
                delivery.state, delivery.error = "failed", cause_of(outcome)
                failures.append(f"{delivery.target}: {delivery.error}")
            else:
                delivery.state, delivery.message_id = "delivered", outcome.message_id
            record.deliveries.append(delivery)
            self._record(
                f"notification.{delivery.state}",
                step_id=step.id,
                data=delivery.model_dump(exclude={"at", "state"}, exclude_none=True),
                at=at,
            )
        if len(failures) == len(requests):
            message = f"no channel reached {to}: " + "; ".join(failures)
            every_refused = all(isinstance(o, BaseException) and refused(o) for o, _ in done)
            if every_refused and workflow.patched(NOTICE_REFUSED_PATCH):
                raise ApplicationError(message, non_retryable=True)
            raise ApplicationError(message)
        return LeverOutcome()

    def _message_context(self, step: Step) -> dict[str, Any]:
        """What a message template may refer to: the incident as it stands when it is sent."""
        return message_context(
            incident={
                "id": self._incident.incident_id,
                "level": self._level,
                "state": self._state,
                "triggered_by": self._incident.triggered_by,
                "triggered_at": self._triggered_at,
                # Escalation notices read "escalated" only above the level it was declared at.
                "triggered_level": self._declared_level,
            },
            playbook=self._pb,
            inputs=self._incident.inputs,
            step=step,
            measures=[
                {"id": r.id, "lever": r.lever, "expires_at": r.expires_at}
                for r in self._records.values()
                if r.state == "applied" and r.lever and not is_notification(r.lever)
            ],
            stand_down=self._stand_down,
        )
