"""Time and levels in an incident: measures lapse at their expiry, reviews fall due (and what a
missed one does), and a change of level runs the steps it now calls for or withdraws the
measures it no longer does."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.audit import present
    from workflows.durations import parse_duration
    from workflows.incident import LevelChangeRecord, StandDownRequest, StepRecord
    from workflows.playbook import ParallelStep

from workflows.incident_run import AnyStep, IncidentRun, iso, parse_iso

# The actor of what an incident does by itself (escalating, or standing down, on a missed review).
SYSTEM = "system"
# What catch-up (v7) picks up among the steps the sequence has passed: held back by the level or
# a condition, waiting for an approval, or waiting for an earlier step on the same settings.
WAITING_V7 = ("pending", "dormant", "awaiting_approval")


class Supervision(IncidentRun):
    """The supervisor coroutine, and what a change of level sets off."""

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
                and parse_iso(record.expires_at) <= now
            ) and self._state != "standing_down":
                await self._undo(record, final_state="expired", reason="expiry reached")
        if self._review_due and self._state in ("running", "failed"):
            assert self._pb.reviews is not None
            grace = parse_duration(self._pb.reviews.grace)
            if now >= parse_iso(self._review_due) + grace:
                self._review_missed()

    def _next_deadline(self) -> datetime | None:
        if self._state not in ("running", "failed"):
            return None
        moments = [
            parse_iso(r.expires_at)
            for r in self._records.values()
            if r.state == "applied" and r.expires_at
        ]
        if self._review_due and self._pb.reviews and self._state in ("running", "failed"):
            moments.append(parse_iso(self._review_due) + parse_duration(self._pb.reviews.grace))
        return min(moments) if moments else None

    def _review_missed(self) -> None:
        assert self._pb.reviews is not None
        self._reviews_missed += 1
        action = self._pb.reviews.on_missed
        missed = self._review_due
        self._review_due = iso(self._clock() + parse_duration(self._pb.reviews.every))
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
            self._stood_down_unasked = True
            self._record("stand_down.requested", actor=SYSTEM, data={"reason": "review missed"})

    # --- levels -------------------------------------------------------------------------------
    def _set_level(
        self, level: str | None, *, actor: str, reason: str
    ) -> asyncio.Task[None] | None:
        """Change the level; the withdrawal a de-escalation starts (None for an escalation)."""
        before = self._pb.level_rank(self._level)
        self._level = level
        self._publish()
        change = "level.escalated" if self._pb.level_rank(level) > before else "level.de_escalated"
        self._level_history.append(
            LevelChangeRecord(level=level, at=iso(self._clock()), actor=actor, reason=reason)
        )
        self._record(change, actor=actor, data={"level": level, "reason": reason})
        if change == "level.escalated":
            self._background(self._catch_up())
            return None
        return self._background(self._withdraw_above_level())

    def _level_above(self) -> str | None:
        """The next level up; None at the highest (or without levels)."""
        rank = self._pb.level_rank(self._level) + 1
        return self._pb.levels[rank] if rank < len(self._pb.levels) else None

    def _escalate_by_system(self, reason: str) -> None:
        if (above := self._level_above()) is not None:
            self._set_level(above, actor=SYSTEM, reason=reason)

    async def _catch_up(self) -> None:
        """After escalation: run the steps already passed that the new level makes eligible."""
        for step in self._top[: self._cursor]:
            if self._stand_down is not None or self._draining:
                return
            if step.id in self._holding:
                continue  # already under way off the sequence
            if not self._waiting_again(step):
                continue
            self._reopen(step)
            if not await self._run_or_hold(step) and self._fail(step.id):
                return

    def _waiting(self) -> tuple[str, ...]:
        return WAITING_V7 if self._version() >= 7 else ("dormant", "awaiting_approval")

    def _waiting_again(self, step: AnyStep) -> bool:
        """Whether a step the sequence has passed is to be run again, or resumed: held back by
        the level or a condition, or waiting for an approval (v7: or for an earlier step on the
        same settings), itself or in a branch."""
        waiting = self._waiting()
        if self._records[step.id].state in waiting:
            return True
        return isinstance(step, ParallelStep) and any(
            self._records[b.id].state in waiting for b in step.parallel
        )

    def _reopen(self, step: AnyStep) -> None:
        """A parallel step run again for a branch of it: running again, whatever it was."""
        record = self._records[step.id]
        if isinstance(step, ParallelStep) and record.state not in self._waiting():
            record.state = "running"

    def _no_longer_called_for(self) -> Iterator[StepRecord]:
        """The measures in force that the level (or a condition) no longer calls for, newest
        first: what a de-escalation withdraws. Each is checked as it is reached, so a level
        changed meanwhile (while an earlier one is withdrawn) counts."""
        for step_id in reversed(list(self._applied_order)):
            if not self._called_for(self._steps_by_id[step_id]):
                yield self._records[step_id]

    async def _withdraw_above_level(self) -> None:
        """After de-escalation: undo, newest first, the measures the level no longer calls for."""
        for record in self._no_longer_called_for():
            await self._undo(record, final_state="dormant", reason=f"level is now {self._level}")
