"""Steps held off the sequence (interpreter v7). A step waiting for its approval holds back only
itself and the later steps that change some of the same settings with the same lever: the
sequence starts it in the background and goes on, so an escalation meanwhile is told and applied
at once. A later step on its settings waits for it (applied first, it would be overridden by the
looser earlier one once approved). Once the incident has failed, a held step starts nothing, as
the sequence does not."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.incident import StepRecord
    from workflows.levers import LEVERS, is_notification, shared_settings
    from workflows.playbook import Step
    from workflows.substitution import substitute

from workflows.incident_run import AnyStep, IncidentRun


class HeldSteps(IncidentRun):
    """Which steps run off the sequence, and what each waits for."""

    async def _run_or_hold(self, step: AnyStep) -> bool:
        """Run a step of the sequence, or (v7) start it off the sequence when it must wait: for
        its approval, or for an earlier step on the same settings that is waiting. False = it
        failed and the playbook must stop."""
        if self._version() >= 7 and self._must_hold(step):
            self._hold(step)
            return True
        return await self._run_top_step(step)

    def _must_hold(self, step: AnyStep) -> bool:
        levers = self._levers_of(step)
        if not self._holding and all(one.approval is None for one in levers):
            return False  # the common case, decided without evaluating conditions
        return self._eligible(step) and any(
            one.approval is not None or self._behind(one) for one in levers
        )

    def _rehold(self) -> None:
        """A continued run: hold again what the run before held (the rest of what it had started
        off the sequence, `_catch_up` resumes)."""
        for step in self._top[: self._cursor]:
            if self._waiting_again(step) and self._must_hold(step):
                self._reopen(step)
                self._hold(step)

    def _hold(self, step: AnyStep) -> None:
        self._holding.add(step.id)
        record = self._records[step.id]
        if (
            isinstance(step, Step)
            and step.approval
            and record.state != "awaiting_approval"
            and not self._behind(step)
        ):
            self._ask_approval(step, record)  # now: the trail shows it before the next steps

        async def held() -> None:
            try:
                if not await self._run_top_step(step):
                    self._fail(step.id)
            finally:
                self._holding.discard(step.id)

        self._background(held())

    def _behind(self, step: Step) -> str | None:
        """The earlier step held off the sequence that changes some of the same settings as
        this one, if any: this one must not go on first (the later of two measures on the same
        settings is the one in force)."""
        if not self._holding or is_notification(step.do):
            return None
        for earlier in self._top[: self._place[self._parent_of(step).id]]:
            if earlier.id in self._holding and any(
                self._same_settings(step, other) for other in self._levers_of(earlier)
            ):
                return earlier.id
        return None

    def _same_settings(self, step: Step, other: Step) -> bool:
        """Whether two lever steps change some of the same settings (the same lever)."""
        return other.do == step.do and shared_settings(self._settings(step), self._settings(other))

    def _settings(self, step: Step) -> frozenset[str]:
        found = self._targets.get(step.id)
        if found is None:
            args = LEVERS[step.do].args.model_validate(substitute(step.with_, self._context))
            found = self._targets[step.id] = args.targets()
        return found

    def _levers_of(self, step: AnyStep) -> list[Step]:
        kind = self._records[step.id].kind
        if kind == "parallel":
            return list(step.parallel)  # type: ignore[union-attr]
        return [step] if kind == "lever" else []  # type: ignore[list-item]

    def _stopped_by_failure(self, step: Step) -> bool:
        """v7: a step held off the sequence starts nothing once the incident has failed, as the
        sequence does not."""
        return self._state == "failed" and self._parent_of(step).id in self._holding

    async def _waited_turn(self, step: Step, record: StepRecord) -> bool:
        """Wait while an earlier held step on the same settings is unsettled (each one in turn,
        in the trail as `step.waiting`); False = the step must not go on (stood down, or no
        longer called for: then dormant)."""
        if self._behind(step) is None:
            return True
        record.state = "pending"  # called for at this level (it may have been dormant)
        while (earlier := self._behind(step)) is not None and self._stand_down is None:
            record.outcome = f"waits for {earlier}, which changes the same settings"
            self._record("step.waiting", step_id=step.id, data={"for": earlier})
            await self._wait(lambda: self._stand_down is not None or self._behind(step) != earlier)
        record.outcome = None
        if self._stand_down is not None:
            return False
        if not self._eligible(step):
            self._make_dormant(record)
            return False
        return True
