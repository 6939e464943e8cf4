"""Edges of `on_failure: undo` while another lever call is still under way (patch
`failure-stops-at-once-and-settles-calls`), end to end on a time-skipping Temporal server.

A lever step that fails for good with `on_failure: stop` or `undo` fails the incident at that
moment (`incident.failed` names it, right after its `step.failed`), so nothing new starts: a step
awaiting its approval is skipped, `not run: the incident failed`. With `undo` the lever calls
already under way (a sibling branch, the sequence's step retrying) land first; then every measure
in force is taken back, newest first, each `taken back: <step> failed (on_failure: undo)`; a
notification cannot be unsent and is kept, one with an `undo:` of its own sends that once.
Escalating the failed incident still runs the new level's steps (a commander's decision). These
tests push at the edges: the landing call failing, more than one call landing, a notification
landing, a landing step with an `undo:` or an expiry, the other `on_failure` modes, overlapping
settings, commander actions and a continue-as-new around it. Each checks the step states, the
platform sandbox's real settings, the order of its operations and the audit trail. The main
cases: test_failure_undo.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from engine.errors import IncidentConflict
from tests.helpers import assert_eventually
from tests.workflows.lab import (
    TRANSIENT,
    Lab,
    approve,
    history_length,
    kinds,
    level,
    more_runs,
    operations,
    settings_of,
    step,
    step_states,
)
from workflows.audit import AuditEvent
from workflows.crisis import CrisisWorkflow
from workflows.incident import NoteRequest, RenewRequest

WHY = "surge failed (on_failure: undo)"
TAKEN = f"taken back: {WHY}"


def playbook(branches: str, *, before: str = "") -> str:
    """A threshold applied first, then a parallel step whose `surge` branch fails with
    on_failure undo beside the given branches."""
    return f"""
steps:{before}
  - id: base
    do: detection.set_threshold
    with: {{classifier: racial_hatred, threshold: 0.4}}
  - id: both
    parallel:
      - id: surge
        do: moderation.surge
        with: {{queue: hate, extra_reviewers: 5}}
        on_failure: undo{branches}
"""


CUT = """
      - id: cut
        do: recommender.throttle
        with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.5}"""


def states_are(lab: Lab, incident_id: str, /, **expected: str) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        status = await lab.status(incident_id)
        now = {"incident": status.state, **step_states(status)}
        assert expected == {k: now[k] for k in expected}, now

    return check


def undone_events(events: list[AuditEvent], step_id: str) -> list[AuditEvent]:
    return [e for e in events if e.kind == "step.undone" and e.step_id == step_id]


def trail(events: list[AuditEvent], *wanted: str) -> list[tuple[str, str | None]]:
    """The audit events of these kinds, in order, as (kind, step)."""
    return [(e.kind, e.step_id) for e in events if e.kind in wanted]


LANDING = ("step.applied", "step.failed", "incident.failed", "step.undone")


# --- the landing call ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["stop", "continue", "undo"])
async def test_a_landing_call_that_fails_for_good_is_not_taken_back(lab: Lab, mode: str) -> None:
    """surge is refused at once (on_failure: undo) and fails the incident; the sibling's call
    under way is refused by the platform once it lands (whatever its own on_failure): it is
    failed, not undone (no restore is sent for a measure never applied), and does not fail the
    incident again. Only then is base taken back, once, and stand-down closes the incident with
    the platform as before."""
    before = await lab.platform()
    await lab.sandbox.fault(path_prefix="/moderation", status=400, times=1)
    await lab.sandbox.fault(path_prefix="/recommender", status=400, latency_ms=1500, times=1)
    incident = await lab.trigger(playbook(CUT + f"\n        on_failure: {mode}"))
    status = await lab.settle(
        incident,
        {"base": "undone", "both": "failed", "surge": "failed", "cut": "failed"},
        state="failed",
    )
    cut = step(status, "cut")
    assert (0, None) == (cut.undos, cut.outcome), cut
    assert "400" in (cut.error or "")
    # Taken back by the failure that waited for cut; with on_failure undo cut's own failure,
    # which finds no call under way, takes base back first (in the same workflow task).
    why = "cut failed (on_failure: undo)" if mode == "undo" else WHY
    assert f"taken back: {why}" == step(status, "base").outcome
    assert [("base", "apply-1"), ("base", "undo-1")] == operations(await lab.platform())
    events = await lab.audit(incident, until="step.undone")
    assert [] == undone_events(events, "cut")
    assert [why] == [e.data["reason"] for e in undone_events(events, "base")]
    # the incident failed with surge at once; base was taken back only once cut had landed
    assert [
        ("step.applied", "base"),
        ("step.failed", "surge"),
        ("incident.failed", "surge"),
        ("step.failed", "cut"),
        ("step.undone", "base"),
    ] == trail(events, *LANDING)

    closed = await lab.incidents.stand_down(incident, actor="bob", reason="give up")
    assert "closed" == closed.state
    assert {"base": "undone", "surge": "failed", "cut": "failed"} == {
        k: v for k, v in step_states(closed).items() if k in ("base", "surge", "cut")
    }
    state = await lab.platform()
    assert settings_of(before) == settings_of(state)
    assert [("base", "apply-1"), ("base", "undo-1")] == operations(state)
    assert lab.store.verify(incident).ok


async def test_two_calls_under_way_when_a_third_branch_fails_are_both_taken_back(
    lab: Lab,
) -> None:
    """Two siblings are slow when the third is refused: the failure waits for both to land, then
    takes back every measure once, newest first (streams, cut, base), with the failed branch
    named; stand-down sends no second restore."""
    before = await lab.platform()
    await lab.sandbox.fault(path_prefix="/moderation", status=400, times=1)
    await lab.sandbox.fault(path_prefix="/recommender", status=0, latency_ms=1000, times=1)
    await lab.sandbox.fault(path_prefix="/livestream", status=0, latency_ms=2000, times=1)
    incident = await lab.trigger(
        playbook(
            CUT
            + """
      - id: streams
        do: livestream.restrict
        with: {region: GB, block_new_streams: true}"""
        )
    )
    status = await lab.settle(
        incident,
        {"base": "undone", "surge": "failed", "cut": "undone", "streams": "undone"},
        state="failed",
    )
    for taken in ("streams", "cut", "base"):
        assert TAKEN == step(status, taken).outcome
    state = await lab.platform()
    assert settings_of(before) == settings_of(state)
    ops = operations(state)
    assert [
        ("base", "apply-1"),
        ("cut", "apply-1"),
        ("streams", "apply-1"),
        ("streams", "undo-1"),
        ("cut", "undo-1"),
        ("base", "undo-1"),
    ] == ops
    events = await lab.audit(incident, until="step.undone", count=3)
    for taken in ("streams", "cut", "base"):
        assert [WHY] == [e.data["reason"] for e in undone_events(events, taken)]
    assert [
        ("step.applied", "base"),
        ("step.failed", "surge"),
        ("incident.failed", "surge"),
        ("step.applied", "cut"),
        ("step.applied", "streams"),
        ("step.undone", "streams"),
        ("step.undone", "cut"),
        ("step.undone", "base"),
    ] == trail(events, *LANDING)

    closed = await lab.incidents.stand_down(incident, actor="bob", reason="give up")
    assert "closed" == closed.state
    assert ops == operations(await lab.platform())  # nothing undone twice
    assert lab.store.verify(incident).ok


async def test_a_notification_landing_after_the_failure_is_kept(lab: Lab) -> None:
    """A message cannot be unsent: the webhook branch that lands after its sibling failed is
    kept when the failure takes back what is in force (sent once, nothing sent to take it
    back), base is taken back after it landed, and stand-down closes as usual."""
    before = await lab.platform()
    await lab.sandbox.fault(path_prefix="/moderation", status=400, times=1)
    await lab.sandbox.fault(path_prefix="/notify", status=0, latency_ms=1500, times=1)
    incident = await lab.trigger(
        playbook(
            """
      - id: tell
        do: notify.webhook
        with: {to: regulator, message: "Crisis protocol activated"}"""
        )
    )
    status = await lab.settle(
        incident, {"base": "undone", "surge": "failed", "tell": "kept"}, state="failed"
    )
    assert (None, None) == (step(status, "tell").error, step(status, "tell").outcome)
    assert TAKEN == step(status, "base").outcome
    state = await lab.platform()
    assert ["Crisis protocol activated"] == [n["body"]["message"] for n in state["notifications"]]
    assert [("base", "apply-1"), ("tell", "apply-1"), ("base", "undo-1")] == operations(state)
    events = await lab.audit(incident, until="step.undone")
    assert [] == undone_events(events, "tell")
    assert [
        ("step.applied", "base"),
        ("step.failed", "surge"),
        ("incident.failed", "surge"),
        ("step.applied", "tell"),
        ("step.undone", "base"),
    ] == trail(events, *LANDING)

    closed = await lab.incidents.stand_down(incident, actor="bob", reason="give up")
    assert "kept" == step(closed, "tell").state
    state = await lab.platform()
    assert 1 == len(state["notifications"])
    assert [("base", "apply-1"), ("tell", "apply-1"), ("base", "undo-1")] == operations(state)
    assert settings_of(before) == settings_of(state)
    assert lab.store.verify(incident).ok


async def test_a_landing_step_with_an_undo_of_its_own_sends_it_once(lab: Lab) -> None:
    """The landing webhook has an `undo:` notice: once it has landed the failure takes it back
    (newest first, before base), which sends that notice, once; the stand-down does not send it
    again."""
    before = await lab.platform()
    await lab.sandbox.fault(path_prefix="/moderation", status=400, times=1)
    await lab.sandbox.fault(path_prefix="/notify", status=0, latency_ms=1500, times=1)
    incident = await lab.trigger(
        playbook(
            """
      - id: tell
        do: notify.webhook
        with: {to: regulator, message: "Crisis protocol activated"}
        undo:
          do: notify.webhook
          with: {to: regulator, message: "Crisis concluded; measures lifted"}"""
        )
    )
    status = await lab.settle(
        incident, {"base": "undone", "surge": "failed", "tell": "undone"}, state="failed"
    )
    for taken in ("tell", "base"):
        assert TAKEN == step(status, taken).outcome
    state = await lab.platform()
    sent = [n["body"]["message"] for n in state["notifications"]]
    assert ["Crisis protocol activated", "Crisis concluded; measures lifted"] == sent
    ops = [("base", "apply-1"), ("tell", "apply-1"), ("tell", "undo-1"), ("base", "undo-1")]
    assert ops == operations(state)
    assert settings_of(before) == settings_of(state)
    events = await lab.audit(incident, until="step.undone", count=2)
    assert ["tell", "base"] == [e.step_id for e in events if e.kind == "step.undone"]
    assert [WHY] == [e.data["reason"] for e in undone_events(events, "tell")]

    closed = await lab.incidents.stand_down(incident, actor="bob", reason="give up")
    assert ("undone", "undone") == (step(closed, "tell").state, step(closed, "base").state)
    state = await lab.platform()
    assert sent == [n["body"]["message"] for n in state["notifications"]]
    assert ops == operations(state)
    assert settings_of(before) == settings_of(state)
    assert lab.store.verify(incident).ok


async def test_a_landing_measure_with_an_expiry_does_not_lapse_after_it_is_taken_back(
    lab: Lab,
) -> None:
    """The landing measure has `expires_after`: the failure waits for it to land, then takes it
    back (before base, newest first); it then holds no expiry, nothing lapses when that time
    passes, and it cannot be renewed back into force."""
    before = await lab.platform()
    await lab.sandbox.fault(path_prefix="/moderation", status=400, times=1)
    await lab.sandbox.fault(path_prefix="/recommender", status=0, latency_ms=1500, times=1)
    incident = await lab.trigger(playbook(CUT + "\n        expires_after: 30m"))
    status = await lab.settle(
        incident, {"base": "undone", "surge": "failed", "cut": "undone"}, state="failed"
    )
    assert (None, TAKEN) == (step(status, "cut").expires_at, step(status, "cut").outcome)
    await lab.advance(timedelta(hours=1))
    status = await lab.sync(incident)
    assert "undone" == step(status, "cut").state
    with pytest.raises(Exception, match="only an applied or lapsed"):
        await lab.act(
            incident,
            CrisisWorkflow.renew,
            RenewRequest(step_id="cut", actor="carol", reason="keep it", duration="2h"),
        )
    state = await lab.platform()
    assert settings_of(before) == settings_of(state)
    ops = [("base", "apply-1"), ("cut", "apply-1"), ("cut", "undo-1"), ("base", "undo-1")]
    assert ops == operations(state)
    events = await lab.audit(incident, until="note.added")
    assert "step.expired" not in kinds(events)

    closed = await lab.incidents.stand_down(incident, actor="bob", reason="give up")
    assert "undone" == step(closed, "cut").state
    assert ops == operations(await lab.platform())
    assert lab.store.verify(incident).ok


# --- the other on_failure modes ------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["stop", "continue"])
async def test_a_sibling_of_a_step_failing_without_undo_stays_applied(lab: Lab, mode: str) -> None:
    """With `on_failure: stop` or `continue` nothing is taken back: the slow sibling stays in
    force when it lands (and so does the earlier measure) until stand-down takes them back.
    With `stop` the incident fails at once, before the sibling lands; with `continue` it goes
    on."""
    before = await lab.platform()
    await lab.sandbox.fault(path_prefix="/moderation", status=400, times=1)
    await lab.sandbox.fault(path_prefix="/recommender", status=0, latency_ms=1500, times=1)
    incident = await lab.trigger(playbook(CUT).replace("on_failure: undo", f"on_failure: {mode}"))
    state = "failed" if mode == "stop" else "running"
    status = await lab.settle(
        incident, {"base": "applied", "surge": "failed", "cut": "applied"}, state=state
    )
    assert step(status, "cut").outcome is None
    platform = await lab.platform()
    assert 0.5 == platform["recommender"]["GB"]["racial_hatred"]["reach_multiplier"]
    assert [("base", "apply-1"), ("cut", "apply-1")] == operations(platform)
    events = await lab.audit(incident, until="step.applied", count=2)
    assert "step.undone" not in kinds(events)
    failing = [("incident.failed", "surge")] if mode == "stop" else []
    assert [
        ("step.applied", "base"),
        ("step.failed", "surge"),
        *failing,
        ("step.applied", "cut"),
    ] == trail(events, *LANDING)

    closed = await lab.incidents.stand_down(incident, actor="bob", reason="calm")
    assert ("undone", "undone") == (step(closed, "base").state, step(closed, "cut").state)
    state_after = await lab.platform()
    assert settings_of(before) == settings_of(state_after)
    assert [
        ("base", "apply-1"),
        ("cut", "apply-1"),
        ("cut", "undo-1"),
        ("base", "undo-1"),
    ] == operations(state_after)
    assert lab.store.verify(incident).ok


# --- overlapping settings --------------------------------------------------------------------
OVERLAP = """
steps:
  - id: base
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.4}
  - id: pause
    wait: 1m
  - id: both
    parallel:
      - id: surge
        do: moderation.surge
        with: {queue: hate, extra_reviewers: 5}
        on_failure: undo
      - id: cut
        do: recommender.throttle
        with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.5}
"""


async def test_a_landing_measure_on_the_settings_of_an_earlier_one_leaves_neither(
    lab: Lab,
) -> None:
    """`cut` lands over `base` (same region and category) after surge failed: the failure waits
    for it, then restores cut (to base's 0.4) before base (to the platform's own setting), so
    both are taken back and the platform holds neither measure."""
    before = await lab.platform()
    incident = await lab.trigger(OVERLAP)
    await lab.settle(incident, {"base": "applied", "pause": "waiting"})
    await lab.sandbox.fault(path_prefix="/moderation", status=400, times=1)
    # cut's apply lands after a second; each restore takes two (restored in the wrong order, the
    # later one would put base's 0.4 back)
    await lab.sandbox.fault(path_prefix="/recommender/throttle", status=0, latency_ms=1000, times=1)
    await lab.sandbox.fault(
        path_prefix="/recommender/throttle/restore", status=0, latency_ms=2000, times=2
    )
    await lab.advance(timedelta(minutes=2))
    status = await lab.settle(
        incident, {"base": "undone", "surge": "failed", "cut": "undone"}, state="failed"
    )
    for taken in ("cut", "base"):
        assert TAKEN == step(status, taken).outcome
    # cut did land over base, whose 0.4 was still in force: the case at issue
    replaced = (step(status, "cut").previous or {})["policies"]["racial_hatred"]
    assert 0.4 == replaced["reach_multiplier"]
    state = await lab.platform()
    assert settings_of(before) == settings_of(state)
    assert [
        ("base", "apply-1"),
        ("cut", "apply-1"),
        ("cut", "undo-1"),
        ("base", "undo-1"),
    ] == operations(state)
    events = await lab.audit(incident, until="step.undone", count=2)
    assert [
        ("step.applied", "base"),
        ("step.failed", "surge"),
        ("incident.failed", "surge"),
        ("step.applied", "cut"),
        ("step.undone", "cut"),
        ("step.undone", "base"),
    ] == trail(events, *LANDING)
    assert lab.store.verify(incident).ok


# --- while the call is under way: commanders, and the incident's own machinery ----------------
RETRYING = "\n        retry: {max_attempts: 2, initial_interval: 2m, max_interval: 2m}"


async def test_a_stand_down_while_a_branch_retries_closes_with_it_taken_back_once(
    lab: Lab,
) -> None:
    """surge fails with on_failure undo while cut waits two minutes to retry: the incident fails
    at once and base stays in force while the failure waits for cut. A commander stands down
    meanwhile: the stand-down waits too; once cut lands the failure takes back cut then base,
    each once, and the incident closes with the platform as before."""
    before = await lab.platform()
    await lab.sandbox.fault(path_prefix="/moderation", status=400, times=1)
    await lab.sandbox.fault(path_prefix="/recommender", status=503, times=1)
    incident = await lab.trigger(playbook(CUT + RETRYING))
    await assert_eventually(
        states_are(lab, incident, incident="failed", base="applied", surge="failed", cut="running")
    )
    assert [("base", "apply-1")] == operations(await lab.platform())
    standing_down = asyncio.create_task(
        lab.incidents.stand_down(incident, actor="bob", reason="give up")
    )
    # the stand-down is taken while cut still waits to retry (and so is base's measure)
    await assert_eventually(
        states_are(lab, incident, incident="standing_down", base="applied", cut="running")
    )
    await lab.advance(timedelta(minutes=3))
    closed = await asyncio.wait_for(standing_down, timeout=15)
    assert "closed" == closed.state
    assert ("undone", "failed", "undone") == tuple(
        step(closed, one).state for one in ("base", "surge", "cut")
    )
    for taken in ("cut", "base"):
        assert TAKEN == step(closed, taken).outcome
    state = await lab.platform()
    assert settings_of(before) == settings_of(state)
    assert [
        ("base", "apply-1"),
        ("cut", "apply-1"),
        ("cut", "undo-1"),
        ("base", "undo-1"),
    ] == operations(state)
    events = await lab.audit(incident, until="incident.closed")
    for taken in ("cut", "base"):
        assert [WHY] == [e.data["reason"] for e in undone_events(events, taken)]
    # the stand-down came while the failure waited for cut: the failure took them back
    assert [
        ("step.applied", "base"),
        ("step.failed", "surge"),
        ("incident.failed", "surge"),
        ("stand_down.requested", None),
        ("step.applied", "cut"),
        ("step.undone", "cut"),
        ("step.undone", "base"),
        ("incident.closed", None),
    ] == trail(events, *LANDING, "stand_down.requested", "incident.closed")
    assert lab.store.verify(incident).ok


GATE = """
  - id: gate
    do: livestream.restrict
    with: {region: GB, block_new_streams: true}
    approval: {roles: [commander], timeout: 1h, on_timeout: skip}"""


async def test_a_step_approved_while_a_failed_branchs_sibling_retries_is_not_left_in_force(
    lab: Lab,
) -> None:
    """gate is held off the sequence for its approval when surge fails with on_failure undo
    while cut waits two minutes to retry: the incident fails at once, so gate is skipped (`not
    run: the incident failed`) and a commander's approval meanwhile is refused. Once cut lands
    cut and base are taken back; gate never pulled its lever."""
    before = await lab.platform()
    await lab.sandbox.fault(path_prefix="/moderation", status=400, times=1)
    await lab.sandbox.fault(path_prefix="/recommender", status=503, times=1)
    incident = await lab.trigger(playbook(CUT + RETRYING, before=GATE))
    await assert_eventually(
        states_are(
            lab,
            incident,
            incident="failed",
            gate="skipped",
            base="applied",
            surge="failed",
            cut="running",
        )
    )
    assert "not run: the incident failed" == step(await lab.status(incident), "gate").outcome
    with pytest.raises(IncidentConflict, match="step gate is not awaiting approval"):
        await lab.act(incident, CrisisWorkflow.approve, approve("gate"))
    await lab.advance(timedelta(minutes=3))
    status = await lab.settle(
        incident,
        {"gate": "skipped", "base": "undone", "surge": "failed", "cut": "undone"},
        state="failed",
    )
    gate = step(status, "gate")
    assert (0, "not run: the incident failed") == (gate.applications, gate.outcome)
    for taken in ("cut", "base"):
        assert TAKEN == step(status, taken).outcome
    state = await lab.platform()
    assert settings_of(before) == settings_of(state)
    assert [
        ("base", "apply-1"),
        ("cut", "apply-1"),
        ("cut", "undo-1"),
        ("base", "undo-1"),
    ] == operations(state)
    events = await lab.audit(incident, until="step.undone", count=2)
    assert [] == [e for e in events if e.step_id == "gate" and e.kind != "approval.requested"]
    assert lab.store.verify(incident).ok


HELD = """
steps:
  - id: base
    do: detection.set_threshold
    with: {classifier: racial_hatred, threshold: 0.4}
  - id: extra
    level: severe
    do: livestream.restrict
    with: {region: GB, block_new_streams: true}
  - id: cut
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.5}
    approval: {roles: [commander], timeout: 1h, on_timeout: skip}
    retry: {max_attempts: 1}
    on_failure: undo
  - id: LAST
    retry: {max_attempts: 2, initial_interval: 2m, max_interval: 2m}
"""
SURGE = "surge\n    do: moderation.surge\n    with: {queue: hate, extra_reviewers: 5}"
TELL = "tell\n    do: notify.send\n    with: {to: regulator, template: crisis-opened}"
HELD_WHY = "taken back: cut failed (on_failure: undo)"


async def fail_held_step(
    lab: Lab,
    *,
    last: str = SURGE,
    level_at: str | None = None,
    history_limit: int | None = None,
    base: str | None = "applied",
) -> str:
    """Trigger HELD and make cut fail (on_failure undo) once approved, while the sequence's
    last step (its first attempt refused with a 503) waits two minutes to retry. The incident
    fails at once; `base`: base's state then (still applied while the failure waits for the
    call under way; None = not checked)."""
    last_id = last.split("\n")[0]
    await lab.sandbox.fault(
        path_prefix="/moderation" if last_id == "surge" else "/notify", status=503, times=1
    )
    incident = await lab.trigger(
        HELD.replace("LAST", last), level=level_at, history_limit=history_limit
    )
    await assert_eventually(
        states_are(
            lab,
            incident,
            incident="running",
            base="applied",
            extra="applied" if level_at == "severe" else "dormant",
            cut="awaiting_approval",
            **{last_id: "running"},
        )
    )
    await lab.sandbox.fault(path_prefix="/recommender", status=503, times=1)
    await lab.act(incident, CrisisWorkflow.approve, approve("cut"))
    expected = {"cut": "failed", last_id: "running"} | ({} if base is None else {"base": base})
    await assert_eventually(states_are(lab, incident, incident="failed", **expected))
    return incident


@pytest.mark.parametrize("when", ["under_way", "after_the_undo"])
async def test_an_escalation_of_the_failed_incident_applies_the_new_levels_measure(
    lab: Lab, when: str
) -> None:
    """After cut failed with on_failure undo, a commander escalates: the failed incident still
    runs the new level's step (extra), a commander's decision. Escalated while surge's call is
    under way, extra is applied at once and is in force when surge lands, so the failure takes
    back surge, extra and base, newest first. Escalated once that is done, extra stays in force
    on the failed incident until the stand-down takes it back. Either way the stand-down closes
    with the platform as before, nothing restored twice."""
    before = await lab.platform()
    incident = await fail_held_step(lab)
    if when == "under_way":
        await lab.act(incident, CrisisWorkflow.escalate, level())
        await assert_eventually(
            states_are(lab, incident, base="applied", extra="applied", surge="running")
        )
        assert [("base", "apply-1"), ("extra", "apply-1")] == operations(await lab.platform())
        await lab.advance(timedelta(minutes=3))
        status = await lab.settle(
            incident,
            {"base": "undone", "extra": "undone", "cut": "failed", "surge": "undone"},
            state="failed",
            level="severe",
        )
        for taken in ("surge", "extra", "base"):
            assert HELD_WHY == step(status, taken).outcome
        ops = [
            ("base", "apply-1"),
            ("extra", "apply-1"),
            ("surge", "apply-1"),
            ("surge", "undo-1"),
            ("extra", "undo-1"),
            ("base", "undo-1"),
        ]
        state = await lab.platform()
        assert ops == operations(state)
        assert settings_of(before) == settings_of(state)
    else:
        await lab.advance(timedelta(minutes=3))
        await lab.settle(
            incident,
            {"base": "undone", "extra": "dormant", "cut": "failed", "surge": "undone"},
            state="failed",
        )
        await lab.act(incident, CrisisWorkflow.escalate, level())
        status = await lab.settle(
            incident,
            {"base": "undone", "extra": "applied", "cut": "failed", "surge": "undone"},
            state="failed",
            level="severe",
        )
        assert (HELD_WHY, None) == (step(status, "surge").outcome, step(status, "extra").outcome)
        state = await lab.platform()
        assert settings_of(before) != settings_of(state)  # extra's measure is in force
        ops = [
            ("base", "apply-1"),
            ("surge", "apply-1"),
            ("surge", "undo-1"),
            ("base", "undo-1"),
            ("extra", "apply-1"),
        ]
        assert ops == operations(state)
        ops.append(("extra", "undo-1"))  # by the stand-down

    closed = await lab.incidents.stand_down(incident, actor="bob", reason="give up")
    assert "closed" == closed.state
    assert {"base": "undone", "extra": "undone", "cut": "failed", "surge": "undone"} == {
        k: v for k, v in step_states(closed).items() if k in ("base", "extra", "cut", "surge")
    }
    state = await lab.platform()
    assert ops == operations(state)
    assert settings_of(before) == settings_of(state)
    assert lab.store.verify(incident).ok


async def test_a_de_escalation_while_the_call_is_under_way_undoes_nothing_twice(
    lab: Lab,
) -> None:
    """Triggered at severe, extra is applied; cut fails with on_failure undo while surge's call
    is under way, so base and extra stay in force meanwhile. A de-escalation then withdraws
    extra (once); when surge lands the failure takes back surge and base, newest first, and not
    extra again; stand-down sends no further restore."""
    before = await lab.platform()
    incident = await fail_held_step(lab, level_at="severe")
    await lab.act(incident, CrisisWorkflow.de_escalate, level())
    await assert_eventually(
        states_are(lab, incident, base="applied", extra="dormant", surge="running")
    )
    await lab.advance(timedelta(minutes=3))
    status = await lab.settle(
        incident,
        {"base": "undone", "extra": "dormant", "cut": "failed", "surge": "undone"},
        state="failed",
        level="elevated",
    )
    for taken in ("surge", "base"):
        assert HELD_WHY == step(status, taken).outcome
    extra = step(status, "extra")
    assert (1, "withdrawn: level is now elevated") == (extra.undos, extra.outcome)
    state = await lab.platform()
    ops = operations(state)
    assert [
        ("base", "apply-1"),
        ("extra", "apply-1"),
        ("extra", "undo-1"),
        ("surge", "apply-1"),
        ("surge", "undo-1"),
        ("base", "undo-1"),
    ] == ops
    assert settings_of(before) == settings_of(state)
    events = await lab.audit(incident, until="step.undone", count=2)
    assert [("step.withdrawn", "extra")] == trail(events, "step.withdrawn")
    assert [("step.undone", "surge"), ("step.undone", "base")] == trail(events, "step.undone")

    closed = await lab.incidents.stand_down(incident, actor="bob", reason="give up")
    assert "closed" == closed.state
    assert {"base": "undone", "extra": "undone", "cut": "failed", "surge": "undone"} == {
        k: v for k, v in step_states(closed).items() if k in ("base", "extra", "cut", "surge")
    }
    state = await lab.platform()
    assert ops == operations(state)
    assert settings_of(before) == settings_of(state)
    assert lab.store.verify(incident).ok


HISTORY_LIMIT = 60  # past once the notes below are added (about 20 events at the failure)


async def pass_history_limit(lab: Lab, incident: str) -> None:
    for number in range(12):
        await lab.act(
            incident, CrisisWorkflow.add_note, NoteRequest(actor="bob", text=f"note {number}")
        )


async def test_a_continue_as_new_due_while_the_call_is_under_way_waits_for_it(
    lab: Lab,
) -> None:
    """The history passes its bound after cut failed with on_failure undo, while surge's call
    waits to retry (base still in force): the run continues as new only once that call has
    landed and the failure has taken back surge and base, newest first, and the next run
    carries them as undone (the stand-down restores nothing twice)."""
    before = await lab.platform()
    incident = await fail_held_step(lab, history_limit=HISTORY_LIMIT)
    await pass_history_limit(lab, incident)
    status = await lab.status(incident)
    assert (1, "running", "applied") == (
        status.runs,
        step(status, "surge").state,
        step(status, "base").state,
    )
    assert HISTORY_LIMIT <= await history_length(lab, incident)  # due, and waiting
    await lab.advance(timedelta(minutes=3))
    status = await lab.settle(
        incident,
        {"base": "undone", "cut": "failed", "surge": "undone"},
        state="failed",
        also=lambda s: more_runs(s, 1),
    )
    for taken in ("surge", "base"):
        assert HELD_WHY == step(status, taken).outcome
    ops = [("base", "apply-1"), ("surge", "apply-1"), ("surge", "undo-1"), ("base", "undo-1")]
    assert ops == operations(await lab.platform())

    closed = await lab.incidents.stand_down(incident, actor="bob", reason="give up")
    assert "closed" == closed.state
    state = await lab.platform()
    assert ops == operations(state)
    assert settings_of(before) == settings_of(state)
    assert lab.store.verify(incident).ok


@pytest.mark.parametrize("continued", [False, True])
async def test_a_notice_under_way_when_a_held_step_fails_is_sent_and_kept(
    lab: Lab, continued: bool
) -> None:
    """The sequence's step is a notify.send waiting two minutes to retry its delivery when cut
    fails with on_failure undo: it is delivered once and does not stay running, also when the
    history passes its bound meanwhile (the continue-as-new waits for the delivery); base is
    taken back, and the stand-down ends the notice kept (a message cannot be unsent). Whether
    the failure waits for the delivery before taking base back: the next test."""
    before = await lab.platform()
    incident = await fail_held_step(
        lab, last=TELL, history_limit=HISTORY_LIMIT if continued else None, base=None
    )
    if continued:
        await pass_history_limit(lab, incident)
        status = await lab.status(incident)
        assert (1, "running") == (status.runs, step(status, "tell").state)
        assert HISTORY_LIMIT <= await history_length(lab, incident)  # due, and waiting
    await lab.advance(timedelta(minutes=3))

    # the retry is due at once: a few seconds, not the settle timeout, to see it delivered
    async def delivered() -> None:
        tell = step(await lab.status(incident), "tell")
        assert tell.state not in TRANSIENT, tell.state
        assert ["delivered"] == [d.state for d in tell.deliveries]

    await assert_eventually(delivered, timeout=3, interval=0.05)
    status = await lab.settle(
        incident,
        {"base": "undone", "cut": "failed"},
        state="failed",
        also=(lambda s: more_runs(s, 1)) if continued else None,
    )
    assert HELD_WHY == step(status, "base").outcome
    state = await lab.platform()
    assert ["regulator"] == [n["stakeholder"] for n in state["notifications"]]
    measures = [("base", "apply-1"), ("base", "undo-1")]
    assert measures == [op for op in operations(state) if op[0] != "tell"]
    assert settings_of(before) == settings_of(state)

    closed = await lab.incidents.stand_down(incident, actor="bob", reason="give up")
    assert ("closed", "kept") == (closed.state, step(closed, "tell").state)
    state = await lab.platform()
    assert 1 == len(state["notifications"])
    assert measures == [op for op in operations(state) if op[0] != "tell"]
    assert settings_of(before) == settings_of(state)
    assert lab.store.verify(incident).ok


async def test_the_failures_undo_waits_for_a_notice_under_way(lab: Lab) -> None:
    """As above, without a continue-as-new: the notify.send delivery is the sequence's lever
    call under way, so the failure waits for it to land (base stays in force meanwhile), then
    takes back every measure: tell is kept (sent once, nothing sent to take it back) and base is
    taken back after tell was delivered."""
    before = await lab.platform()
    incident = await fail_held_step(lab, last=TELL)
    await lab.advance(timedelta(minutes=3))
    status = await lab.settle(
        incident, {"base": "undone", "cut": "failed", "tell": "kept"}, state="failed"
    )
    assert (HELD_WHY, None) == (step(status, "base").outcome, step(status, "tell").outcome)
    assert ["delivered"] == [d.state for d in step(status, "tell").deliveries]
    state = await lab.platform()
    assert ["regulator"] == [n["stakeholder"] for n in state["notifications"]]
    assert settings_of(before) == settings_of(state)
    events = await lab.audit(incident, until="step.undone")
    assert [
        ("step.applied", "base"),
        ("step.failed", "cut"),
        ("incident.failed", "cut"),
        ("notification.delivered", "tell"),
        ("step.applied", "tell"),
        ("step.undone", "base"),
    ] == trail(events, *LANDING, "notification.delivered")
    assert lab.store.verify(incident).ok


async def test_a_closing_notice_every_channel_refuses_is_sent_once_and_failed_once(
    lab: Lab,
) -> None:
    """The platform refuses the stand-down's notice (a 4xx): refused for good at once, as a
    lever's undo would be, not sent again and counted as a second failure."""
    incident = await lab.trigger(
        """
steps:
  - id: tell
    do: notify.send
    with: {to: regulator, template: crisis-opened}
    undo:
      do: notify.send
      with: {to: regulator, template: crisis-closed}
"""
    )
    await lab.settle(incident, {"tell": "applied"})
    await lab.sandbox.fault(path_prefix="/notify", operation_prefix="undo-", status=422)
    closed = await lab.incidents.stand_down(incident, actor="bob", reason="over")
    tell = step(closed, "tell")
    assert [("apply-1", "delivered"), ("undo-1", "failed")] == [
        (d.operation, d.state) for d in tell.deliveries
    ]
    assert 1 == (await lab.platform())["stats"]["faults_injected"]
    events = await lab.audit(incident, until="incident.closed")
    assert 1 == kinds(events).count("notification.failed")
