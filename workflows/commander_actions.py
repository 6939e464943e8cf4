"""What commanders do to a running incident, as Temporal Updates: stand down, approve or reject a
step, escalate or de-escalate, renew a measure, confirm a review, add a note. Each validator
refuses a bad request before it is recorded (the API shows its message)."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.durations import parse_duration, parse_renewal
    from workflows.incident import (
        Approver,
        ApproveRequest,
        IncidentStatus,
        LevelRequest,
        Note,
        NoteRequest,
        RejectRequest,
        RenewRequest,
        RestoreRequest,
        ReviewRequest,
        StandDownRequest,
        StepRecord,
    )
    from workflows.levers import is_notification
    from workflows.limits import MAX_NAME_CHARS, MAX_NOTE_CHARS, MAX_TEXT_CHARS
    from workflows.playbook import ParallelStep, Step, describe_approval

from workflows.incident_run import (
    RESTORE_RETRY,
    IncidentRun,
    bad_argument,
    check_texts,
    invalid_request,
    iso,
    parse_iso,
)

# A lapsed measure renewed is applied again holding until the renewal's end, and its step.applied
# says so (it said the playbook's expiry from then). Recorded only where that happens.
RENEWED_REAPPLY_PATCH = "renewed-measure-applied-until-renewal"
# A de-escalation answers once the measures the new level no longer calls for are withdrawn, or
# one of them errs or is refused (it answered at once, before any was tried, so a withdrawal
# that failed for good went unreported). Recorded only where a de-escalation withdraws one.
DE_ESCALATION_WITHDRAWS_PATCH = "de-escalation-answers-after-withdrawal"
# A lapsed measure renewed under later steps' measures on its settings still in force is applied
# under them, as an escalation's catch-up is (applied over them, its looser values were in force
# while they said applied). Recorded only where that happens.
RENEWED_UNDER_PATCH = "renewed-measure-applied-under-later-ones"


class CommanderActions(IncidentRun):
    """The Updates a commander sends, each with its validator."""

    @workflow.update
    async def stand_down(self, request: StandDownRequest) -> IncidentStatus:
        """Undo every applied measure in reverse order, close the incident, answer its status."""
        self._stand_down = request
        forced = {"forced": True} if request.force else {}  # unforced events hash as before
        self._record(
            "stand_down.requested", actor=request.actor, data={"reason": request.reason, **forced}
        )
        if self._since_v3("stand-down-answers-after-audit"):
            # Answer once the audit trail is complete, so what the commander sees is on record.
            # A close held for a failed undo's restore answers once that is on record.
            await self._wait(lambda: self._audit_flushed or self._held_on_record())
        else:  # incidents started before this change answered at close
            await self._wait(lambda: self._state == "closed" or self._holding_close)
        return self._status()

    @stand_down.validator
    def _check_stand_down(self, request: StandDownRequest) -> None:
        check_texts(request.actor, ("reason", request.reason, MAX_TEXT_CHARS))
        if self._stand_down is not None:
            # Asked for but not yet under way (two stand-downs at once): it is standing down.
            now = "standing down" if self._state == "running" else self._state.replace("_", " ")
            raise invalid_request(f"incident is already {now}")

    @workflow.update
    def approve(self, request: ApproveRequest) -> StepRecord:
        record = self._records[request.step_id]
        record.approvals.append(
            Approver(
                actor=request.actor,
                role=request.role,
                at=iso(self._clock()),
                comment=request.comment,
            )
        )
        self._record(
            "approval.given",
            actor=request.actor,
            step_id=request.step_id,
            data={"role": request.role, "comment": request.comment, "count": len(record.approvals)},
        )
        if record.quorum is not None and len(record.approvals) >= record.quorum:
            # The sequence runs the step as soon as this handler returns, in the same task: say
            # so, rather than answer "awaiting_approval" with its quorum met.
            return record.model_copy(update={"state": "running"})
        return record

    @approve.validator
    def _check_approve(self, request: ApproveRequest) -> None:
        check_texts(
            request.actor,
            ("role", request.role, MAX_NAME_CHARS),
            ("comment", request.comment, MAX_TEXT_CHARS),
        )
        step, record = self._awaiting(request.step_id)
        assert step.approval is not None
        if request.role not in step.approval.roles:
            raise bad_argument(
                f"role {request.role!r} cannot approve {step.id} "
                f"(roles: {', '.join(step.approval.roles)})"
            )
        # Case-blind: a token is never issued to ROOT beside root (store.tokens), and the CLI's
        # direct --actor must not make one person two approvers either.
        same = next(
            (a for a in record.approvals if a.actor.casefold() == request.actor.casefold()), None
        )
        if same is not None:
            spelt = "" if same.actor == request.actor else f" (as {same.actor})"
            raise invalid_request(f"{request.actor} has already approved {step.id}{spelt}")
        # Approvals sent at once reach the workflow together: each one after the quorum would
        # be recorded, though the step runs on the quorum (validators see the earlier handlers').
        if len(record.approvals) >= step.approval.quorum:
            raise invalid_request(f"{step.id} has its {step.approval.quorum} approvals already")
        if step.approval.every_role:
            held = {a.role for a in record.approvals}
            missing = [role for role in dict.fromkeys(step.approval.roles) if role not in held]
            left = step.approval.quorum - len(record.approvals)
            if request.role not in missing and left <= len(missing):
                needs = describe_approval(missing, len(missing), every_role=True)
                raise invalid_request(
                    f"{step.id} still needs approval by {needs}: another {request.role} does "
                    "not count"
                )

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
        check_texts(
            request.actor,
            ("role", request.role, MAX_NAME_CHARS),
            ("reason", request.reason, MAX_TEXT_CHARS),
        )
        step, _ = self._awaiting(request.step_id)
        assert step.approval is not None
        if request.role not in step.approval.roles:
            raise bad_argument(f"role {request.role!r} cannot reject {step.id}")

    def _awaiting(self, step_id: str) -> tuple[Step, StepRecord]:
        self._check_open()
        step = self._steps_by_id.get(step_id)
        if not isinstance(step, Step) or step.approval is None:
            raise bad_argument(f"step {step_id!r} does not exist or needs no approval")
        record = self._records[step_id]
        if record.state != "awaiting_approval":
            now = f"{record.state}: {record.outcome}" if record.outcome else record.state
            raise invalid_request(f"step {step_id} is not awaiting approval (it is {now})")
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
    async def de_escalate(self, request: LevelRequest) -> IncidentStatus:
        target = request.to_level or self._pb.levels[self._pb.level_rank(self._level) - 1]
        withdrawal = self._set_level(target, actor=request.actor, reason=request.reason)
        withdrawn = list(self._no_longer_called_for())
        if withdrawal is not None and withdrawn and workflow.patched(DE_ESCALATION_WITHDRAWS_PATCH):
            # Not for the full retries of an undo the platform errs on (minutes): its error shows.
            await self._wait(
                lambda: (
                    withdrawal.done()
                    or any(r.state == "undoing" and r.error is not None for r in withdrawn)
                )
            )
        return self._status()

    @de_escalate.validator
    def _check_de_escalate(self, request: LevelRequest) -> None:
        self._check_level_change(request, up=False)

    def _may_run_at(self, level: str) -> bool:
        """Whether a step the sequence has passed waits and is called for at `level` (its level
        and its condition): what an escalation's catch-up could still run once it has failed."""
        for step in self._top[: self._cursor]:
            if not self._waiting_again(step) or not self._eligible(step, at=level):
                continue
            branches = step.parallel if isinstance(step, ParallelStep) else [step]
            if any(self._eligible(branch, at=level) for branch in branches):
                return True
        return False

    def _check_level_change(self, request: LevelRequest, *, up: bool) -> None:
        check_texts(request.actor, ("reason", request.reason, MAX_TEXT_CHARS))
        self._check_open()
        levels, rank = self._pb.levels, self._pb.level_rank(self._level)
        if not levels:
            raise bad_argument(f"playbook {self._pb.playbook} has no levels")
        if request.to_level is not None:
            if request.to_level not in levels:
                raise bad_argument(
                    f"unknown level {request.to_level!r} (levels: {', '.join(levels)})"
                )
            target = levels.index(request.to_level)
            if (up and target <= rank) or (not up and target >= rank):
                word = "above" if up else "below"
                raise invalid_request(
                    f"{request.to_level} is not {word} the current level {self._level}"
                )
        elif up and rank + 1 >= len(levels):
            raise invalid_request(f"already at the highest level ({self._level})")
        elif not up and rank <= 0:
            raise invalid_request(f"already at the lowest level ({self._level})")
        to = request.to_level or levels[rank + 1 if up else rank - 1]
        if up and self._state == "failed" and not self._may_run_at(to):
            # Only steps passed before the failure run at a new level: with none of them able
            # to, "escalated" would promise measures that never come.
            raise invalid_request(
                f"incident failed at {self._failed_step()}: no step after it runs, and none "
                f"before it waits for {to} or below, so escalating would apply nothing; stand "
                "it down and trigger again"
            )

    @workflow.update
    def renew(self, request: RenewRequest) -> StepRecord:
        record = self._records[request.step_id]
        until = iso(self._clock() + parse_duration(request.duration))
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
        if workflow.patched(RENEWED_REAPPLY_PATCH):
            lifted = self._in_force_after(step)
            if lifted and workflow.patched(RENEWED_UNDER_PATCH):
                await self._apply_under(step, lifted, hold_until=until)
            else:
                await self._apply_step(step, hold_until=until)
            return
        # Recorded before the patch: step.applied named the playbook's expiry, then the record
        # took the renewal's.
        if await self._apply_step(step):
            record = self._records[step.id]
            if record.state == "applied":
                record.expires_at = until
                self._wake = True

    @renew.validator
    def _check_renew(self, request: RenewRequest) -> None:
        check_texts(request.actor, ("reason", request.reason, MAX_TEXT_CHARS))
        self._check_open()
        record = self._records.get(request.step_id)
        if record is None or record.kind != "lever":
            raise bad_argument(f"no measure {request.step_id!r} in this incident")
        step = self._steps_by_id[request.step_id]
        assert isinstance(step, Step)
        if step.expires_after is None:
            raise bad_argument(
                f"measure {request.step_id} has no expiry to renew (no expires_after)"
            )
        if record.state not in ("applied", "expired"):
            raise invalid_request(
                f"measure {request.step_id} is {record.state}: only an applied or lapsed "
                "measure can be renewed"
            )
        if record.state == "expired" and not self._called_for(step):
            raise invalid_request(
                f"measure {request.step_id} lapsed and the incident's level or conditions no "
                "longer call for it"
            )
        try:
            duration = parse_renewal(request.duration)
        except ValueError as error:
            raise bad_argument(str(error)) from None
        # Renewing pushes the lapse out; one that would bring it forward is refused, not taken
        # for a shorter renewal (the measure would lapse sooner than the commander expects).
        if record.state == "applied" and record.expires_at is not None:
            held_until = parse_iso(record.expires_at)
            if held_until >= self._clock() + duration:
                raise invalid_request(
                    f"measure {request.step_id} already holds until "
                    f"{held_until:%Y-%m-%d %H:%M:%S} UTC, later than {request.duration} from now: "
                    "a renewal only pushes the expiry out"
                )

    def _held_on_record(self) -> bool:
        return self._holding_close and not self._audit.pending and not self._pump_busy

    @workflow.update
    async def restore(self, request: RestoreRequest) -> StepRecord:
        """A measure whose undo failed for good: retry the undo on the platform, or record that
        a person restored the setting there by hand. A stand-down waiting for it closes once
        nothing is left unrestored."""
        record = self._records[request.step_id]
        failed, error = record.failed_undo, record.error
        # It ends as its failed undo would have: a lapse or a withdrawal may be renewed or
        # applied again, and hands the settings back to a later incident, as a forced
        # stand-down's undo does.
        final = "undone" if failed is None else failed.final_state
        # What a stand-down makes of a withdrawn measure (once its restore has handed back).
        settled = "undone" if final == "dormant" and self._state == "standing_down" else final
        if request.by_hand:
            applied_at = record.held_since
            # What it replaced is no longer what a later incident's measure should go over: the
            # retry is refused then, and nothing is handed back.
            stale = (failed is not None and failed.overwritten_by) or self._taken_back_over(record)
            now = iso(self._clock())
            record.state, record.undone_at, record.expires_at = settled, now, None  # type: ignore[assignment]
            record.error, record.failed_undo = None, None
            record.outcome = f"restored by hand ({request.actor}): {request.reason}"
            self._record(
                "step.restored_by_hand",
                actor=request.actor,
                step_id=record.id,
                data={"lever": record.lever, "reason": request.reason, "error": error},
                at=now,
            )
            if not stale:
                why = f"restored by hand ({request.actor}): {request.reason}"
                self._hand_back_restored_by_hand(record, failed, applied_at, why)
            return record
        self._record(
            "undo.retried",
            actor=request.actor,
            step_id=record.id,
            data={"reason": request.reason, "error": error},
        )
        if record.uncertain:  # its apply never had an answer: learn what it replaced first
            if not await self._learn_outcome(record):
                return record
        else:
            self._reinstate(record)
        await self._undo(
            record,
            final_state=final,
            reason=f"retried: {request.reason}",
            hand_back=failed is not None and failed.hand_back,
            retry=RESTORE_RETRY,
        )
        if record.state != "undo_failed":
            record.failed_undo = None
            if record.state == "dormant":
                record.state = settled  # type: ignore[assignment]
            ended = self._clock()
            if self._restored_time is None or ended > self._restored_time:
                self._restored_time = ended
        return record

    def _reinstate(self, record: StepRecord) -> None:
        """Put a measure whose undo failed back among those in force, in the order they were
        applied, so that taking it back again first lifts what was applied over it."""
        since, order = record.held_since or "", self._applied_order
        later = (
            at for at, other in enumerate(order) if (self._records[other].held_since or "") > since
        )
        order.insert(next(later, len(order)), record.id)
        record.state, record.error = "applied", None

    def _taken_back_over(self, record: StepRecord) -> str | None:
        """An older measure on the same settings taken back after this one's undo failed: its
        restore put back what was there before it, so this one's own restore would now put the
        older measure's values back on the platform."""
        failed = record.failed_undo
        if failed is None:
            return None
        since = record.held_since or ""
        for other in self._records.values():
            ended = other.undone_at
            if (
                other.id == record.id
                or other.lever != record.lever
                or other.state not in ("undone", "expired", "dormant")
                or ended is None
                or parse_iso(ended) < parse_iso(failed.at)
                or (other.held_since or "") > since
            ):
                continue
            if self._stacked_on(other, [record.id]):
                return other.id
        return None

    @restore.validator
    def _check_restore(self, request: RestoreRequest) -> None:
        check_texts(request.actor, ("reason", request.reason, MAX_TEXT_CHARS))
        if self._state == "closed":
            raise invalid_request("incident is closed")
        record = self._records.get(request.step_id)
        step = self._steps_by_id.get(request.step_id)
        if record is None or not isinstance(step, Step) or is_notification(step.do):
            raise bad_argument(f"no measure {request.step_id!r} in this incident")
        if self._sends_notice(request.step_id):
            raise bad_argument(
                f"{request.step_id} is taken back by sending a notice: nothing on the platform to "
                "restore"
            )
        # Being taken back: an undo under way, or a retry lifting what was applied over it.
        busy = [
            r.id
            for r in self._records.values()
            if r.state == "undoing" or (r.state == "applied" and r.failed_undo is not None)
        ]
        if request.step_id in busy:
            raise invalid_request(f"measure {request.step_id} is being taken back already")
        if record.state != "undo_failed":
            raise invalid_request(
                f"measure {request.step_id} is {record.state}: only a measure whose undo failed "
                "can be restored"
            )
        if busy:  # one at a time: two restores on shared settings could land in either order
            raise invalid_request(
                f"{busy[0]} is being taken back: restore {request.step_id} once that is done"
            )
        if (self._state == "standing_down" and not self._holding_close) or self._failure_undos:
            raise invalid_request(
                f"the incident is still taking its measures back: restore {request.step_id} once "
                "that is done"
            )
        failed = record.failed_undo
        if (
            failed is not None
            and failed.final_state == "dormant"
            and self._state != "standing_down"
            and self._called_for(step)
        ):
            raise invalid_request(
                f"the incident's level calls for {request.step_id} again, and its withdrawal "
                "failed, so it may still be in force, as the level wants: restore it once the "
                "incident stands down"
            )
        if not request.by_hand and failed is not None and failed.overwritten_by:
            raise invalid_request(
                f"{failed.overwritten_by} handed its settings back over {request.step_id} while "
                "this undo failed, so retrying it could put that incident's values back: check "
                "the platform, and record the restore by hand"
            )
        if not request.by_hand and (over := self._taken_back_over(record)) is not None:
            raise invalid_request(
                f"{over}, on the same settings, was taken back after the undo of "
                f"{request.step_id} failed, so retrying it would put {over}'s values back: check "
                "the platform, and record the restore by hand"
            )

    @workflow.update
    def confirm_review(self, request: ReviewRequest) -> IncidentStatus:
        assert self._pb.reviews is not None
        self._review_due = iso(self._clock() + parse_duration(self._pb.reviews.every))
        self._record(
            "review.confirmed",
            actor=request.actor,
            data={"note": request.note, "next_due": self._review_due},
        )
        self._wake = True
        return self._status()

    @confirm_review.validator
    def _check_confirm_review(self, request: ReviewRequest) -> None:
        check_texts(request.actor, ("note", request.note, MAX_TEXT_CHARS))
        self._check_open()
        if self._pb.reviews is None:
            raise bad_argument(f"playbook {self._pb.playbook} has no reviews")

    @workflow.update
    def add_note(self, request: NoteRequest) -> IncidentStatus:
        self._notes.append(Note(actor=request.actor, text=request.text, at=iso(self._clock())))
        self._record("note.added", actor=request.actor, data={"text": request.text})
        return self._status()

    @add_note.validator
    def _check_add_note(self, request: NoteRequest) -> None:
        check_texts(request.actor, ("text", request.text, MAX_NOTE_CHARS))
        if self._state == "closed":
            raise invalid_request("incident is closed")
