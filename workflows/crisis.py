"""CrisisWorkflow: the playbook interpreter. One run per incident; workflow id = incident id.

Deterministic: every side effect is an activity called by name, time is `workflow.now()`, and
audit events (with their chain hashes) are produced here so a replay reproduces them. Three
coroutines share the incident's state: the *sequence* walks the playbook's steps in order, the
*supervisor* lapses expired measures and watches reviews (`supervision`), and the *audit pump*
writes events. Each lever is pulled by a local activity (`lever_calls`). Commander actions arrive
as Updates (`commander_actions`); each validator refuses a bad request before it is recorded.
Measures on the same settings as another incident's are handed back between them
(`overlap_handoff`). The state they share is `incident_run`.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import CancelledError, FailureError

with workflow.unsafe.imports_passed_through():
    from workflows.audit import (
        AuditBatch,
        AuditWritten,
        CarriedOutcome,
        applied_data,
        present,
        undone_data,
    )
    from workflows.durations import parse_duration
    from workflows.incident import (
        WORKFLOW_NAME,
        WRITE_AUDIT,
        CarriedState,
        FailedUndo,
        IncidentInput,
        IncidentOutcome,
        StepRecord,
    )
    from workflows.levers import LEVERS, is_notification
    from workflows.playbook import ParallelStep, Step, WaitStep
    from workflows.substitution import substitute

from workflows.commander_actions import CommanderActions
from workflows.held_steps import HeldSteps
from workflows.incident_run import (
    APPLY_UNDER_PATCH,
    DELIVERIES_LAND_PATCH,
    FAILURE_SETTLES_PATCH,
    HEAR_BEFORE_NOTICE_PATCH,
    LAST_PUT_OFF_PATCH,
    LEVER_TIME,
    PUMP_OUTLIVES_CARRY_PATCH,
    RESTORE_RETRY,
    TRAIL_BEFORE_RETRIES_PATCH,
    UNANSWERED_RECORDED_PATCH,
    UNCERTAIN_APPLY_PATCH,
    UNDO_ERROR_SHOWN_PATCH,
    UNDO_ON_LANDING_PATCH,
    UNDO_PUT_OFF_PATCH,
    UNDO_RETRY,
    UNHEARD_S,
    WITHDRAW_ON_LANDING_PATCH,
    AnyStep,
    cause_of,
    failure_facts,
    iso,
    parse_iso,
    refused,
    unanswered,
)
from workflows.lever_calls import LeverCalls
from workflows.overlap_handoff import FORCED_HAND_BACK_PATCH, REASSERT_PATCH, OverlapHandoff
from workflows.supervision import Supervision

AUDIT_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10)
)


@workflow.defn(name=WORKFLOW_NAME)
class CrisisWorkflow(CommanderActions, HeldSteps, OverlapHandoff, Supervision, LeverCalls):
    @workflow.init
    def __init__(self, incident: IncidentInput) -> None:
        super().__init__(incident)

    # --- the run ------------------------------------------------------------------------------
    @workflow.run
    async def run(self, incident: IncidentInput) -> IncidentOutcome:
        # Events also carry when the next review is due, so the incident board can show it from
        # the audit trail alone; histories recorded before then replay without it. (The version
        # marker is recorded here, at the start of every run.)
        self._board_facts = self._since_v3("board-facts")
        if incident.carried is None:
            triggered_at = self._dated_at_start()
            self._begin(
                "incident.triggered",
                actor=incident.triggered_by,
                data=present(
                    playbook=self._pb.playbook,
                    version=self._pb.version,
                    playbook_hash=incident.playbook_hash,
                    inputs=incident.inputs,
                    # As declared: an escalation that came before this first task follows it.
                    level=self._declared_level if self._early else self._level,
                    review_due=self._review_due if self._board_facts else None,
                ),
                at=triggered_at,
            )
        else:
            self._begin("incident.continued", actor=None, data={"run": self._runs}, at=None)
        if incident.carried is not None and self._version() >= 7:
            self._rehold()  # before the sequence goes on: nothing may pass what was held
        # Creation order is command order: the first lever is scheduled before the first audit
        # write (histories recorded by earlier versions depend on it).
        sequence = asyncio.create_task(self._run_sequence())
        pump = asyncio.create_task(self._pump_audit())
        supervisor = asyncio.create_task(self._supervise())
        if incident.carried is not None and (self._pb.levels or self._version() >= 7):
            # A continued run picks up what had been started off the main sequence (by an
            # escalation, or in v7 a step waiting for its approval).
            self._background(self._catch_up())

        while self._stand_down is None:
            await self._wait(lambda: self._stand_down is not None or self._should_continue_as_new())
            if self._stand_down is None:
                await self._continue_as_new()  # returns only if a stand-down came first

        # The steps from the failed one on were stopped by the failure, not by the stand-down.
        failed_by = self._failed_step() if self._state == "failed" else None
        self._state = "standing_down"
        self._publish()
        await sequence
        if self._inflight or self._busy:  # waiting only when needed keeps command order stable
            await self._wait(lambda: self._inflight == 0 and self._busy == 0)
        closing = {step.id for step in self._pb.on_stand_down}
        for record in self._records.values():
            if record.id in closing:
                continue
            if record.state in ("dormant", "pending", "awaiting_approval") and self._ran(record):
                # Ran at a higher level, withdrawn when the level dropped: not "not run".
                if record.kind == "parallel":
                    record.state = "done"
                else:
                    record.state = "kept" if record.undone_at is None else "undone"
            elif record.state in ("pending", "dormant", "awaiting_approval", "waiting"):
                record.state = "skipped"
                stopped = failed_by is not None and self._at_or_after(record.id, failed_by)
                never_ran = "the incident failed" if stopped else "incident stood down"
                record.outcome = record.outcome or f"not run: {never_ran}"
        unknown = [r for r in self._records.values() if r.state == "failed" and r.uncertain]
        if unknown and workflow.patched(UNCERTAIN_APPLY_PATCH):
            for record in unknown:
                await self._learn_outcome(record)
        undoing = list(reversed(self._applied_order))
        if self._version() >= 6:
            # Measures first (newest first, as before), then closing notices: a notice that
            # retries on a dead channel must not keep a measure on the platform meanwhile.
            undoing.sort(key=self._sends_notice)  # stable: each group keeps its order
        # Forced, or with no commander to refuse or force it: each take-back hands back.
        hands_back = self._stand_down is not None and (
            self._stand_down.force or (self._stood_down_unasked and self._hands_back_unasked())
        )
        put_off: list[StepRecord] = []  # measures whose undo erred at first: tried again last
        for number, step_id in enumerate(undoing, start=1):
            record = self._records[step_id]
            if put_off and self._sends_notice(step_id):
                await self._undo_put_off(put_off, hands_back)  # every measure before a notice
            elif put_off and self._under(record, put_off):
                put_off.append(record)  # restoring it would wipe the newer one: after it
                continue
            if self._version() >= 6 and self._sends_notice(step_id) and self._holds_close():
                await self._hold_close()  # no closing notice while a measure may be in force
            # A forced stand-down's hand-backs are recorded after its undos: nothing carries
            # the close.
            closes = number == len(undoing) and not self._pb.on_stand_down and not hands_back
            if closes and (put_off or self._holds_close()):
                closes = False  # an earlier undo failed: the close waits for its restore
            # Only where another measure would wait behind its retries: one still to take back,
            # or one put off already.
            others = self._goes_back(step_id) and (
                any(map(self._goes_back, undoing[number:]))
                or (bool(put_off) and workflow.patched(LAST_PUT_OFF_PATCH))
            )
            if await self._undo(
                record, final_state="undone", closes=closes, hand_back=hands_back, put_off=others
            ):
                put_off.append(record)
        if put_off:
            await self._undo_put_off(put_off, hands_back)
        if hands_back and self._busy:
            await self._wait(lambda: self._busy == 0)  # the hand-backs, before the close
        if self._holds_close():
            await self._hold_close()
        for step in self._pb.on_stand_down:
            if self._eligible(step):
                await self._apply_step(step)
            else:
                self._records[step.id].state = "skipped"

        self._state = "closed"
        self._publish()
        self._closed_at = iso(self._clock())
        self._record("incident.closed", actor=self._stand_down.actor if self._stand_down else None)
        self._wake = True
        await supervisor
        self._audit_done = True
        await pump
        self._audit_flushed = True
        await self._wait(workflow.all_handlers_finished)
        return self._outcome()

    def _under(self, record: StepRecord, newer: list[StepRecord]) -> bool:
        """Whether a measure to take back changes settings one of `newer` (applied after it) also
        changes, whatever either's undo is: it goes back after them, newest first, as always."""
        if record.lever is None:
            return False
        return bool(self._stacked_on(record, [other.id for other in newer], any_undo=True))

    def _goes_back(self, step_id: str) -> bool:
        """Whether taking the step back calls the platform for a measure (not a notice; a
        notification without an undo is only marked kept)."""
        step = self._steps_by_id[step_id]
        assert isinstance(step, Step)
        reversible = step.undo is not None or LEVERS[step.do].reversible
        return reversible and not self._sends_notice(step_id)

    async def _trail_written(self) -> None:
        """Let the trail so far be written (the board shows it) before lever calls that may retry
        for minutes: the pump writes only between lever calls."""
        await self._wait(lambda: not self._audit.pending and not self._pump_busy)

    async def _undo_put_off(self, put_off: list[StepRecord], hand_back: bool) -> None:
        """Take back, newest first and with the full retry policy, the measures whose undo was
        put off: those whose first tries erred, and those on the same settings under them."""
        await self._trail_written()
        for record in put_off:
            reason = ""
            if record.state == "undoing":  # its first tries erred: status shows why until it lands
                record.state = "applied"
                reason = f"retried after the other measures ({record.error})"
            await self._undo(record, final_state="undone", hand_back=hand_back, reason=reason)
            if record.state == "undone":
                record.error = None
        put_off.clear()

    # --- the sequence -------------------------------------------------------------------------
    async def _run_sequence(self) -> None:
        while self._cursor < len(self._top):
            if self._draining:  # only then: a wait_condition yields, and order matters
                await self._wait(lambda: not self._draining or self._stand_down is not None)
            step = self._top[self._cursor]
            if self._stand_down is None and self._unheard_s >= UNHEARD_S and self._notifies(step):
                await self._hear_the_server()
            if self._stand_down is not None:
                return
            if not await self._run_or_hold(step):
                self._fail(step.id)
                return
            self._cursor += 1
            if self._state == "failed" and self._version() >= 7:
                return  # a step run off the sequence failed: the playbook stops there too

    def _notifies(self, step: AnyStep) -> bool:
        """Whether running the step may send a notice (which cannot be taken back)."""
        steps = step.parallel if isinstance(step, ParallelStep) else [step]
        return any(isinstance(one, Step) and is_notification(one.do) for one in steps)

    async def _hear_the_server(self) -> None:
        """Let the workflow task complete and a new one bring what waited for it (a stand-down
        sent while lever calls ran) before a notice goes out."""
        if workflow.patched(HEAR_BEFORE_NOTICE_PATCH):
            self._unheard_s = 0.0
            await workflow.sleep(0.001)
            LEVER_TIME.set(None)  # woken by the history: workflow time is right

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
            record.state, record.started_at = "waiting", iso(self._clock())
            record.wait_until = iso(self._clock() + parse_duration(step.wait))
            self._record("wait.started", step_id=step.id, data={"until": record.wait_until})
        await self._sleep_until(parse_iso(record.wait_until), lambda: self._stand_down is not None)
        if self._stand_down is None:
            record.state, record.finished_at = "done", iso(self._clock())
            self._record("wait.finished", step_id=step.id)
        return True

    async def _parallel_step(self, step: ParallelStep) -> bool:
        record = self._records[step.id]
        if record.state not in ("pending", "dormant", "running"):
            return True
        if not self._eligible(step):
            self._make_dormant(record)
            return True
        record.state, record.started_at = "running", record.started_at or iso(self._clock())
        if self._version() >= 6:
            results = await self._branches(step)
        else:  # the sequence went on with its own clock (an earlier lever's end, stamped later)
            results = await asyncio.gather(*(self._lever_step(branch) for branch in step.parallel))
        record.finished_at = iso(self._clock())
        record.state = "done" if all(results) else "failed"
        return all(results)

    async def _branches(self, step: ParallelStep) -> list[bool]:
        """Run the branches at once; the sequence then goes on from when the last one ended
        (each ran in a task of its own, with its own lever clock)."""
        ended: list[datetime] = []

        async def branch(one: Step) -> bool:
            carried_on = await self._lever_step(one)
            ended.append(self._clock())
            return carried_on

        results = await asyncio.gather(*(branch(one) for one in step.parallel))
        last = max(ended)
        LEVER_TIME.set(last if last > workflow.now() else None)
        return list(results)

    async def _lever_step(self, step: Step) -> bool:
        record = self._records[step.id]
        if record.state not in ("pending", "dormant", "awaiting_approval"):
            return True
        if not self._eligible(step):
            self._make_dormant(record)
            return True
        if self._holding and not await self._waited_turn(step, record):
            return True
        if step.approval is not None and not await self._approved(step, record):
            return record.state != "failed"
        if record.state not in ("pending", "dormant", "awaiting_approval"):
            return True
        if self._stopped_by_failure(step):  # left pending, as the steps the sequence never ran
            if record.state == "awaiting_approval":  # approved as the incident failed
                record.state, record.outcome = "skipped", "not run: the incident failed"
            return True
        lifted = self._in_force_after(step)
        if not lifted or not workflow.patched(APPLY_UNDER_PATCH):
            return await self._apply_step(step)
        # A step the sequence passed (run after an escalation).
        return await self._apply_under(step, lifted)

    async def _apply_under(
        self, step: Step, lifted: list[StepRecord], *, hold_until: str | None = None
    ) -> bool:
        """Apply a step under the later steps' measures on its settings (`_in_force_after`):
        they stay the ones in force, as when the steps run in order. They are lifted, it is
        applied, they are put back, each until the time it held before."""
        held = [(other, other.expires_at) for other in lifted]
        for other, _ in reversed(held):
            await self._undo(
                other, final_state="undone", reason=f"lifted while {step.id} is applied under it"
            )
        carried_on = await self._apply_step(step, hold_until=hold_until)
        if carried_on or step.on_failure != "undo":
            await self._restack(held)
        return carried_on

    def _in_force_after(self, step: Step) -> list[StepRecord]:
        """The measures in force from steps after this one in the playbook, of its lever on some
        of its settings (the ones in force if the steps ran in order), oldest first."""
        if self._cursor < len(self._top) and self._top[self._cursor] is step:
            return []  # the sequence's own step: nothing after it has run
        if not self._applied_order:
            return []
        position = self._place[self._parent_of(step).id]
        if position >= self._cursor or is_notification(step.do):
            return []
        found = []
        for step_id in self._applied_order:
            other = self._steps_by_id[step_id]
            if (
                isinstance(other, Step)
                and other.undo is None
                and self._place.get(self._parent_of(other).id, -1) > position
                and self._same_settings(step, other)
            ):
                found.append(self._records[step_id])
        return found

    async def _approved(self, step: Step, record: StepRecord) -> bool:
        """Wait for the quorum; True = go ahead. On False the record says why not."""
        approval = step.approval
        assert approval is not None
        if record.state != "awaiting_approval":
            self._ask_approval(step, record)
        while True:
            assert record.approval_deadline is not None

            def settled() -> bool:
                return (
                    len(record.approvals) >= approval.quorum
                    or record.state != "awaiting_approval"
                    or self._stand_down is not None
                    or not self._eligible(step)
                    or self._stopped_by_failure(step)
                )

            timed_out = not await self._sleep_until(parse_iso(record.approval_deadline), settled)
            if self._stand_down is not None or record.state != "awaiting_approval":
                return False  # stood down, or rejected (the handler set the record)
            if self._stopped_by_failure(step):
                record.state, record.approval_deadline = "skipped", None
                record.outcome = "not run: the incident failed"
                return False
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
            next_deadline = iso(self._clock() + parse_duration(approval.timeout))
            timed_out_data: dict[str, Any] = {"on_timeout": approval.on_timeout}
            if approval.on_timeout == "escalate" and self._version() >= 7:
                # What happens next, in the trail: at the highest level there is no escalation.
                timed_out_data |= {"escalates_to": self._level_above(), "deadline": next_deadline}
            self._record("approval.timed_out", step_id=step.id, data=timed_out_data)
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
            record.approval_deadline = next_deadline

    def _ask_approval(self, step: Step, record: StepRecord) -> None:
        approval = step.approval
        assert approval is not None
        record.state, record.approvals = "awaiting_approval", []
        record.outcome = None  # asked again after a withdrawal: that is no longer its story
        record.approval_deadline = iso(self._clock() + parse_duration(approval.timeout))
        self._record(
            "approval.requested",
            step_id=step.id,
            data={
                "roles": approval.roles,
                "quorum": approval.quorum,
                "deadline": record.approval_deadline,
                **({"every_role": True} if approval.every_role else {}),  # hashes as before
            },
        )

    async def _apply_step(
        self, step: Step, *, hold_until: str | None = None, put_back: str | None = None
    ) -> bool:
        """Pull the step's lever; True = carry on (applied, or failed with on_failure continue).
        `hold_until`: a measure put back keeps the expiry it had. `put_back`: the incident whose
        restore lifted it (it keeps the time it came into force)."""
        record = self._records[step.id]
        now = iso(self._clock())
        record.state, record.started_at, record.error = "running", now, None
        record.outcome = None
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
                iso(self._clock()),
                cause_of(error),
            )
            # A measure, not a message (sent again, a message could reach someone twice).
            record.uncertain = (
                unanswered(error)
                and not is_notification(step.do)
                and (step.undo is not None or LEVERS[step.do].reversible)
            )
            # How many attempts, when the failure says (earlier histories' do not: same hash).
            attempts = failure_facts(error).get("attempt")
            counted = {} if attempts is None else {"attempts": attempts}
            if record.uncertain and workflow.patched(UNANSWERED_RECORDED_PATCH):
                counted["unanswered"] = True
            self._record(
                "step.failed",
                step_id=step.id,
                data={"lever": step.do, "error": record.error, **counted},
            )
            if step.on_failure != "continue" and workflow.patched(FAILURE_SETTLES_PATCH):
                await self._stop_at_failure(step)
            elif step.on_failure == "undo":  # recorded before: calls under way undone on landing
                self._take_back_on_landing(step.id)
                for step_id in reversed(list(self._applied_order)):
                    await self._undo(self._records[step_id], final_state="undone")
            return step.on_failure == "continue"
        failed = self._undo_on_landing.pop(record.id, None)
        moment = self._clock()
        now = iso(moment)
        record.state, record.finished_at, record.previous = "applied", now, outcome.previous
        record.lifted_by, record.undone_at = None, None  # applied again: not undone now
        record.uncertain = False
        record.failed_undo = None
        if put_back is None:
            record.in_force_since = now
        self._applied_order.append(step.id)
        if hold_until is not None:
            record.expires_at = hold_until
            self._wake = True
        elif step.expires_after is not None:
            record.expires_at = iso(moment + parse_duration(step.expires_after))
            self._wake = True
        self._record(
            "step.applied",
            step_id=step.id,
            data=applied_data(step.do, outcome.previous, record.expires_at, put_back),
            at=now,
        )
        if failed is not None and workflow.patched(UNDO_ON_LANDING_PATCH):
            why = f"{failed} failed (on_failure: undo)"
            hand_back = why if self._hands_back_unasked() else False
            await self._undo(record, final_state="undone", reason=why, hand_back=hand_back)
            if record.state == "undone":
                record.outcome = f"taken back: {why}"
        elif (
            self._stand_down is None
            and not self._called_for(step)
            and workflow.patched(WITHDRAW_ON_LANDING_PATCH)
        ):
            await self._undo(record, final_state="dormant", reason=f"level is now {self._level}")
        return True

    async def _learn_outcome(self, record: StepRecord) -> bool:
        """A measure whose apply failed with no answer may hold all the same. Sent again under
        its own idempotency key, it is answered with what it replaced if the platform applied
        it (and applied now if it never was): either way it is then in force with a known
        previous state, for its undo to restore, in its place among the measures (since its
        call began). False if the platform still does not answer: it may hold, and what it
        replaced is unknown, so it is an undo failed for good (a restore ends it)."""
        step = self._steps_by_id[record.id]
        assert isinstance(step, Step)
        operation = f"apply-{record.applications}"  # the same request, not a new application
        try:
            outcome = await self._call(step, step.do, record.args, operation, retry=RESTORE_RETRY)
        except CancelledError:
            raise
        except FailureError as error:
            record.state = "undo_failed"
            record.error = f"its apply had no answer and still has none: {cause_of(error)}"
            record.failed_undo = FailedUndo(at=iso(self._clock()), final_state="undone")
            self._record(
                "step.undo_failed",
                step_id=record.id,
                data={"lever": step.do, "error": record.error},
            )
            return False
        now = iso(self._clock())
        # Its failure, kept in its story: the times say when it was learnt, not when it failed.
        record.outcome = f"applied, as the stand-down learnt; its apply had failed: {record.error}"
        record.state, record.previous, record.error = "applied", outcome.previous, None
        record.in_force_since, record.finished_at = record.started_at, now
        record.uncertain = False
        self._reinstate(record)
        self._record(
            "step.applied",
            step_id=record.id,
            data={**applied_data(step.do, outcome.previous, None), "after_failure": True},
            at=now,
        )
        return True

    async def _stop_at_failure(self, step: Step) -> None:
        """A lever step failed for good (on_failure stop or undo): the incident fails now, so
        nothing new starts. An undo first lets the lever calls under way land, then takes back
        every measure in force, newest first (taken back as it landed, a measure applied over an
        older one on the same settings was restored after that one's undo, bringing it back)."""
        self._fail(step.id)
        if step.on_failure != "undo":
            return
        self._failure_undos += 1  # no continue-as-new until it is done
        try:
            if self._inflight or self._delivering:  # lever calls, and notify.send deliveries
                await self._wait(lambda: self._inflight == 0 and self._delivering == 0)
            why = f"{step.id} failed (on_failure: undo)"
            hand_back = why if self._applied_order and self._hands_back_unasked() else False
            for step_id in reversed(list(self._applied_order)):
                taken = self._records[step_id]
                await self._undo(taken, final_state="undone", reason=why, hand_back=hand_back)
                if taken.state == "undone":
                    taken.outcome = f"taken back: {why}"
        finally:
            self._failure_undos -= 1

    def _take_back_on_landing(self, failed: str) -> None:
        """A step failed with on_failure undo: the lever calls applying other steps at this
        moment (a parallel branch, or the sequence's step while a held one failed) land after
        the measures applied so far are taken back; each is taken back as soon as it lands."""
        for other in self._records.values():
            if other.state == "running" and other.kind == "lever" and other.id != failed:
                self._undo_on_landing[other.id] = failed

    def _ran(self, record: StepRecord) -> bool:
        """Whether the step (or, for a parallel step, one of its branches) was ever applied."""
        step = self._steps_by_id[record.id]
        branches = step.parallel if isinstance(step, ParallelStep) else []
        return record.applications > 0 or any(self._records[b.id].applications for b in branches)

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
    ) -> bool:
        """Take a measure back. `closes`: the incident closes once it is (the call then writes
        the stand-down's trail, the close included, if nothing else is under way). `hand_back`:
        as a lapse does, tell a later incident whose measure on the same settings this restore
        lifted (a forced stand-down, or a take-back no commander asked for). `put_off`: try only
        a few times, quickly, and if the platform errs leave the measure `undoing` and answer
        True: the caller takes the other measures back first and then calls again."""
        if record.id in self._putting_back:  # put back for an earlier incident: let it land
            await self._wait(lambda: record.id not in self._putting_back)
            LEVER_TIME.set(self._handoff_time)  # woken by that lever call, not the history
            if final_state == "expired" and self._state == "standing_down":
                return False  # the stand-down takes it back
        if record.state != "applied":
            return False
        step = self._steps_by_id[record.id]
        assert isinstance(step, Step)
        applied_at = record.held_since
        place = self._applied_order.index(record.id)
        later = self._applied_order[place + 1 :]
        self._applied_order.remove(record.id)
        if step.undo is not None:
            lever, args, restore = step.undo.do, substitute(step.undo.with_, self._context), None
        elif LEVERS[step.do].reversible:
            lever, args, restore = step.do, record.args, record.previous or {}
        else:
            record.state, record.expires_at = "kept", None  # a notification cannot be unsent
            return False
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
        attempt = functools.partial(
            self._call,
            step,
            lever,
            args,
            f"undo-{record.undos}",  # every try the same request: applied once at most
            restore=restore,
            carry=carry,
            close_actor=self._stand_down.actor if closes and self._stand_down else None,
        )
        quick_first = put_off or retry is UNDO_RETRY
        try:
            try:
                await attempt(retry=RESTORE_RETRY if quick_first else retry)
            except FailureError as error:
                erring = not refused(error)
                if put_off and not held and erring and workflow.patched(UNDO_PUT_OFF_PATCH):
                    record.error = cause_of(error)
                    record.undos -= 1  # tried again as the same request
                    self._applied_order.insert(place, record.id)
                    return True
                if not erring or not workflow.patched(UNDO_ERROR_SHOWN_PATCH):
                    raise
                record.error = cause_of(error)  # status says why it is still undoing
                if (
                    self._state == "standing_down"
                    and self._audit.pending
                    and workflow.patched(TRAIL_BEFORE_RETRIES_PATCH)
                ):
                    await self._trail_written()
                await attempt(retry=retry)
                record.error = None
        except CancelledError:
            raise
        except FailureError as error:
            record.state, record.error = "undo_failed", cause_of(error)
            before = record.failed_undo  # an earlier failure, when this was a retry
            earlier = self._restore_after.pop(record.id, None)
            record.failed_undo = FailedUndo(
                at=before.at if before else iso(self._clock()),
                final_state=final_state,  # type: ignore[arg-type]
                hand_back=bool(hand_back),
                overwritten_by=(
                    f"{earlier.incident_id} ({earlier.step_id})"
                    if earlier
                    else before and before.overwritten_by
                ),
                notice=self._sends_notice(record.id),
            )
            self._record(
                "step.undo_failed", step_id=step.id, data={"lever": lever, "error": record.error}
            )
            if earlier is not None:
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
            return False
        now = iso(self._clock())
        record.state, record.undone_at = final_state, now  # type: ignore[assignment]
        record.lifted_by = None
        if final_state == "dormant":  # taken back, not held back: status says which
            record.outcome = f"withdrawn: {reason}" if reason else "withdrawn"
        self._record(kind, step_id=step.id, data=undone_data(lever, restore, reason), at=now)
        if (earlier := self._restore_after.pop(record.id, None)) is not None:
            await self._restore_for(step, earlier)  # before ours stacked on it go back
        await self._restack(held)
        if restore is None or applied_at is None:
            return False
        if final_state in ("expired", "dormant") and workflow.patched(REASSERT_PATCH):
            self._background(
                self._reassert_later(record, applied_at, reason, restore, restacked=bool(held))
            )
        elif hand_back and workflow.patched(FORCED_HAND_BACK_PATCH):
            # A forced or unasked stand-down's, or a retried undo's (whose failure recorded
            # only that it handed back): in the stand-down's name while it stands down.
            if isinstance(hand_back, str):
                why = hand_back
            elif self._state == "standing_down":
                why = self._hand_back_reason()
            else:
                why = reason
            self._background(
                self._reassert_later(record, applied_at, why, restore, restacked=bool(held))
            )
        return False

    async def _hold_close(self) -> None:
        """Closing notices and the close wait until every measure is restored: a commander
        retries its undo or records a restore by hand (`restore`); then for what a restore
        handed back to later incidents. They are stamped no earlier than the last restore.
        It lets go once the restore's events are written: the pump, woken by them too, would
        otherwise find them taken by the next undo's carry, and take that for its end."""
        self._holding_close = True
        await self._wait(
            lambda: (
                not self._unrestored()
                and self._busy == 0
                and not self._audit.pending
                and not self._pump_busy
            )
        )
        self._holding_close = False
        last = self._restored_time
        LEVER_TIME.set(last if last is not None and last > workflow.now() else None)

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
        # A notification's deliveries under way were dropped by the new run (and the step stayed
        # `running` for ever); recorded only where one is.
        deliveries = bool(self._delivering) and workflow.patched(DELIVERIES_LAND_PATCH)
        await self._wait(
            lambda: (
                self._stand_down is not None
                or (
                    self._inflight == 0
                    and not (deliveries and self._delivering)
                    and self._failure_undos == 0
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
                # Woken, but a lever call's carry took the events first: unless the run is done,
                # more will come (a carry that fails hands its events back).
                if self._audit_done or not workflow.patched(PUMP_OUTLIVES_CARRY_PATCH):
                    return
                continue
            self._pump_busy = True
            try:
                if local:
                    await workflow.execute_local_activity(
                        WRITE_AUDIT,
                        AuditBatch(events=self._audit.take(), **self._task()),
                        # Typed: decoding the answer as `Any` built a validator in every run.
                        result_type=AuditWritten,
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
