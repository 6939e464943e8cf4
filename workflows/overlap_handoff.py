"""Two incidents on the same setting: when a measure lapses, is withdrawn or is taken back by a
forced stand-down, its restore also lifts what a later incident put in force over it. The earlier
incident tells the later one (`_reassert_later`), which puts its own measures back over that
restore (the `reassert` Update); within one incident, a measure taken back lifts and re-applies
the newer ones stacked on it (`_stacked_on`, `_restack`). README: "Two incidents on the same
setting"."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import CancelledError, FailureError

with workflow.unsafe.imports_passed_through():
    from workflows.audit import present
    from workflows.incident import (
        LIFTED_UPDATE,
        REASSERT_LATER,
        REASSERT_UPDATE,
        WAIT_CLOSED,
        FailedUndo,
        LiftedNotice,
        ReassertLaterOutcome,
        ReassertLaterRequest,
        ReassertRequest,
        StepRecord,
    )
    from workflows.levers import LEVERS, is_notification, shared_settings
    from workflows.playbook import Step

from workflows.incident_run import LEVER_TIME, UNDO_RETRY, cause_of
from workflows.lever_calls import LeverCalls

# Looking up and telling later incidents: the store or the server may be briefly away; after
# a few tries the incident records `overlap.check_failed` rather than hold its supervisor.
OVERLAP_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=5,
)
# Rounds of "restore again, look again" after a later incident standing down has closed.
REASSERT_ROUNDS = 3
# A measure that lapses or is withdrawn tells a later incident holding measures on the same
# settings to put its own back. Its own patch, recorded at a lapse or withdrawal only: the
# trigger-to-stand-down path of an incident never records it.
REASSERT_PATCH = "hand-back-to-later-incidents"
# The same at a forced stand-down, recorded only there.
FORCED_HAND_BACK_PATCH = "hand-back-at-forced-stand-down"
# The same when the incident takes its measures back on its own, where no commander could be
# refused or force it (a missed review's stand-down, `on_failure: undo`); recorded only there.
# Before it, such a take-back lifted a later incident's measures and told no one.
UNASKED_HAND_BACK_PATCH = "hand-back-when-taken-back-unasked"
# A lapse's, a withdrawal's or a forced stand-down's failed undo recorded as restored by hand
# hands the settings back as its retry does; recorded only there. Before it, the later
# incident's measure was left lifted, and its own stand-down put this one's value back.
BY_HAND_HAND_BACK_PATCH = "restored-by-hand-hands-back"
# An earlier restore that goes over a measure whose apply had no answer settles it: whatever the
# call did is gone from the platform, so the measure is no longer maybe in force, and this
# incident's stand-down restores nothing for it. Recorded only where such a measure is named.
# Before it, the stand-down learnt the call's cached answer and put back what the earlier
# measure had set.
NO_ANSWER_LIFTED_PATCH = "restore-over-no-answer-settles-it"


class OverlapHandoff(LeverCalls):
    """Measures stacked on the same settings, within an incident and between incidents."""

    def _stacked_on(
        self, record: StepRecord, later: list[str], *, any_undo: bool = False
    ) -> list[StepRecord]:
        """Of the measures applied after `record`, those of its lever changing its settings
        (restored ones only, unless `any_undo`: an explicit undo sets values of its own)."""
        assert record.lever is not None
        args = LEVERS[record.lever].args
        mine = args.model_validate(record.args).targets()
        found = []
        for step_id in later:
            other, step = self._records[step_id], self._steps_by_id[step_id]
            if not isinstance(step, Step) or other.lever != record.lever:
                continue
            if step.undo is not None and not any_undo:
                continue
            if shared_settings(mine, args.model_validate(other.args).targets()):
                found.append(other)
        return found

    def _hands_back_unasked(self) -> bool:
        """Whether measures this incident takes back on its own hand their settings to a later
        incident, as a forced stand-down does (`UNASKED_HAND_BACK_PATCH`)."""
        return workflow.patched(UNASKED_HAND_BACK_PATCH)

    def _hand_back_restored_by_hand(
        self, record: StepRecord, failed: FailedUndo | None, applied_at: str | None, why: str
    ) -> None:
        """A person put back on the platform what the measure replaced: where its failed undo
        would have handed the settings to a later incident, that incident is told, as a retried
        undo tells it, and puts its own measure back."""
        if failed is None or applied_at is None or record.lever is None:
            return
        if not (failed.final_state in ("expired", "dormant") or failed.hand_back):
            return
        step = self._steps_by_id[record.id]
        if not isinstance(step, Step) or step.undo is not None or not LEVERS[step.do].reversible:
            return  # no restore of the previous state, so nothing a later incident holds
        if workflow.patched(BY_HAND_HAND_BACK_PATCH):
            restore = record.previous or {}
            self._background(
                self._reassert_later(record, applied_at, why, restore, restacked=False)
            )

    def _hand_back_reason(self) -> str:
        """What a stand-down's hand-back tells the later incident."""
        if self._stand_down is None or self._stand_down.force:
            return "stood down (forced)"
        return f"stood down ({self._stand_down.reason})"

    async def _reassert_later(
        self,
        record: StepRecord,
        applied_at: str,
        reason: str,
        restore: dict[str, Any],
        *,
        restacked: bool,
    ) -> None:
        """A measure this incident applied first has lapsed, been withdrawn or been taken back
        by a forced stand-down: its restore also lifted what a later incident put in force on
        the same settings. That incident is told, and puts its own back over this restore
        (`reassert`). One standing down or closed has
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
                        LEVER_TIME.set(None)  # its outcome arrives with the history
                if record.state not in ("expired", "dormant", "undone") or record.undos != undos:
                    return  # renewed or applied again meanwhile: nothing to restore
                await self._restore_for(
                    step, request.model_copy(update={"operation": f"{request.operation}-{again}"})
                )
        except FailureError as error:
            self._record("overlap.check_failed", step_id=record.id, data={"error": cause_of(error)})
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
                ReassertLaterRequest(
                    reassert=request,
                    applied_at=applied_at,
                    restacked=restacked,
                    in_force=[
                        r.id
                        for r in self._records.values()
                        if r.state in ("applied", "undoing", "undo_failed")
                    ],
                ),
                result_type=ReassertLaterOutcome,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=OVERLAP_RETRY,
            )
        except FailureError as error:
            self._record(
                "overlap.check_failed", step_id=request.step_id, data={"error": cause_of(error)}
            )
            return None
        LEVER_TIME.set(began + timedelta(seconds=outcome.elapsed_s))
        if outcome.unresolved:
            self._record(
                "overlap.unresolved",
                step_id=request.step_id,
                data=present(
                    incidents=outcome.unresolved,
                    reason=outcome.why_unresolved,
                    lifted=outcome.lifted,
                ),
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

    @workflow.update(name=LIFTED_UPDATE)
    def lifted(self, notice: LiftedNotice) -> None:
        """An earlier incident's restore lifted these measures and putting them back is left to
        commanders: they are marked, so this incident's status and console say they no longer
        hold on the settings they share with its measure."""
        marked = []
        named = [self._records[s] for s in sorted(set(notice.steps)) if s in self._records]
        for record in named:
            if (
                record.lever is not None
                and not is_notification(record.lever)
                and record.state == "applied"
            ):
                record.lifted_by = notice.incident_id
                marked.append(record.id)
        data = {
            "by": notice.incident_id,
            "step": notice.step_id,
            "reason": notice.reason,
            "steps": marked,
            "why": notice.why,
        }
        self._record("overlap.left_lifted", data=data | self._settle_no_answer(named, notice))

    def _settle_no_answer(
        self, named: list[StepRecord], told: ReassertRequest | LiftedNotice
    ) -> dict[str, list[str]]:
        """Of the measures an earlier restore went over, those whose apply had no answer are
        settled (NO_ANSWER_LIFTED_PATCH): named under `no_answer` in the event that says so."""
        maybe = [r for r in named if r.state == "failed" and r.uncertain]
        if not maybe or not workflow.patched(NO_ANSWER_LIFTED_PATCH):
            return {}
        for record in maybe:
            record.uncertain = False
            record.outcome = (
                f"restored over by {told.incident_id} ({told.step_id}): whatever its apply did "
                "is no longer in force"
            )
        return {"no_answer": [record.id for record in maybe]}

    @lifted.validator
    def _check_lifted(self, notice: LiftedNotice) -> None:
        # Standing down, its restores are under way (each puts back what it replaced).
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
            LEVER_TIME.set(self._handoff_time if queued else None)
            try:
                await self._reassert_now(request)
            finally:
                self._handoff_time = LEVER_TIME.get()

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
        data = {
            "by": request.incident_id,
            "step": request.step_id,
            "reason": request.reason,
            "steps": [record.id for record in lifted],
            "taken_back": [record.id for record in undoing + gone],
        }
        self._record("overlap.lifted", data=data | self._settle_no_answer(named, request))
        for record in undoing:
            self._restore_after[record.id] = request
        for record in gone:
            if record.state == "undo_failed" and record.failed_undo is not None:
                # The earlier restore goes over it: its own restore would put that measure back.
                record.failed_undo.overwritten_by = f"{request.incident_id} ({request.step_id})"
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
            if not self._called_for(step):
                self._make_dormant(record)  # de-escalated meanwhile: stays taken back
                continue
            self._putting_back.add(record.id)
            try:
                applied = await self._apply_step(
                    step, hold_until=until, put_back=request.incident_id
                )
            finally:
                self._putting_back.discard(record.id)
                self._handoff_time = LEVER_TIME.get()
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
            data["error"] = cause_of(error)
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
