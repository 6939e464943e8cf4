"""CrisisWorkflow: the playbook interpreter. One run per incident; workflow id = incident id.

Deterministic: every side effect is an activity called by name, time is `workflow.now()`, and
audit events (with their chain hashes) are produced here so a replay reproduces them. Three
coroutines share the incident's state: the *sequence* walks the playbook's steps in order, the
*supervisor* lapses expired measures and watches reviews, and the *audit pump* writes events.
Commander actions arrive as Updates; each validator refuses a bad request before it is recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, CancelledError, FailureError

with workflow.unsafe.imports_passed_through():
    from workflows.audit import (
        AuditBatch,
        AuditTrail,
        CarriedOutcome,
        applied_data,
        present,
        undone_data,
    )
    from workflows.durations import parse_duration, parse_renewal
    from workflows.expressions import ExpressionError, evaluate
    from workflows.expressions import parse as parse_expression
    from workflows.incident import (
        APPLY_LEVER,
        REASSERT_LATER,
        REASSERT_UPDATE,
        SEARCH_LEVEL,
        SEARCH_STATE,
        WAIT_CLOSED,
        WORKFLOW_NAME,
        WRITE_AUDIT,
        Approver,
        ApproveRequest,
        CarriedState,
        DeliveryRecord,
        IncidentInput,
        IncidentOutcome,
        IncidentState,
        IncidentStatus,
        LevelChangeRecord,
        LevelRequest,
        LeverOutcome,
        LeverRequest,
        Note,
        NoteRequest,
        ReassertLaterOutcome,
        ReassertLaterRequest,
        ReassertRequest,
        RejectRequest,
        RenewRequest,
        ReviewRequest,
        StandDownRequest,
        StepRecord,
        message_context,
    )
    from workflows.levers import LEVERS, is_notification, shared_settings
    from workflows.limits import MAX_NAME_CHARS, MAX_NOTE_CHARS, MAX_TEXT_CHARS
    from workflows.notifications import DELIVER_NOTIFICATION, DeliveryReceipt, DeliveryRequest
    from workflows.playbook import ParallelStep, Step, WaitStep, retry_timings
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
# Looking up and telling later incidents: the store or the server may be briefly away; after
# a few tries the incident records `overlap.check_failed` rather than hold its supervisor.
OVERLAP_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=5,
)
# Rounds of "restore again, look again" after a later incident standing down has closed.
REASSERT_ROUNDS = 3
SYSTEM = "system"
# A run records one marker naming the interpreter version it follows: each patch marker also
# costs a search-attribute update on the server, so changes share one per version. Histories
# recorded before v3 replay through the per-change patches they hold (see `_version`).
INTERPRETER_V3 = "interpreter-v3"
# v4: the supervisor keeps one timer while the next deadline stays where it was.
INTERPRETER_V4 = "interpreter-v4"
# v5: the last lever call of a phase writes the phase's audit events itself (AuditCarry).
INTERPRETER_V5 = "interpreter-v5"
# A measure that lapses or is withdrawn tells a later incident holding measures on the same
# settings to put its own back. Its own patch, recorded at a lapse or withdrawal only: the
# trigger-to-stand-down path of an incident never records it.
REASSERT_PATCH = "hand-back-to-later-incidents"

AnyStep = Step | WaitStep | ParallelStep
_KINDS: dict[type, str] = {Step: "lever", WaitStep: "wait", ParallelStep: "parallel"}

# Per coroutine (asyncio tasks copy contexts): when the lever call this coroutine last awaited
# finished, on the incident's clock; cleared when it next waits on the history.
_LEVER_TIME: ContextVar[datetime | None] = ContextVar("lever_time", default=None)


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _invalid(message: str) -> ApplicationError:
    # Raised by validators: the update is refused and never enters the history.
    return ApplicationError(message, type="InvalidRequest", non_retryable=True)


def _check_lengths(actor: str, *texts: tuple[str, str | None, int]) -> None:
    """Refuse text too long to keep in the history, the audit trail and every status answer
    (the API refuses it first; this is for callers that reach the workflow directly)."""
    for what, text, limit in (("actor", actor, MAX_NAME_CHARS), *texts):
        if text is not None and len(text) > limit:
            raise _invalid(f"{what} is too long: {len(text)} characters (at most {limit})")


@workflow.defn(name=WORKFLOW_NAME)
class CrisisWorkflow:
    @workflow.init
    def __init__(self, incident: IncidentInput) -> None:
        self._incident = incident
        self._pb = incident.playbook
        self._steps_by_id: dict[str, AnyStep] = {}
        self._top: list[AnyStep] = list(self._pb.steps)
        for step in [*self._pb.steps, *self._pb.on_stand_down]:
            self._steps_by_id[step.id] = step
            if isinstance(step, ParallelStep):
                for branch in step.parallel:
                    self._steps_by_id[branch.id] = branch
        self._context = {
            "inputs": dict(incident.inputs),
            "incident": {
                "id": incident.incident_id,
                "playbook": self._pb.playbook,
                "triggered_by": incident.triggered_by,
            },
        }
        carried = incident.carried
        if carried is None:
            self._state: IncidentState = "running"
            self._level = incident.level or (self._pb.levels[0] if self._pb.levels else None)
            parents = {
                branch.id: step.id
                for step in self._pb.steps
                if isinstance(step, ParallelStep)
                for branch in step.parallel
            }
            self._records = {
                sid: self._new_record(step, parents.get(sid))
                for sid, step in self._steps_by_id.items()
            }
            self._applied_order: list[str] = []
            self._cursor = 0
            self._triggered_at = _iso(self._clock())
            self._review_due = (
                _iso(self._clock() + parse_duration(self._pb.reviews.every))
                if self._pb.reviews
                else None
            )
            self._reviews_missed = 0
            self._notes: list[Note] = []
            self._level_history: list[LevelChangeRecord] = []
            self._stand_down: StandDownRequest | None = None
            self._runs = 1
            self._audit = AuditTrail(incident.incident_id)
        else:
            self._state = carried.state
            self._level = carried.level
            self._records = {record.id: record for record in carried.steps}
            self._applied_order = list(carried.applied_order)
            self._cursor = carried.cursor
            self._triggered_at = carried.triggered_at
            self._review_due = carried.review_due
            self._reviews_missed = carried.reviews_missed
            self._notes = list(carried.notes)
            self._level_history = list(carried.level_history)
            self._stand_down = carried.stand_down
            self._runs = carried.runs + 1
            self._audit = AuditTrail(
                incident.incident_id, seq=carried.audit_seq, last_hash=carried.audit_last_hash
            )
        self._closed_at: str | None = None
        self._inflight = 0  # lever calls under way
        self._busy = 0  # background work (catch-up after escalation, withdrawal, re-apply)
        self._wake = False  # something changed that the supervisor must look at
        self._draining = False  # preparing to continue-as-new: start nothing new
        self._audit_done = False
        self._audit_flushed = False
        self._pump_busy = False
        self._conditions: dict[str, Any] = {}
        self._retry_policies: dict[str, RetryPolicy] = {}  # by step id: built once, not per call
        # Overlapping incidents (`reassert`): one earlier incident's restore at a time; an
        # earlier restore to apply again once ours of that step is taken back; our measures
        # lifted to be put back (nothing else takes them back meanwhile).
        self._reassert_lock: asyncio.Lock | None = (
            None  # made by the first request: most never get one
        )
        self._restore_after: dict[str, ReassertRequest] = {}
        self._putting_back: set[str] = set()
        self._overlap_work = 0  # requests to or from other incidents not yet done
        # The lever time of the overlap work that last let another task go on (see _clock).
        self._handoff_time: datetime | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._version_seen: int | None = None
        self._info = workflow.info()  # its history length and suggestion are read live

    def _clock(self) -> datetime:
        """The time events are stamped with. Code woken by the history (start, timer, update)
        uses workflow time; code that runs because a lever call finished uses the time the call
        began plus how long it took (recorded in its marker). A replay may process a lever result
        at another activation boundary than the original run did (a status query can split a
        workflow task while lever calls run), where workflow time differs; this does not."""
        return _LEVER_TIME.get() or workflow.now()

    async def _wait(self, condition: Callable[[], bool], timeout: float | None = None) -> None:
        try:
            await workflow.wait_condition(condition, timeout=timeout)
        finally:
            _LEVER_TIME.set(None)  # woken by the history, not by a lever call

    # --- the run ------------------------------------------------------------------------------
    @workflow.run
    async def run(self, incident: IncidentInput) -> IncidentOutcome:
        # Events also carry when the next review is due, so the incident board can show it from
        # the audit trail alone; histories recorded before then replay without it. (The version
        # marker is recorded here, at the start of every run.)
        self._board_facts = self._since_v3("board-facts")
        if incident.carried is None:
            self._record(
                "incident.triggered",
                actor=incident.triggered_by,
                data=present(
                    playbook=self._pb.playbook,
                    version=self._pb.version,
                    playbook_hash=incident.playbook_hash,
                    inputs=incident.inputs,
                    level=self._level,
                    review_due=self._review_due if self._board_facts else None,
                ),
            )
        else:
            self._record("incident.continued", data={"run": self._runs})
        # Creation order is command order: the first lever is scheduled before the first audit
        # write (histories recorded by earlier versions depend on it).
        sequence = asyncio.create_task(self._run_sequence())
        pump = asyncio.create_task(self._pump_audit())
        supervisor = asyncio.create_task(self._supervise())
        if incident.carried is not None and self._pb.levels:
            # A continued run picks up what an escalation had started off the main sequence.
            self._background(self._catch_up())

        while self._stand_down is None:
            await self._wait(lambda: self._stand_down is not None or self._should_continue_as_new())
            if self._stand_down is None:
                await self._continue_as_new()  # returns only if a stand-down came first

        self._state = "standing_down"
        self._publish()
        await sequence
        if self._inflight or self._busy:  # waiting only when needed keeps command order stable
            await self._wait(lambda: self._inflight == 0 and self._busy == 0)
        closing = {step.id for step in self._pb.on_stand_down}
        for record in self._records.values():
            if record.id in closing:
                continue
            if record.state in ("pending", "dormant", "awaiting_approval", "waiting"):
                record.state = "skipped"
                record.outcome = record.outcome or "not run: incident stood down"
        undoing = list(reversed(self._applied_order))
        for number, step_id in enumerate(undoing, start=1):
            closes = number == len(undoing) and not self._pb.on_stand_down
            await self._undo(self._records[step_id], final_state="undone", closes=closes)
        for step in self._pb.on_stand_down:
            if self._eligible(step):
                await self._apply_step(step)
            else:
                self._records[step.id].state = "skipped"

        self._state = "closed"
        self._publish()
        self._closed_at = _iso(self._clock())
        self._record("incident.closed", actor=self._stand_down.actor if self._stand_down else None)
        self._wake = True
        await supervisor
        self._audit_done = True
        await pump
        self._audit_flushed = True
        await self._wait(workflow.all_handlers_finished)
        return self._outcome()

    # --- the sequence -------------------------------------------------------------------------
    async def _run_sequence(self) -> None:
        while self._cursor < len(self._top):
            if self._draining:  # only then: a wait_condition yields, and order matters
                await self._wait(lambda: not self._draining or self._stand_down is not None)
            if self._stand_down is not None:
                return
            keep_going = await self._run_top_step(self._top[self._cursor])
            if not keep_going:
                if self._state == "running":
                    self._state = "failed"
                    self._publish()
                    failed = self._records[self._top[self._cursor].id]
                    self._record("incident.failed", step_id=failed.id, data={"error": failed.error})
                return
            self._cursor += 1

    async def _run_top_step(self, step: AnyStep) -> bool:
        """Run one step of the sequence; False = the playbook must stop (a failure)."""
        kind = self._records[step.id].kind
        if kind == "wait":
            return await self._wait_step(step)  # type: ignore[arg-type]
        if kind == "parallel":
            return await self._parallel_step(step)  # type: ignore[arg-type]
        return await self._lever_step(step)  # type: ignore[arg-type]

    async def _wait_step(self, step: WaitStep) -> bool:
        record = self._records[step.id]
        if record.state not in ("pending", "waiting"):
            return True
        if not self._eligible(step):
            self._make_dormant(record)
            return True
        if record.wait_until is None:
            record.state, record.started_at = "waiting", _iso(self._clock())
            record.wait_until = _iso(self._clock() + parse_duration(step.wait))
            self._record("wait.started", step_id=step.id, data={"until": record.wait_until})
        await self._sleep_until(_parse_iso(record.wait_until), lambda: self._stand_down is not None)
        if self._stand_down is None:
            record.state, record.finished_at = "done", _iso(self._clock())
            self._record("wait.finished", step_id=step.id)
        return True

    async def _parallel_step(self, step: ParallelStep) -> bool:
        record = self._records[step.id]
        if record.state not in ("pending", "dormant", "running"):
            return True
        if not self._eligible(step):
            self._make_dormant(record)
            return True
        record.state, record.started_at = "running", record.started_at or _iso(self._clock())
        results = await asyncio.gather(*(self._lever_step(branch) for branch in step.parallel))
        record.finished_at = _iso(self._clock())
        record.state = "done" if all(results) else "failed"
        return all(results)

    async def _lever_step(self, step: Step) -> bool:
        record = self._records[step.id]
        if record.state not in ("pending", "dormant", "awaiting_approval"):
            return True
        if not self._eligible(step):
            self._make_dormant(record)
            return True
        if step.approval is not None and not await self._approved(step, record):
            return record.state != "failed"
        if record.state not in ("pending", "dormant", "awaiting_approval"):
            return True
        return await self._apply_step(step)

    async def _approved(self, step: Step, record: StepRecord) -> bool:
        """Wait for the quorum; True = go ahead. On False the record says why not."""
        approval = step.approval
        assert approval is not None
        if record.state != "awaiting_approval":
            record.state, record.approvals = "awaiting_approval", []
            record.approval_deadline = _iso(self._clock() + parse_duration(approval.timeout))
            self._record(
                "approval.requested",
                step_id=step.id,
                data={
                    "roles": approval.roles,
                    "quorum": approval.quorum,
                    "deadline": record.approval_deadline,
                },
            )
        while True:
            assert record.approval_deadline is not None

            def settled() -> bool:
                return (
                    len(record.approvals) >= approval.quorum
                    or record.state != "awaiting_approval"
                    or self._stand_down is not None
                    or not self._eligible(step)
                )

            timed_out = not await self._sleep_until(_parse_iso(record.approval_deadline), settled)
            if self._stand_down is not None or record.state != "awaiting_approval":
                return False  # stood down, or rejected (the handler set the record)
            if not self._eligible(step):
                self._make_dormant(record)
                return False
            if len(record.approvals) >= approval.quorum:
                self._record(
                    "approval.granted",
                    step_id=step.id,
                    data={"approvers": [a.actor for a in record.approvals]},
                )
                return True
            if not timed_out:
                continue
            self._record(
                "approval.timed_out", step_id=step.id, data={"on_timeout": approval.on_timeout}
            )
            if approval.on_timeout == "proceed":
                return True
            if approval.on_timeout == "skip":
                record.state, record.outcome = "skipped", "approval timed out"
                return False
            if approval.on_timeout == "fail":
                record.state, record.error = "failed", "approval timed out"
                return False
            # escalate: raise the level one step and keep waiting for a new period
            self._escalate_by_system(f"approval of {step.id} timed out")
            record.approval_deadline = _iso(self._clock() + parse_duration(approval.timeout))

    async def _apply_step(
        self, step: Step, *, hold_until: str | None = None, put_back: str | None = None
    ) -> bool:
        """Pull the step's lever; True = carry on (applied, or failed with on_failure continue).
        `hold_until`: a measure put back keeps the expiry it had. `put_back`: the incident whose
        restore lifted it (it keeps the time it came into force)."""
        record = self._records[step.id]
        now = _iso(self._clock())
        record.state, record.started_at, record.error = "running", now, None
        record.args = substitute(step.with_, self._context)
        record.applications += 1
        self._record(
            "step.started", step_id=step.id, data={"lever": step.do, "args": record.args}, at=now
        )
        # The sequence's last lever call, alone, writes the trail so far with its own outcome.
        last = (
            hold_until is None
            and step is self._top[-1]
            and self._cursor == len(self._top) - 1
            and self._state == "running"
            and self._stand_down is None
            and not self._inflight
            and not self._busy
            and not self._draining
        )
        carry = (
            CarriedOutcome(
                kind="step.applied",
                step_id=step.id,
                lever=step.do,
                expires_after=step.expires_after,
            )
            if last and self._carries_audit()
            else None
        )
        try:
            outcome = await self._call(
                step, step.do, record.args, f"apply-{record.applications}", carry=carry
            )
        except CancelledError:
            raise
        except FailureError as error:  # local activities raise the failure itself
            record.state, record.finished_at, record.error = (
                "failed",
                _iso(self._clock()),
                _cause(error),
            )
            self._record(
                "step.failed", step_id=step.id, data={"lever": step.do, "error": record.error}
            )
            if step.on_failure == "undo":
                for step_id in reversed(list(self._applied_order)):
                    await self._undo(self._records[step_id], final_state="undone")
            return step.on_failure == "continue"
        moment = self._clock()
        now = _iso(moment)
        record.state, record.finished_at, record.previous = "applied", now, outcome.previous
        if put_back is None:
            record.in_force_since = now
        self._applied_order.append(step.id)
        if hold_until is not None:
            record.expires_at = hold_until
            self._wake = True
        elif step.expires_after is not None:
            record.expires_at = _iso(moment + parse_duration(step.expires_after))
            self._wake = True
        self._record(
            "step.applied",
            step_id=step.id,
            data=applied_data(step.do, outcome.previous, record.expires_at, put_back),
            at=now,
        )
        return True

    async def _undo(
        self, record: StepRecord, *, final_state: str, reason: str = "", closes: bool = False
    ) -> None:
        """Take a measure back. `closes`: the incident closes once it is (the call then writes
        the stand-down's trail, the close included, if nothing else is under way)."""
        if record.id in self._putting_back:  # put back for an earlier incident: let it land
            await self._wait(lambda: record.id not in self._putting_back)
            _LEVER_TIME.set(self._handoff_time)  # woken by that lever call, not the history
            if final_state == "expired" and self._state == "standing_down":
                return  # the stand-down takes it back
        if record.state != "applied":
            return
        step = self._steps_by_id[record.id]
        assert isinstance(step, Step)
        applied_at = record.in_force_since or record.finished_at
        later = self._applied_order[self._applied_order.index(record.id) + 1 :]
        self._applied_order.remove(record.id)
        if step.undo is not None:
            lever, args, restore = step.undo.do, substitute(step.undo.with_, self._context), None
        elif LEVERS[step.do].reversible:
            lever, args, restore = step.do, record.args, record.previous or {}
        else:
            record.state, record.expires_at = "kept", None  # a notification cannot be unsent
            return
        # A newer measure on the same settings was applied over this one: restoring this one's
        # previous state would wipe it. Lift the newer ones first, restore, then put them back.
        stacked = self._stacked_on(record, later) if later and restore is not None else []
        if stacked and self._since_v3("restack-overlapping-measures"):
            held = [(other, other.expires_at) for other in stacked]
            for other, _ in reversed(held):
                await self._undo(
                    other, final_state="undone", reason=f"lifted while {record.id} is taken back"
                )
        else:
            held = []
        record.state, record.expires_at = "undoing", None
        record.undos += 1
        kind = {"expired": "step.expired", "dormant": "step.withdrawn"}.get(
            final_state, "step.undone"
        )
        carry = (
            CarriedOutcome(kind=kind, step_id=step.id, lever=lever, restored=restore, reason=reason)
            if closes and not held and not self._inflight and self._carries_audit()
            else None
        )
        try:
            await self._call(
                step,
                lever,
                args,
                f"undo-{record.undos}",
                restore=restore,
                retry=UNDO_RETRY,
                carry=carry,
                close_actor=self._stand_down.actor if closes and self._stand_down else None,
            )
        except CancelledError:
            raise
        except FailureError as error:
            record.state, record.error = "undo_failed", _cause(error)
            self._record(
                "step.undo_failed", step_id=step.id, data={"lever": lever, "error": record.error}
            )
            if (earlier := self._restore_after.pop(record.id, None)) is not None:
                self._record(
                    "overlap.restore_failed",
                    step_id=step.id,
                    data={
                        "incident": earlier.incident_id,
                        "step": earlier.step_id,
                        "error": "this measure's own undo failed",
                    },
                )
            await self._restack(held)
            return
        now = _iso(self._clock())
        record.state, record.undone_at = final_state, now  # type: ignore[assignment]
        self._record(kind, step_id=step.id, data=undone_data(lever, restore, reason), at=now)
        if (earlier := self._restore_after.pop(record.id, None)) is not None:
            await self._restore_for(step, earlier)  # before ours stacked on it go back
        await self._restack(held)
        if (
            restore is not None
            and applied_at is not None
            and final_state in ("expired", "dormant")
            and workflow.patched(REASSERT_PATCH)
        ):
            self._background(
                self._reassert_later(record, applied_at, reason, restore, restacked=bool(held))
            )

    def _stacked_on(self, record: StepRecord, later: list[str]) -> list[StepRecord]:
        """Of the measures applied after `record`, those of its lever changing its settings."""
        assert record.lever is not None
        args = LEVERS[record.lever].args
        mine = args.model_validate(record.args).targets()
        found = []
        for step_id in later:
            other, step = self._records[step_id], self._steps_by_id[step_id]
            if not isinstance(step, Step) or step.undo is not None or other.lever != record.lever:
                continue
            if shared_settings(mine, args.model_validate(other.args).targets()):
                found.append(other)
        return found

    async def _reassert_later(
        self,
        record: StepRecord,
        applied_at: str,
        reason: str,
        restore: dict[str, Any],
        *,
        restacked: bool,
    ) -> None:
        """A measure this incident applied first has lapsed or been withdrawn: its restore also
        lifted what a later incident put in force on the same settings. That incident is told,
        and puts its own back over this restore (`reassert`). One standing down or closed has
        put this measure's state back with its own restore: once it has closed, this incident
        restores again and looks again. More than one, or this incident's own measures among
        them: named for commanders (`overlap.unresolved`). Runs beside the supervisor; a
        stand-down waits for it."""
        assert record.lever is not None
        step = self._steps_by_id[record.id]
        assert isinstance(step, Step)
        request = ReassertRequest(
            incident_id=self._incident.incident_id,
            step_id=record.id,
            reason=reason,
            lever=record.lever,
            args=record.args,
            restore=restore,
            operation=f"restore-{self._incident.incident_id}-{record.id}-{record.undos}",
        )
        undos = record.undos
        self._overlap_work += 1  # continue-as-new waits for it
        try:
            for again in range(1, REASSERT_ROUNDS + 1):
                outcome = await self._ask_later(request, applied_at, restacked=restacked)
                if outcome is None or outcome.told is None:
                    return
                self._record(
                    "overlap.reasserting",
                    step_id=record.id,
                    data=present(
                        incident=outcome.told,
                        steps=outcome.steps,
                        refused=outcome.refused or None,
                        closed=outcome.closed or None,
                    ),
                )
                if not (outcome.refused or outcome.closed):
                    return  # it puts its measures back over this restore
                if outcome.refused:
                    try:
                        await workflow.execute_activity(
                            WAIT_CLOSED,
                            outcome.told,
                            start_to_close_timeout=timedelta(hours=2),
                            heartbeat_timeout=timedelta(seconds=30),
                            retry_policy=OVERLAP_RETRY,
                        )
                    finally:
                        _LEVER_TIME.set(None)  # its outcome arrives with the history
                if record.state not in ("expired", "dormant") or record.undos != undos:
                    return  # renewed or applied again meanwhile: nothing to restore
                await self._restore_for(
                    step, request.model_copy(update={"operation": f"{request.operation}-{again}"})
                )
        except FailureError as error:
            self._record("overlap.check_failed", step_id=record.id, data={"error": _cause(error)})
        finally:
            self._overlap_work -= 1

    async def _ask_later(
        self, request: ReassertRequest, applied_at: str, *, restacked: bool
    ) -> ReassertLaterOutcome | None:
        """Find the later incidents on the measure's settings and tell the one it may (an
        activity); None when that failed (recorded)."""
        began = self._clock()
        try:
            outcome = await workflow.execute_local_activity(
                REASSERT_LATER,
                ReassertLaterRequest(reassert=request, applied_at=applied_at, restacked=restacked),
                result_type=ReassertLaterOutcome,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=OVERLAP_RETRY,
            )
        except FailureError as error:
            self._record(
                "overlap.check_failed", step_id=request.step_id, data={"error": _cause(error)}
            )
            return None
        _LEVER_TIME.set(began + timedelta(seconds=outcome.elapsed_s))
        if outcome.unresolved:
            self._record(
                "overlap.unresolved",
                step_id=request.step_id,
                data={"incidents": outcome.unresolved, "reason": outcome.why_unresolved},
            )
        return outcome

    @workflow.update(name=REASSERT_UPDATE)
    def reassert(self, request: ReassertRequest) -> None:
        """An earlier incident took back a measure on settings ours changed after it, and its
        restore lifted ours too. Lift ours (newest first: each restores what it replaced), apply
        its restore again, put ours back (oldest first, each keeping its expiry): what each now
        replaces is what it would have, had the earlier measure never been applied. One at a
        time, in the order they came."""
        self._overlap_work += 1  # continue-as-new waits for it, queued or under way
        self._background(self._reassert(request))

    @reassert.validator
    def _check_reassert(self, request: ReassertRequest) -> None:
        # Standing down, its restores are under way: the earlier incident restores again once
        # this one has closed.
        self._check_open()

    async def _reassert(self, request: ReassertRequest) -> None:
        try:
            await self._reassert_held(request)
        finally:
            self._overlap_work -= 1

    async def _reassert_held(self, request: ReassertRequest) -> None:
        if self._reassert_lock is None:
            self._reassert_lock = asyncio.Lock()
        queued = self._reassert_lock.locked()
        async with self._reassert_lock:
            # Woken by the update (history time), or, when one was before it, when that one let
            # go after its last lever call.
            _LEVER_TIME.set(self._handoff_time if queued else None)
            try:
                await self._reassert_now(request)
            finally:
                self._handoff_time = _LEVER_TIME.get()

    async def _reassert_now(self, request: ReassertRequest) -> None:
        named = [
            self._records[step_id]
            for step_id in sorted(set(request.steps))
            if step_id in self._records and self._records[step_id].kind == "lever"
        ]
        in_force = [r for r in named if r.state == "applied" and r.id in self._applied_order]
        lifted = sorted(in_force, key=lambda record: self._applied_order.index(record.id))
        # Being taken back: its own restore lands after the earlier one, which goes again.
        undoing = [
            r
            for r in named
            if r.state in ("undoing", "applied") and r.id not in self._applied_order
        ]
        # Taken back after the earlier restore, each put back what the earlier measure had.
        gone = [r for r in named if r.state in ("undone", "expired", "dormant", "undo_failed")]
        self._record(
            "overlap.lifted",
            data={
                "by": request.incident_id,
                "step": request.step_id,
                "reason": request.reason,
                "steps": [record.id for record in lifted],
                "taken_back": [record.id for record in undoing + gone],
            },
        )
        for record in undoing:
            self._restore_after[record.id] = request
        if lifted:
            await self._put_back(lifted, request)
        elif gone and not undoing:
            first = self._steps_by_id[gone[0].id]
            assert isinstance(first, Step)
            await self._restore_for(first, request)

    async def _put_back(self, lifted: list[StepRecord], request: ReassertRequest) -> None:
        # Our own measures applied over a lifted one on its settings go too, or putting it back
        # would put it over them.
        named = {record.id for record in lifted}
        held: list[tuple[StepRecord, str | None]] = []
        for step_id in self._applied_order:  # oldest first
            record = self._records[step_id]
            if step_id in named or any(self._stacked_on(under, [step_id]) for under, _ in held):
                held.append((record, record.expires_at))
        reason = f"lifted while {request.incident_id} takes back {request.step_id}"
        for record, _ in reversed(held):
            await self._undo(record, final_state="undone", reason=reason)
        first = self._steps_by_id[lifted[0].id]
        assert isinstance(first, Step)
        await self._restore_for(first, request)
        for record, until in held:
            step = self._steps_by_id[record.id]
            assert isinstance(step, Step)
            if record.state != "undone":  # its lift failed: left as it is
                continue
            if not (self._eligible(step) and self._eligible(self._parent_of(step))):
                self._make_dormant(record)  # de-escalated meanwhile: stays taken back
                continue
            self._putting_back.add(record.id)
            try:
                applied = await self._apply_step(
                    step, hold_until=until, put_back=request.incident_id
                )
            finally:
                self._putting_back.discard(record.id)
                self._handoff_time = _LEVER_TIME.get()
            if not applied:  # failed (its on_failure has run): the rest stay taken back
                break

    async def _restore_for(self, step: Step, request: ReassertRequest) -> None:
        """Apply an earlier measure's restore (this incident's own, or another's) as a call of
        `step`; recorded as `overlap.restored`, or `overlap.restore_failed`."""
        data = {"incident": request.incident_id, "step": request.step_id, "lever": request.lever}
        try:
            await self._call(
                step,
                request.lever,
                request.args,
                request.operation,
                restore=request.restore,
                retry=UNDO_RETRY,
            )
        except CancelledError:
            raise
        except FailureError as error:
            data["error"] = _cause(error)
            self._record("overlap.restore_failed", step_id=step.id, data=data)
            return
        self._record(
            "overlap.restored", step_id=step.id, data={**data, "restored": request.restore}
        )

    async def _restack(self, held: list[tuple[StepRecord, str | None]]) -> None:
        """Apply again, oldest first, the measures lifted for an older one's restore, each until
        the time it held before (its previous state is now what the restore left)."""
        for other, until in held:
            step = self._steps_by_id[other.id]
            assert isinstance(step, Step)
            await self._apply_step(step, hold_until=until)

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
        request = LeverRequest(
            incident_id=self._incident.incident_id,
            step_id=step.id,
            operation=operation,
            lever=lever,
            args=args,
            restore=restore,
        )
        if lever == "notify.send":
            if self._incident.channels is not None:
                return await self._deliver(step, args, operation, retry)
            # Incidents triggered before the directory had channels notify via the platform.
            request.message = self._incident.templates.get(str(args.get("template")))
            request.context = self._message_context(step)
        began = self._clock()
        if carry is not None:
            request.audit = self._audit.carry(
                task=self._info.get_current_history_length(),
                began=_iso(began),
                outcome=carry,
                close_actor=close_actor,
            )
        elif self._carries_audit() and (lent := self._audit.lend()):
            request.lent = AuditBatch(events=lent, task=self._info.get_current_history_length())
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
        finally:
            self._inflight -= 1
            if request.audit is not None:
                self._audit.settle(
                    written=outcome is not None and outcome.audit is not None,
                    elapsed_s=outcome.elapsed_s if outcome else None,
                    previous=outcome.previous if outcome else None,
                )
        if outcome.elapsed_s is not None:
            _LEVER_TIME.set(began + timedelta(seconds=outcome.elapsed_s))
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
            )
            for index, channel in enumerate(channels)
        ]
        outcomes = await asyncio.gather(
            *(
                workflow.execute_activity(
                    DELIVER_NOTIFICATION,
                    request,
                    result_type=DeliveryReceipt,
                    start_to_close_timeout=parse_duration(step.timeout),
                    retry_policy=retry,
                )
                for request in requests
            ),
            return_exceptions=True,
        )
        _LEVER_TIME.set(None)  # activity results arrive with the history: workflow time is right
        failures = []
        for request, outcome in zip(requests, outcomes, strict=True):
            if isinstance(outcome, CancelledError):
                raise outcome
            delivery = DeliveryRecord(
                operation=operation,
                stakeholder=to,
                channel=request.channel.type,
                target=request.channel.describe(),
                at=_iso(self._clock()),
            )
            if isinstance(outcome, BaseException):
                delivery.state, delivery.error = "failed", _cause(outcome)
                failures.append(f"{delivery.target}: {delivery.error}")
            else:
                delivery.state, delivery.message_id = "delivered", outcome.message_id
            record.deliveries.append(delivery)
            self._record(
                f"notification.{delivery.state}",
                step_id=step.id,
                data=delivery.model_dump(exclude={"at", "state"}, exclude_none=True),
            )
        if len(failures) == len(requests):
            raise ApplicationError(f"no channel reached {to}: " + "; ".join(failures))
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

    # --- levels, conditions -------------------------------------------------------------------
    def _eligible(self, step: AnyStep) -> bool:
        if step.level is not None and self._pb.level_rank(step.level) > self._pb.level_rank(
            self._level
        ):
            return False
        if step.when is None:
            return True
        try:
            expression = self._conditions.get(step.id)
            if expression is None:
                expression = self._conditions[step.id] = parse_expression(step.when)
            return evaluate(
                expression, inputs=self._incident.inputs, level=self._level, levels=self._pb.levels
            )
        except ExpressionError as error:
            workflow.logger.warning("condition of %s failed: %s", step.id, error)
            return False

    def _make_dormant(self, record: StepRecord) -> None:
        if record.state != "dormant":
            record.state, record.approval_deadline, record.approvals = "dormant", None, []
            self._record("step.dormant", step_id=record.id, data={"level": self._level})

    def _set_level(self, level: str | None, *, actor: str, reason: str) -> None:
        before = self._pb.level_rank(self._level)
        self._level = level
        self._publish()
        change = "level.escalated" if self._pb.level_rank(level) > before else "level.de_escalated"
        self._level_history.append(
            LevelChangeRecord(level=level, at=_iso(self._clock()), actor=actor, reason=reason)
        )
        self._record(change, actor=actor, data={"level": level, "reason": reason})
        if change == "level.escalated":
            self._background(self._catch_up())
        else:
            self._background(self._withdraw_above_level())

    def _escalate_by_system(self, reason: str) -> None:
        rank = self._pb.level_rank(self._level)
        if rank + 1 < len(self._pb.levels):
            self._set_level(self._pb.levels[rank + 1], actor=SYSTEM, reason=reason)

    async def _catch_up(self) -> None:
        """After escalation: run the steps already passed that the new level makes eligible."""
        for step in self._top[: self._cursor]:
            if self._stand_down is not None or self._draining:
                return
            record = self._records[step.id]
            waiting = ("dormant", "awaiting_approval")
            if record.state in waiting or (
                isinstance(step, ParallelStep)
                and any(self._records[b.id].state in waiting for b in step.parallel)
            ):
                if isinstance(step, ParallelStep) and record.state not in waiting:
                    record.state = "running"
                if not await self._run_top_step(step) and self._state == "running":
                    self._state = "failed"
                    self._publish()
                    self._record(
                        "incident.failed",
                        step_id=step.id,
                        data={"error": self._records[step.id].error},
                    )
                    return

    async def _withdraw_above_level(self) -> None:
        """After de-escalation: undo, newest first, the measures the level no longer calls for."""
        for step_id in reversed(list(self._applied_order)):
            step = self._steps_by_id[step_id]
            if not self._eligible(step) or not self._eligible(self._parent_of(step)):
                await self._undo(
                    self._records[step_id],
                    final_state="dormant",
                    reason=f"level is now {self._level}",
                )

    def _parent_of(self, step: AnyStep) -> AnyStep:
        parent = self._records[step.id].parent
        return self._steps_by_id[parent] if parent else step

    def _background(self, work: Any) -> None:
        # Counted from creation, so a stand-down waits for it. Continue-as-new does not: an
        # approval can take hours; the next run resumes what was waiting (see `run`).
        self._busy += 1

        async def tracked() -> None:
            try:
                await work
            finally:
                self._busy -= 1

        self._tasks.append(asyncio.create_task(tracked()))

    # --- time: expiries and reviews -----------------------------------------------------------
    async def _supervise(self) -> None:
        if self._version() >= 4:
            await self._supervise_v4()
            return
        while self._state != "closed":
            deadline = self._next_deadline()
            self._wake = False
            await self._sleep_until(
                deadline, lambda: self._wake or self._state == "closed" or self._draining
            )
            if self._state == "closed":
                return
            await self._wait(lambda: not self._draining or self._stand_down is not None)
            await self._lapse_and_review()

    async def _supervise_v4(self) -> None:
        """As v3, but a measure applied with a later expiry than the next deadline leaves that
        deadline's timer running instead of cancelling it and starting an identical one."""
        timer: asyncio.Task[None] | None = None
        timer_deadline: datetime | None = None
        while self._state != "closed":
            deadline = self._next_deadline()
            if deadline != timer_deadline or (timer is not None and timer.done()):
                if timer is not None and not timer.done():
                    timer.cancel()
                timer, timer_deadline = None, deadline
                if deadline is not None:
                    remaining = (deadline - self._clock()).total_seconds()
                    if remaining > 0:
                        timer = asyncio.create_task(asyncio.sleep(remaining))
            due = deadline is not None and (timer is None or timer.done())
            self._wake = False
            if not due:
                await self._wait(
                    lambda running=timer: (
                        self._wake
                        or self._state == "closed"
                        or self._draining
                        or (running is not None and running.done())
                    )
                )
            if self._state == "closed":
                break
            if self._draining:
                await self._wait(lambda: not self._draining or self._stand_down is not None)
            await self._lapse_and_review()
        if timer is not None and not timer.done():
            timer.cancel()

    async def _lapse_and_review(self) -> None:
        now = self._clock()
        for record in list(self._records.values()):
            if (
                record.state == "applied"
                and record.expires_at
                and _parse_iso(record.expires_at) <= now
            ) and self._state != "standing_down":
                await self._undo(record, final_state="expired", reason="expiry reached")
        if self._review_due and self._state in ("running", "failed"):
            assert self._pb.reviews is not None
            grace = parse_duration(self._pb.reviews.grace)
            if now >= _parse_iso(self._review_due) + grace:
                self._review_missed()

    def _next_deadline(self) -> datetime | None:
        if self._state not in ("running", "failed"):
            return None
        moments = [
            _parse_iso(r.expires_at)
            for r in self._records.values()
            if r.state == "applied" and r.expires_at
        ]
        if self._review_due and self._pb.reviews and self._state in ("running", "failed"):
            moments.append(_parse_iso(self._review_due) + parse_duration(self._pb.reviews.grace))
        return min(moments) if moments else None

    def _review_missed(self) -> None:
        assert self._pb.reviews is not None
        self._reviews_missed += 1
        action = self._pb.reviews.on_missed
        missed = self._review_due
        self._review_due = _iso(self._clock() + parse_duration(self._pb.reviews.every))
        self._record(
            "review.missed",
            data=present(
                due=missed,
                on_missed=action,
                next_due=self._review_due if self._board_facts else None,
            ),
        )
        if action == "escalate":
            self._escalate_by_system("review missed")
        elif action == "stand_down" and self._stand_down is None:
            self._stand_down = StandDownRequest(actor=SYSTEM, reason="review missed")
            self._record("stand_down.requested", actor=SYSTEM, data={"reason": "review missed"})

    async def _sleep_until(self, deadline: datetime | None, done: Callable[[], bool]) -> bool:
        """Wait until `done()` or the deadline; True = `done()` came first (or already held)."""
        if done():
            return True
        if deadline is None:
            await self._wait(done)
            return True
        remaining = (deadline - self._clock()).total_seconds()
        if remaining <= 0:
            return False
        try:
            await self._wait(done, timeout=remaining)
        except TimeoutError:
            return done()
        return True

    # --- continue-as-new ----------------------------------------------------------------------
    def _should_continue_as_new(self) -> bool:
        if self._state not in ("running", "failed"):  # checked on every pass: cheapest first
            return False
        info = self._info
        return (
            info.get_current_history_length() >= self._incident.history_limit
            or info.is_continue_as_new_suggested()
        )

    async def _continue_as_new(self) -> None:
        """Carry the incident into a fresh run once nothing is in flight; a stand-down wins."""
        self._draining = True
        await self._wait(
            lambda: (
                self._stand_down is not None
                or (
                    self._inflight == 0
                    and self._overlap_work == 0
                    and workflow.all_handlers_finished()
                    and not self._audit.pending
                    and not self._pump_busy
                )
            )
        )
        if self._stand_down is not None:
            self._draining = False
            return
        carried = CarriedState(
            state=self._state,
            level=self._level,
            triggered_at=self._triggered_at,
            steps=list(self._records.values()),
            applied_order=self._applied_order,
            cursor=self._cursor,
            audit_seq=self._audit.seq,
            audit_last_hash=self._audit.last_hash,
            review_due=self._review_due,
            reviews_missed=self._reviews_missed,
            notes=self._notes,
            level_history=self._level_history,
            stand_down=self._stand_down,
            runs=self._runs,
        )
        workflow.continue_as_new(self._incident.model_copy(update={"carried": carried}))

    # --- audit --------------------------------------------------------------------------------
    def _record(
        self,
        kind: str,
        *,
        actor: str | None = None,
        step_id: str | None = None,
        data: dict[str, Any] | None = None,
        at: str | None = None,
    ) -> None:
        at = at or _iso(self._clock())
        self._audit.record(kind, at=at, actor=actor, step_id=step_id, data=data)

    def _publish(self) -> None:
        """Keep the incident's search attributes current, for the Temporal UI and queries."""
        if self._incident.search_attributes:
            workflow.upsert_search_attributes(
                [SEARCH_STATE.value_set(self._state), SEARCH_LEVEL.value_set(self._level or "")]
            )

    async def _pump_audit(self) -> None:
        # Audit writes run beside the levers, never in front of them, as local activities in the
        # same workflow task (no extra round trip through the server). Each batch carries the
        # task it was produced in, so rows of an attempt that never committed are superseded.
        local = self._since_v3("audit-local-activity")
        # A stand-down is written with the undos it starts, not in a write of its own before them.
        with_undo = self._since_v3()

        def ready() -> bool:
            if self._audit_done:
                return True
            if with_undo and self._stand_down is not None and self._state in ("running", "failed"):
                return False  # the run is about to take the measures back
            # Local writes wait until no lever call is in flight: a few batches per incident, and
            # the moments they are sent do not depend on how lever results were grouped into
            # activations (which a replay may group differently).
            return bool(self._audit.pending) and (not local or self._inflight == 0)

        while True:
            await self._wait(ready)
            if not self._audit.pending:
                return
            self._pump_busy = True
            try:
                if local:
                    await workflow.execute_local_activity(
                        WRITE_AUDIT,
                        AuditBatch(
                            events=self._audit.take(),
                            task=workflow.info().get_current_history_length(),
                        ),
                        start_to_close_timeout=timedelta(seconds=10),
                        retry_policy=AUDIT_RETRY,
                    )
                    continue
                # Incidents started before the change: a regular activity after each commit.
                await workflow.execute_activity(
                    WRITE_AUDIT,
                    AuditBatch(events=self._audit.take()),
                    start_to_close_timeout=timedelta(seconds=10),
                    retry_policy=AUDIT_RETRY,
                )
            finally:
                self._pump_busy = False

    # --- commander actions --------------------------------------------------------------------
    @workflow.update
    async def stand_down(self, request: StandDownRequest) -> IncidentStatus:
        """Undo every applied measure in reverse order, close the incident, answer its status."""
        self._stand_down = request
        self._record("stand_down.requested", actor=request.actor, data={"reason": request.reason})
        if self._since_v3("stand-down-answers-after-audit"):
            # Answer once the audit trail is complete, so what the commander sees is on record.
            await self._wait(lambda: self._audit_flushed)
        else:  # incidents started before this change answered at close
            await self._wait(lambda: self._state == "closed")
        return self._status()

    @stand_down.validator
    def _check_stand_down(self, request: StandDownRequest) -> None:
        _check_lengths(request.actor, ("reason", request.reason, MAX_TEXT_CHARS))
        if self._stand_down is not None:
            raise _invalid(f"incident is already {self._state.replace('_', ' ')}")

    @workflow.update
    def approve(self, request: ApproveRequest) -> StepRecord:
        record = self._records[request.step_id]
        record.approvals.append(
            Approver(
                actor=request.actor,
                role=request.role,
                at=_iso(self._clock()),
                comment=request.comment,
            )
        )
        self._record(
            "approval.given",
            actor=request.actor,
            step_id=request.step_id,
            data={"role": request.role, "comment": request.comment, "count": len(record.approvals)},
        )
        return record

    @approve.validator
    def _check_approve(self, request: ApproveRequest) -> None:
        _check_lengths(
            request.actor,
            ("role", request.role, MAX_NAME_CHARS),
            ("comment", request.comment, MAX_TEXT_CHARS),
        )
        step, record = self._awaiting(request.step_id)
        assert step.approval is not None
        if request.role not in step.approval.roles:
            raise _invalid(
                f"role {request.role!r} cannot approve {step.id} "
                f"(roles: {', '.join(step.approval.roles)})"
            )
        if any(a.actor == request.actor for a in record.approvals):
            raise _invalid(f"{request.actor} has already approved {step.id}")

    @workflow.update
    def reject(self, request: RejectRequest) -> StepRecord:
        record = self._records[request.step_id]
        record.state = "skipped"
        record.outcome = f"rejected by {request.actor}: {request.reason}"
        self._record(
            "approval.rejected",
            actor=request.actor,
            step_id=request.step_id,
            data={"role": request.role, "reason": request.reason},
        )
        return record

    @reject.validator
    def _check_reject(self, request: RejectRequest) -> None:
        _check_lengths(
            request.actor,
            ("role", request.role, MAX_NAME_CHARS),
            ("reason", request.reason, MAX_TEXT_CHARS),
        )
        step, _ = self._awaiting(request.step_id)
        assert step.approval is not None
        if request.role not in step.approval.roles:
            raise _invalid(f"role {request.role!r} cannot reject {step.id}")

    def _awaiting(self, step_id: str) -> tuple[Step, StepRecord]:
        self._check_open()
        step = self._steps_by_id.get(step_id)
        if not isinstance(step, Step) or step.approval is None:
            raise _invalid(f"step {step_id!r} does not exist or needs no approval")
        record = self._records[step_id]
        if record.state != "awaiting_approval":
            raise _invalid(f"step {step_id} is not awaiting approval (it is {record.state})")
        return step, record

    @workflow.update
    def escalate(self, request: LevelRequest) -> IncidentStatus:
        target = request.to_level or self._pb.levels[self._pb.level_rank(self._level) + 1]
        self._set_level(target, actor=request.actor, reason=request.reason)
        return self._status()

    @escalate.validator
    def _check_escalate(self, request: LevelRequest) -> None:
        self._check_level_change(request, up=True)

    @workflow.update
    def de_escalate(self, request: LevelRequest) -> IncidentStatus:
        target = request.to_level or self._pb.levels[self._pb.level_rank(self._level) - 1]
        self._set_level(target, actor=request.actor, reason=request.reason)
        return self._status()

    @de_escalate.validator
    def _check_de_escalate(self, request: LevelRequest) -> None:
        self._check_level_change(request, up=False)

    def _check_level_change(self, request: LevelRequest, *, up: bool) -> None:
        _check_lengths(request.actor, ("reason", request.reason, MAX_TEXT_CHARS))
        self._check_open()
        levels, rank = self._pb.levels, self._pb.level_rank(self._level)
        if not levels:
            raise _invalid(f"playbook {self._pb.playbook} has no levels")
        if request.to_level is not None:
            if request.to_level not in levels:
                raise _invalid(f"unknown level {request.to_level!r} (levels: {', '.join(levels)})")
            target = levels.index(request.to_level)
            if (up and target <= rank) or (not up and target >= rank):
                word = "above" if up else "below"
                raise _invalid(f"{request.to_level} is not {word} the current level {self._level}")
        elif up and rank + 1 >= len(levels):
            raise _invalid(f"already at the highest level ({self._level})")
        elif not up and rank <= 0:
            raise _invalid(f"already at the lowest level ({self._level})")

    @workflow.update
    def renew(self, request: RenewRequest) -> StepRecord:
        record = self._records[request.step_id]
        until = _iso(self._clock() + parse_duration(request.duration))
        lapsed = record.state == "expired"
        self._record(
            "measure.renewed",
            actor=request.actor,
            step_id=request.step_id,
            data={
                "until": until,
                "reason": request.reason,
                "was": record.expires_at,
                "reapply": lapsed,
            },
        )
        if lapsed:
            # Measures come back: apply it again (a new idempotency key), then hold until `until`.
            step = self._steps_by_id[request.step_id]
            assert isinstance(step, Step)
            self._background(self._reapply(step, until))
        else:
            record.expires_at = until
            self._wake = True
        return record

    async def _reapply(self, step: Step, until: str) -> None:
        if await self._apply_step(step):
            record = self._records[step.id]
            if record.state == "applied":
                record.expires_at = until
                self._wake = True

    @renew.validator
    def _check_renew(self, request: RenewRequest) -> None:
        _check_lengths(request.actor, ("reason", request.reason, MAX_TEXT_CHARS))
        self._check_open()
        record = self._records.get(request.step_id)
        if record is None or record.kind != "lever":
            raise _invalid(f"no measure {request.step_id!r} in this incident")
        step = self._steps_by_id[request.step_id]
        assert isinstance(step, Step)
        if step.expires_after is None:
            raise _invalid(f"measure {request.step_id} has no expiry to renew (no expires_after)")
        if record.state not in ("applied", "expired"):
            raise _invalid(
                f"measure {request.step_id} is {record.state}: only an applied or lapsed "
                "measure can be renewed"
            )
        if record.state == "expired" and not (
            self._eligible(step) and self._eligible(self._parent_of(step))
        ):
            raise _invalid(
                f"measure {request.step_id} lapsed and the incident's level or conditions no "
                "longer call for it"
            )
        try:
            parse_renewal(request.duration)
        except ValueError as error:
            raise _invalid(str(error)) from None

    @workflow.update
    def confirm_review(self, request: ReviewRequest) -> IncidentStatus:
        assert self._pb.reviews is not None
        self._review_due = _iso(self._clock() + parse_duration(self._pb.reviews.every))
        self._record(
            "review.confirmed",
            actor=request.actor,
            data={"note": request.note, "next_due": self._review_due},
        )
        self._wake = True
        return self._status()

    @confirm_review.validator
    def _check_confirm_review(self, request: ReviewRequest) -> None:
        _check_lengths(request.actor, ("note", request.note, MAX_TEXT_CHARS))
        self._check_open()
        if self._pb.reviews is None:
            raise _invalid(f"playbook {self._pb.playbook} has no reviews")

    @workflow.update
    def add_note(self, request: NoteRequest) -> IncidentStatus:
        self._notes.append(Note(actor=request.actor, text=request.text, at=_iso(self._clock())))
        self._record("note.added", actor=request.actor, data={"text": request.text})
        return self._status()

    @add_note.validator
    def _check_add_note(self, request: NoteRequest) -> None:
        _check_lengths(request.actor, ("text", request.text, MAX_NOTE_CHARS))
        if self._state == "closed":
            raise _invalid("incident is closed")

    def _check_open(self) -> None:
        if self._stand_down is not None or self._state in ("standing_down", "closed"):
            raise _invalid(f"incident is {self._state.replace('_', ' ')}")

    # --- status -------------------------------------------------------------------------------
    @workflow.query
    def status(self) -> IncidentStatus:
        return self._status()

    def _status(self) -> IncidentStatus:
        return IncidentStatus(
            incident_id=self._incident.incident_id,
            state=self._state,
            playbook=self._pb.playbook,
            version=self._pb.version,
            playbook_hash=self._incident.playbook_hash,
            inputs=self._incident.inputs,
            triggered_by=self._incident.triggered_by,
            triggered_at=self._triggered_at,
            level=self._level,
            levels=self._pb.levels,
            stand_down=self._stand_down,
            closed_at=self._closed_at,
            next_review_due=self._review_due if self._state in ("running", "failed") else None,
            reviews_missed=self._reviews_missed,
            notes=self._notes,
            level_history=self._level_history,
            runs=self._runs,
            steps=list(self._records.values()),
        )

    def _outcome(self) -> IncidentOutcome:
        return IncidentOutcome(
            incident_id=self._incident.incident_id,
            state=self._state,
            closed_at=self._closed_at,
            steps={record.id: record.state for record in self._records.values()},
        )

    # --- helpers ------------------------------------------------------------------------------
    def _version(self) -> int:
        """The interpreter version this run follows: the newest whose marker it recorded (a new
        run records today's); 2 for histories from before the version markers."""
        if self._version_seen is None:
            self._version_seen = (
                5
                if workflow.patched(INTERPRETER_V5)
                else 4
                if workflow.patched(INTERPRETER_V4)
                else 3
                if workflow.patched(INTERPRETER_V3)
                else 2
            )
        return self._version_seen

    def _carries_audit(self) -> bool:
        """Whether a phase's last lever call may write its trail (interpreter v5)."""
        return self._version() >= 5

    def _since_v3(self, older_patch: str | None = None) -> bool:
        """Whether this run follows interpreter v3 or later (or, in a history recorded before
        v3 had its marker, whether it recorded `older_patch`, the change's own patch)."""
        since = self._version() >= 3
        if since or older_patch is None:
            return since
        return workflow.patched(older_patch)

    def _new_record(self, step: AnyStep, parent: str | None) -> StepRecord:
        kind = _KINDS[type(step)]  # not isinstance: a wrapped call in the sandbox, per step
        return StepRecord(
            id=step.id,
            kind=kind,
            lever=step.do if kind == "lever" else None,  # type: ignore[union-attr]
            quorum=step.approval.quorum if kind == "lever" and step.approval else None,  # type: ignore[union-attr]
            parent=parent,
            level=step.level,
        )


def _cause(error: BaseException) -> str:
    # The useful message is the innermost cause (the platform's answer), not "activity failed".
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error)
