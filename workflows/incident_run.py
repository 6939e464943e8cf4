"""What every part of the playbook interpreter shares: the incident's state, its clock, and
the small operations the parts are built from (recording an audit event, waiting on the history,
starting background work, the run's interpreter version, the status a commander sees).

`workflows.crisis.CrisisWorkflow` is this plus its parts, each a class of its own module: the
commanders' actions (`commander_actions`), expiries, reviews and levels (`supervision`), the
steps run off the sequence while they wait (`held_steps`) and the hand-back between overlapping
incidents (`overlap_handoff`). The parts call the run's own step
operations (`_apply_step`, `_undo`, `_run_top_step`), declared here for them; a lever call
(`_call`) is `lever_calls.LeverCalls`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.exceptions import TimeoutError as CallTimedOut

with workflow.unsafe.imports_passed_through():
    from workflows.audit import (
        AuditTrail,
    )
    from workflows.durations import parse_duration
    from workflows.expressions import ExpressionError, evaluate
    from workflows.expressions import parse as parse_expression
    from workflows.incident import (
        REFUSED_AS_ASKED,
        REFUSED_NOW,
        SEARCH_LEVEL,
        SEARCH_STATE,
        FailedUndo,
        IncidentInput,
        IncidentOutcome,
        IncidentState,
        IncidentStatus,
        LevelChangeRecord,
        Note,
        ReassertRequest,
        StandDownRequest,
        StepRecord,
    )
    from workflows.levers import is_notification
    from workflows.limits import MAX_NAME_CHARS, PRINCIPAL_PATTERN, PRINCIPAL_RULE
    from workflows.playbook import ParallelStep, Step, WaitStep


# Platform rejections (4xx) are final; anything else is retried per the step's policy.
NON_RETRYABLE = ["PlatformRejected"]
UNDO_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=20,
    non_retryable_error_types=NON_RETRYABLE,
)
# An undo a commander retries: they wait for the answer, so it gives up within seconds.
RESTORE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=2),
    maximum_attempts=4,
    non_retryable_error_types=NON_RETRYABLE,
)
# A run records one marker naming the interpreter version it follows: each patch marker also
# costs a search-attribute update on the server, so changes share one per version. Histories
# recorded before v3 replay through the per-change patches they hold (see `_version`).
INTERPRETER_V3 = "interpreter-v3"
# v4: the supervisor keeps one timer while the next deadline stays where it was.
INTERPRETER_V4 = "interpreter-v4"
# v5: the last lever call of a phase writes the phase's audit events itself (AuditCarry).
INTERPRETER_V5 = "interpreter-v5"
# v6: a stand-down takes every measure back before it sends closing notices (a notice retrying
# on a dead channel held the measures on the platform for minutes).
INTERPRETER_V6 = "interpreter-v6"
# v7: a step waiting for its approval holds back only itself and the later steps on the same
# settings; the rest of the playbook goes on (escalation notices waited behind an approval).
INTERPRETER_V7 = "interpreter-v7"
# A step held back by its `when:` says so in its step.dormant (`condition`), which read as held
# back by the level. Its own patch, recorded only where a condition holds a step back.
DORMANT_CONDITION_PATCH = "dormant-names-condition"
# A lever call under way when another step failed with on_failure undo is taken back once it
# lands (it stayed in force on the failed incident). Recorded only where that happens.
UNDO_ON_LANDING_PATCH = "undo-on-landing-after-failure"
# A step whose call was under way when a de-escalation left it no longer called for (a delivery
# runs as an activity, so the level can change before it lands) is withdrawn once it lands: it
# had stayed applied, its withdrawal notice never sent. Recorded only where that happens.
WITHDRAW_ON_LANDING_PATCH = "withdraw-on-landing-below-level"
# A notice every channel refused (a 4xx) is refused for good, as a lever's refusal is: an undo's
# notice was sent again at once, refused again and counted twice. Recorded only where it is.
NOTICE_REFUSED_PATCH = "notice-refused-by-every-channel"
# A stand-down's undo that erred at first and goes on retrying (for minutes) lets the trail so far
# be written first: the board showed the measures taken back before it as still in force. Its
# own patch, recorded only where that happens.
TRAIL_BEFORE_RETRIES_PATCH = "trail-written-before-undo-retries"
# A step run after later steps on its settings (an escalation's catch-up) is applied under
# them: they are lifted, it is applied, they are put back (it overrode them, loosening what the
# playbook's order put in force). Recorded only where that happens.
APPLY_UNDER_PATCH = "apply-under-later-measures"
# A lever step failing for good (on_failure stop or undo) fails the incident at once, not once its
# parallel or held step ends (a step approved meanwhile was applied); an undo first lets the calls
# under way land (see CrisisWorkflow._stop_at_failure). Recorded at such a failure only.
FAILURE_SETTLES_PATCH = "failure-stops-at-once-and-settles-calls"
# A continue-as-new waits for notification deliveries under way. Recorded only where one is.
DELIVERIES_LAND_PATCH = "continue-as-new-waits-for-deliveries"
# A stand-down whose undo failed for good waits, standing down, until a commander restores the
# measure (`restore`), instead of closing with it maybe still in force. Recorded only there.
UNDO_FAILURE_HOLDS_CLOSE_PATCH = "failed-undo-holds-the-close"
# The audit pump, woken by events a lever call's carry took before it ran, waits for more
# instead of ending (the carry failing hands them back, and they went unwritten). Recorded only
# where that race happens.
PUMP_OUTLIVES_CARRY_PATCH = "audit-pump-outlives-a-carry"
# A commander's action that reaches a run before its first task (no worker was running, or it
# was busy) is recorded after the run's first event (incident.triggered or .continued), not
# ahead of it. Recorded only where an action comes that early.
EARLY_ACTIONS_PATCH = "actions-recorded-after-the-trigger"
# An incident whose first task ran well after it was triggered (no worker was running) is
# dated when it was triggered, not when a worker came. Recorded only for such an incident.
LATE_START_PATCH = "trigger-dated-at-the-start"
LATE_START = timedelta(seconds=1)
# A stand-down whose undo of a measure fails its first few quick tries (the platform erring, not
# refusing) undoes the other measures before trying it again: the retries of one setting's undo
# held every other measure in force for minutes. Recorded only where an undo is put off.
UNDO_PUT_OFF_PATCH = "undo-retried-after-the-other-measures"
# Once one undo is put off, the last measure's erring undo is put off too (its full retries held
# the put-off ones, whose platform may be back). Recorded where an undo was put off and a last
# measure is still to take back.
LAST_PUT_OFF_PATCH = "last-undo-put-off-behind-the-others"

# An undo the platform errs on (not refuses) is tried a few times quickly first; then status
# shows the error while its full retries go on (it showed none for up to 7 minutes). Recorded
# only where an undo's first tries err.
UNDO_ERROR_SHOWN_PATCH = "undo-error-shown-while-retried"

# A measure whose apply failed with no answer from the platform (its last attempt timed out, or
# was sent and never answered) may hold all the same: a stand-down sends it again under its own
# idempotency key to learn what it replaced, then takes it back (it was left in force, recorded
# as never applied). Recorded only where such a measure is stood down.
UNCERTAIN_APPLY_PATCH = "apply-with-no-answer-taken-back"
# Such a measure's step.failed says `unanswered`, so the board and the overlap check (both read
# the trail alone) count it as maybe in force: an earlier incident's stand-down on its settings
# waits for it as for an applied one. Recorded only where such an apply fails.
UNANSWERED_RECORDED_PATCH = "no-answer-recorded"
# A stand-down sent while lever calls run waits at the server until the workflow task running
# them completes, and the sequence went on in that task: a notice was sent after the commander
# had asked to stand down. After lever calls that took this long since the run last heard from
# the server, it does (a timer's round trip) before a step that sends a notice. Not after every
# call: the round trip cost a sixth of the throughput at 40 incidents at once, where calls
# queue for a second or so. Recorded only where that happens.
HEAR_BEFORE_NOTICE_PATCH = "stand-down-heard-before-a-notice"
UNHEARD_S = 2.0

AnyStep = Step | WaitStep | ParallelStep
_KINDS: dict[type, str] = {Step: "lever", WaitStep: "wait", ParallelStep: "parallel"}

# Per coroutine (asyncio tasks copy contexts): when the lever call this coroutine last awaited
# finished, on the incident's clock; cleared when it next waits on the history.
LEVER_TIME: ContextVar[datetime | None] = ContextVar("lever_time", default=None)


def iso(moment: datetime) -> str:
    return moment.isoformat()


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


def invalid_request(message: str) -> ApplicationError:
    # Raised by validators: the update is refused and never enters the history. The incident
    # cannot take the request now (it is closing, the step is not waiting, ...).
    return ApplicationError(message, type=REFUSED_NOW, non_retryable=True)


def bad_argument(message: str) -> ApplicationError:
    # As invalid_request, for a request this incident can never take as asked: it names a level,
    # step or role the incident does not have, or text too long to keep.
    return ApplicationError(message, type=REFUSED_AS_ASKED, non_retryable=True)


def check_texts(actor: str, *texts: tuple[str, str | None, int]) -> None:
    """Refuse text too long to keep in the history, the audit trail and every status answer, and
    text that is only blanks (a reason of spaces says nothing to an auditor); the API refuses
    both first; this is for callers that reach the workflow directly."""
    if len(actor) <= MAX_NAME_CHARS and not PRINCIPAL_PATTERN.fullmatch(actor):
        raise bad_argument(f"invalid actor {actor!r}: {PRINCIPAL_RULE}")
    for what, text, limit in (("actor", actor, MAX_NAME_CHARS), *texts):
        if text is not None and len(text) > limit:
            raise bad_argument(f"{what} is too long: {len(text)} characters (at most {limit})")
        if text and not text.strip():
            raise bad_argument(f"{what} is blank")


class IncidentRun:
    """The incident's state and the operations every part of the interpreter uses."""

    def __init__(self, incident: IncidentInput) -> None:
        self._incident = incident
        self._pb = incident.playbook
        self._steps_by_id: dict[str, AnyStep] = {}
        self._top: list[AnyStep] = list(self._pb.steps)
        # Each top step's place in the sequence, by id (list.index compares whole models).
        self._place = {step.id: n for n, step in enumerate(self._top)}
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
        # The level the incident was declared at (the first, if none was given).
        self._declared_level = incident.level or (self._pb.levels[0] if self._pb.levels else None)
        carried = incident.carried
        if carried is None:
            self._state: IncidentState = "running"
            self._level = self._declared_level
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
            self._triggered_at = iso(self._clock())
            self._review_due = (
                iso(self._clock() + parse_duration(self._pb.reviews.every))
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
        # Seconds of lever calls since the sequence last let the server deliver what waits for
        # this workflow task to complete (HEAR_BEFORE_NOTICE_PATCH).
        self._unheard_s = 0.0
        self._busy = 0  # background work (catch-up after escalation, withdrawal, re-apply)
        self._wake = False  # something changed that the supervisor must look at
        self._draining = False  # preparing to continue-as-new: start nothing new
        self._audit_done = False
        self._audit_flushed = False
        self._pump_busy = False
        # A stand-down waiting for failed undos to be restored before it closes; when the last
        # restore's lever call ended (the close is stamped no earlier).
        self._holding_close = False
        self._restored_time: datetime | None = None
        self._conditions: dict[str, Any] = {}
        self._retry_policies: dict[str, RetryPolicy] = {}  # by step id: built once, not per call
        # Overlapping incidents (`reassert`): one earlier incident's restore at a time; an
        # earlier restore to apply again once ours of that step is taken back; our measures
        # lifted to be put back (nothing else takes them back meanwhile).
        self._reassert_lock: asyncio.Lock | None = None  # made by the first request, if any
        self._restore_after: dict[str, ReassertRequest] = {}
        self._putting_back: set[str] = set()
        self._overlap_work = 0  # requests to or from other incidents not yet done
        # The lever time of the overlap work that last let another task go on (see _clock).
        self._handoff_time: datetime | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # v7: top steps run off the sequence (waiting for an approval, or for an earlier step
        # of those on the same settings), and the settings each lever step changes.
        self._holding: set[str] = set()
        # Steps being applied when another failed with on_failure undo: by id, the failed step.
        self._undo_on_landing: dict[str, str] = {}
        self._failure_undos = 0  # on_failure undo under way (waiting for calls, undoing)
        self._failed_by: str | None = None  # the step whose failure failed the incident
        self._delivering = 0  # notify.send steps delivering (regular activities)
        self._targets: dict[str, frozenset[str]] = {}
        self._version_seen: int | None = None
        self._info = workflow.info()  # its history length and suggestion are read live
        # The stand-down is the incident's own (a missed review's), not a commander's.
        self._stood_down_unasked = False
        # Until the run records its first event: actions that came first (EARLY_ACTIONS_PATCH).
        self._begun = False
        self._early: list[dict[str, Any]] = []

    def _clock(self) -> datetime:
        """The time events are stamped with. Code woken by the history (start, timer, update)
        uses workflow time; code that runs because a lever call finished uses the time the call
        began plus how long it took (recorded in its marker). A replay may process a lever result
        at another activation boundary than the original run did (a status query can split a
        workflow task while lever calls run), where workflow time differs; this does not."""
        return LEVER_TIME.get() or workflow.now()

    def _task(self) -> dict[str, int]:
        """Which workflow task, and which attempt of it, audit events handed out now come from
        (AuditBatch's `task` and `task_time`)."""
        return {
            "task": self._info.get_current_history_length(),
            "task_time": workflow.time_ns() // 1000,  # workflow.now() in µs
        }

    async def _wait(self, condition: Callable[[], bool], timeout: float | None = None) -> None:
        try:
            await workflow.wait_condition(condition, timeout=timeout)
        finally:
            LEVER_TIME.set(None)  # woken by the history, not by a lever call

    if TYPE_CHECKING:  # the run's step operations (workflows.crisis), which the parts call

        async def _run_top_step(self, step: AnyStep) -> bool: ...

        async def _run_or_hold(self, step: AnyStep) -> bool: ...

        def _ask_approval(self, step: Step, record: StepRecord) -> None: ...

        def _waiting_again(self, step: AnyStep) -> bool: ...

        def _reopen(self, step: AnyStep) -> None: ...

        async def _apply_step(
            self, step: Step, *, hold_until: str | None = None, put_back: str | None = None
        ) -> bool: ...

        async def _undo(
            self,
            record: StepRecord,
            *,
            final_state: str,
            reason: str = "",
            closes: bool = False,
            hand_back: bool | str = False,
            retry: RetryPolicy = UNDO_RETRY,
            put_off: bool = False,
        ) -> bool: ...

        async def _learn_outcome(self, record: StepRecord) -> bool: ...

        def _stacked_on(
            self, record: StepRecord, later: list[str], *, any_undo: bool = False
        ) -> list[StepRecord]: ...

        def _in_force_after(self, step: Step) -> list[StepRecord]: ...

        async def _apply_under(
            self, step: Step, lifted: list[StepRecord], *, hold_until: str | None = None
        ) -> bool: ...

        def _hand_back_restored_by_hand(
            self, record: StepRecord, failed: FailedUndo | None, applied_at: str | None, why: str
        ) -> None: ...

    # --- levels, conditions -------------------------------------------------------------------
    def _eligible(self, step: AnyStep, at: str | None = None) -> bool:
        """Whether the step is called for at the incident's level (or at level `at`)."""
        level = at or self._level
        if step.level is not None and self._pb.level_rank(step.level) > self._pb.level_rank(level):
            return False
        if step.when is None:
            return True
        try:
            expression = self._conditions.get(step.id)
            if expression is None:
                expression = self._conditions[step.id] = parse_expression(step.when)
            return evaluate(
                expression, inputs=self._incident.inputs, level=level, levels=self._pb.levels
            )
        except ExpressionError as error:
            workflow.logger.warning("condition of %s failed: %s", step.id, error)
            return False

    def _called_for(self, step: AnyStep) -> bool:
        """Whether the step, and the parallel step it is a branch of, are called for now."""
        return self._eligible(step) and self._eligible(self._parent_of(step))

    def _make_dormant(self, record: StepRecord) -> None:
        if record.state != "dormant":
            record.state, record.approval_deadline, record.approvals = "dormant", None, []
            data: dict[str, Any] = {"level": self._level}
            step = self._steps_by_id[record.id]
            if (
                step.when is not None
                and self._pb.level_rank(step.level) <= self._pb.level_rank(self._level)
                and workflow.patched(DORMANT_CONDITION_PATCH)
            ):
                data["condition"] = step.when  # held back by its condition, not by the level
            self._record("step.dormant", step_id=record.id, data=data)

    def _fail(self, step_id: str) -> bool:
        """Mark the incident failed by this step's failure; False if it was not running."""
        if self._state != "running":
            return False
        self._state, self._failed_by = "failed", step_id
        self._publish()
        self._record(
            "incident.failed", step_id=step_id, data={"error": self._records[step_id].error}
        )
        return True

    def _failed_step(self) -> str:
        """The step whose failure failed the incident (a run continued as new searches for it)."""
        if self._failed_by is not None:
            return self._failed_by
        failed = (
            record.id
            for record in self._records.values()
            if record.state == "failed"
            and getattr(self._steps_by_id[record.id], "on_failure", "stop") != "continue"
        )
        return next(failed, "a step")

    def _at_or_after(self, step_id: str, other: str) -> bool:
        """Whether `step_id` comes at or after `other` in the playbook's steps (a branch where
        its parallel step does)."""
        place = self._place.get
        mine = place(self._parent_of(self._steps_by_id[step_id]).id, -1)
        return mine >= place(self._parent_of(self._steps_by_id[other]).id, len(self._top))

    def _unrestored(self) -> bool:
        """A measure's undo failed for good (or is being retried): it may still be in force. (A
        closing notice that failed is on record; it holds nothing on the platform.)"""
        return any(
            r.state in ("undo_failed", "undoing") and not self._sends_notice(r.id)
            for r in self._records.values()
        )

    def _sends_notice(self, step_id: str) -> bool:
        """Whether taking this step back is sending a message (an `undo:` notification)."""
        step = self._steps_by_id[step_id]
        return isinstance(step, Step) and step.undo is not None and is_notification(step.undo.do)

    def _holds_close(self) -> bool:
        """Whether a stand-down must wait for a restore before it closes (histories recorded
        before the patch closed at once)."""
        return self._unrestored() and workflow.patched(UNDO_FAILURE_HOLDS_CLOSE_PATCH)

    def _parent_of(self, step: AnyStep) -> AnyStep:
        parent = self._records[step.id].parent
        return self._steps_by_id[parent] if parent else step

    # --- background work, waiting ------------------------------------------------------------
    def _background(self, work: Any) -> asyncio.Task[None]:
        # Counted from creation, so a stand-down waits for it. Continue-as-new does not: an
        # approval can take hours; the next run resumes what was waiting (see `run`).
        self._busy += 1

        async def tracked() -> None:
            try:
                await work
            finally:
                self._busy -= 1

        task = asyncio.create_task(tracked())
        self._tasks.append(task)
        return task

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
        at = at or iso(self._clock())
        if not self._begun and workflow.patched(EARLY_ACTIONS_PATCH):
            early = {"kind": kind, "at": at, "actor": actor, "step_id": step_id, "data": data}
            self._early.append(early)
            return
        self._audit.record(kind, at=at, actor=actor, step_id=step_id, data=data)

    def _begin(self, kind: str, *, actor: str | None, data: dict[str, Any], at: str | None) -> None:
        """Record the run's first event, then the actions that reached it before (if any)."""
        self._begun = True
        self._record(kind, actor=actor, data=data, at=at)
        for early in self._early:
            self._audit.record(**early)
        self._early = []

    def _dated_at_start(self) -> str | None:
        """If the first task ran well after the incident was triggered (no worker was running),
        date the trigger when it was triggered, not when a worker came; that time, or None. The
        first review stays due `every` after the first task: the measures begin then, and a
        review already missed by then would stand the incident down or escalate it at once."""
        start = self._info.workflow_start_time
        if workflow.now() - start < LATE_START or not workflow.patched(LATE_START_PATCH):
            return None
        self._triggered_at = iso(start)
        return self._triggered_at

    def _publish(self) -> None:
        """Keep the incident's search attributes current, for the Temporal UI and queries."""
        if self._incident.search_attributes:
            workflow.upsert_search_attributes(
                [SEARCH_STATE.value_set(self._state), SEARCH_LEVEL.value_set(self._level or "")]
            )

    # --- status -------------------------------------------------------------------------------
    def _check_open(self) -> None:
        """Refuse a commander action once a stand-down has begun (validators call it)."""
        if self._stand_down is not None or self._state in ("standing_down", "closed"):
            raise invalid_request(f"incident is {self._state.replace('_', ' ')}")

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
            steps=[self._shown(record) for record in self._records.values()],
        )

    def _shown(self, record: StepRecord) -> StepRecord:
        """The record as status shows it: a branch not yet run of a parallel step held back by
        the level or a condition is held back with it (its own record stays `pending`)."""
        parent = self._records.get(record.parent) if record.parent is not None else None
        if record.state == "pending" and parent is not None and parent.state == "dormant":
            return record.model_copy(update={"state": "dormant"})
        return record

    def _outcome(self) -> IncidentOutcome:
        return IncidentOutcome(
            incident_id=self._incident.incident_id,
            state=self._state,
            closed_at=self._closed_at,
            steps={record.id: record.state for record in self._records.values()},
        )

    # --- versions, records --------------------------------------------------------------------
    def _version(self) -> int:
        """The interpreter version this run follows: the newest whose marker it recorded (a new
        run records today's); 2 for histories from before the version markers."""
        if self._version_seen is None:
            self._version_seen = (
                7
                if workflow.patched(INTERPRETER_V7)
                else 6
                if workflow.patched(INTERPRETER_V6)
                else 5
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


def _causes(error: BaseException | None) -> Iterator[BaseException]:
    """The failure and what caused it, outermost first (an activity's failure wraps its own)."""
    while error is not None:
        yield error
        error = error.__cause__


def failure_facts(error: BaseException) -> dict[str, Any]:
    """What a failed lever call said of itself (activities.platform `_failed`): `tried_s`, how
    long it had been trying, and `attempt`; empty for failures recorded before it said so."""
    for each in _causes(error):
        if isinstance(each, ApplicationError) and each.details:
            facts = each.details[0]
            if isinstance(facts, dict) and "tried_s" in facts:
                return facts
    return {}


def unanswered(error: BaseException) -> bool:
    """Whether a lever call failed with no answer from the platform, which may have applied it
    all the same: its last attempt timed out, or was sent and never answered."""
    if failure_facts(error).get("unanswered"):
        return True
    # The call's own deadline, not a wait's.
    return any(isinstance(each, CallTimedOut) for each in _causes(error))


def refused(error: BaseException) -> bool:
    """Whether the platform refused the call (a 4xx): trying it again cannot change the answer."""
    return any(
        isinstance(each, ApplicationError) and (each.non_retryable or each.type in NON_RETRYABLE)
        for each in _causes(error)
    )


def cause_of(error: BaseException) -> str:
    # The useful message is the innermost cause (the platform's answer), not "activity failed".
    while error.__cause__ is not None:
        error = error.__cause__
    if isinstance(error, ApplicationError) and failure_facts(error):
        return error.message  # without "PlatformUnavailable: " (earlier histories keep theirs)
    return str(error)
