"""Two incidents on the same platform settings: the later one's measure is applied over the
earlier one's. When the earlier measure lapses or is withdrawn, its restore lifts the later one's
too; the later incident is told and puts its measure back, so the platform keeps what is still in
force, and the later incident's own restore at stand-down leaves the platform as it was."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from core.settings import Settings
from engine.errors import IncidentConflict
from engine.incidents import Incidents
from engine.overlap import refuse_if_later_overlaps
from engine.report import build_report
from engine.verification import IncidentHistory, replay_incident
from store.audit_store import AuditStore
from tests.conftest import Sandbox
from tests.helpers import assert_eventually
from tests.workflows.lab import HEADER, Lab, approve, at, kinds, settings_of, step
from workflows.audit import AuditEvent
from workflows.crisis import CrisisWorkflow
from workflows.incident import LevelRequest

EARLIER = """
steps:
  - id: cut-reach
    do: recommender.throttle
    with:
      region: GB
      categories: [incitement_to_violence, racial_hatred]
      reach_multiplier: 0.5
      reshare_limit: 5
    expires_after: 2h
"""
LATER = """
steps:
  - id: limit-one
    do: recommender.throttle
    with:
      region: GB
      categories: [incitement_to_violence]
      reach_multiplier: 0.25
      reshare_limit: 1
    expires_after: 6h
  - id: elsewhere
    do: recommender.throttle
    with: {region: IE, categories: [incitement_to_violence], reach_multiplier: 0.5}
"""
WITHDRAWN = """
steps:
  - id: cut-reach
    level: severe
    do: recommender.throttle
    with:
      region: GB
      categories: [incitement_to_violence]
      reach_multiplier: 0.5
"""
LIMIT_ONE = {"reach_multiplier": 0.25, "reshare_limit": 1}


async def test_an_earlier_incidents_lapse_leaves_the_later_incidents_measure_in_force(
    lab: Lab,
) -> None:
    before = settings_of(await lab.platform())
    earlier = await lab.trigger(EARLIER)
    await lab.settle(earlier, {"cut-reach": "applied"})
    later = await lab.trigger(LATER)
    status = await lab.settle(later, {"limit-one": "applied", "elsewhere": "applied"})
    expiry = step(status, "limit-one").expires_at
    assert LIMIT_ONE == (await lab.platform())["recommender"]["GB"]["incitement_to_violence"]

    await lab.advance(timedelta(hours=2, minutes=1))
    await lab.sync(earlier)
    assert "expired" == step(await lab.status(earlier), "cut-reach").state
    events = await lab.audit(later, until="step.applied", count=3)
    lifted = next(e for e in events if e.kind == "overlap.lifted")
    assert (earlier, "cut-reach", "expiry reached", ["limit-one"]) == (
        lifted.data["by"],
        lifted.data["step"],
        lifted.data["reason"],
        lifted.data["steps"],
    )
    status = await lab.sync(later)
    limit_one = step(status, "limit-one")
    assert ("applied", 2, expiry) == (limit_one.state, limit_one.applications, limit_one.expires_at)
    assert 1 == step(status, "elsewhere").applications  # another region: untouched
    gb = (await lab.platform())["recommender"]["GB"]
    assert LIMIT_ONE == gb["incitement_to_violence"]  # put back over the earlier's restore
    assert None is gb.get("racial_hatred")  # only the earlier incident covered it

    told = [e for e in lab.store.events(earlier) if e.kind == "overlap.reasserting"]
    assert [{"incident": later, "steps": ["limit-one"]}] == [e.data for e in told]

    # The later incident's restore now puts back what the earlier's left: the platform as it was.
    await lab.incidents.stand_down(later, actor="alice", reason="calm")
    await lab.audit(later, until="incident.closed")
    assert before == settings_of(await lab.platform())
    assert lab.store.verify(earlier).ok and lab.store.verify(later).ok


async def test_a_withdrawn_measure_tells_the_later_incident_too(lab: Lab) -> None:
    before = settings_of(await lab.platform())
    earlier = await lab.trigger(WITHDRAWN, level="severe")
    await lab.settle(earlier, {"cut-reach": "applied"}, level="severe")
    later = await lab.trigger(LATER)
    await lab.settle(later, {"limit-one": "applied", "elsewhere": "applied"})

    await lab.act(earlier, CrisisWorkflow.de_escalate, LevelRequest(actor="alice", reason="calmer"))
    await lab.settle(earlier, {"cut-reach": "dormant"}, level="elevated")
    events = await lab.audit(later, until="step.applied", count=3)
    assert (
        "level is now elevated"
        == next(e for e in events if e.kind == "overlap.lifted").data["reason"]
    )
    status = await lab.sync(later)
    assert 2 == step(status, "limit-one").applications
    assert LIMIT_ONE == (await lab.platform())["recommender"]["GB"]["incitement_to_violence"]

    await lab.incidents.stand_down(earlier, actor="alice", reason="over")
    await lab.incidents.stand_down(later, actor="alice", reason="over")
    await lab.audit(later, until="incident.closed")
    assert before == settings_of(await lab.platform())


async def test_a_forced_stand_down_hands_the_settings_to_the_later_incident(lab: Lab) -> None:
    """Forced although a later incident holds a measure on the same settings, the earlier one
    hands them over as a lapse does: the later measure is put back over the restore, the later
    stand-down leaves the platform as before both, and both histories replay to their trails."""
    before = settings_of(await lab.platform())
    earlier = await lab.trigger(EARLIER)
    await lab.settle(earlier, {"cut-reach": "applied"})
    later = await lab.trigger(LATER)
    await lab.settle(later, {"limit-one": "applied", "elsewhere": "applied"})

    closed = await lab.incidents.stand_down(earlier, actor="alice", reason="calm", force=True)
    assert ("closed", True) == (closed.state, closed.stand_down and closed.stand_down.force)
    assert LIMIT_ONE == (await lab.platform())["recommender"]["GB"]["incitement_to_violence"]
    events = lab.store.events(earlier)
    assert {"reason": "calm", "forced": True} == next(
        e.data for e in events if e.kind == "stand_down.requested"
    )
    assert [{"incident": later, "steps": ["limit-one"]}] == [
        e.data for e in events if e.kind == "overlap.reasserting"
    ]
    assert "incident.closed" == events[-1].kind  # the hand-back is on record before the close
    status = await lab.sync(later)
    assert (2, None) == (
        step(status, "limit-one").applications,
        step(status, "limit-one").lifted_by,
    )

    await lab.incidents.stand_down(later, actor="alice", reason="calm")
    await lab.audit(later, until="incident.closed")
    assert before == settings_of(await lab.platform())
    for incident in (earlier, later):  # one run each (the test server lists no workflows)
        history = await lab.env.client.get_workflow_handle(incident).fetch_history()
        report = await replay_incident(
            IncidentHistory(incident, [history]), lab.store.events(incident)
        )
        assert report.ok, report.as_dict()


REVIEWED = "reviews: {every: 1h, grace: 10m, on_missed: stand_down}\n"
FAILING = """
  - id: gate
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 5}
    approval: {roles: [commander], timeout: 1h, on_timeout: skip}
    retry: {max_attempts: 1}
    on_failure: undo
"""


async def _handed_over(lab: Lab, earlier: str, later: str, reason: str) -> None:
    """The later incident was told, by the earlier one, and put its measure back over the
    restore; its own stand-down then leaves the platform as before both (`before`)."""
    events = await lab.audit(later, until="step.applied", count=3)
    lifted = next(e for e in events if e.kind == "overlap.lifted")
    assert (earlier, "cut-reach", reason) == (
        lifted.data["by"],
        lifted.data["step"],
        lifted.data["reason"],
    )
    status = await lab.sync(later)
    limit_one = step(status, "limit-one")
    assert ("applied", 2, None) == (limit_one.state, limit_one.applications, limit_one.lifted_by)
    assert LIMIT_ONE == (await lab.platform())["recommender"]["GB"]["incitement_to_violence"]
    told = [e.data for e in lab.store.events(earlier) if e.kind == "overlap.reasserting"]
    assert [{"incident": later, "steps": ["limit-one"]}] == told


async def test_a_missed_reviews_stand_down_hands_the_settings_to_the_later_incident(
    lab: Lab,
) -> None:
    """No commander is there to be refused or to force it: the system's stand-down hands the
    settings over as a forced one does (it lifted the later measure and told no one)."""
    before = settings_of(await lab.platform())
    earlier = await lab.trigger(REVIEWED + EARLIER)
    await lab.settle(earlier, {"cut-reach": "applied"})
    later = await lab.trigger(LATER)
    await lab.settle(later, {"limit-one": "applied", "elsewhere": "applied"})

    await lab.advance(timedelta(hours=1, minutes=11))
    await lab.settle(earlier, {"cut-reach": "undone"}, state="closed")
    await _handed_over(lab, earlier, later, "stood down (review missed)")
    events = lab.store.events(earlier)
    assert {"reason": "review missed"} == next(
        e.data for e in events if e.kind == "stand_down.requested"
    )
    assert "incident.closed" == events[-1].kind  # the hand-back is on record before the close

    await lab.incidents.stand_down(later, actor="alice", reason="calm")
    await lab.audit(later, until="incident.closed")
    assert before == settings_of(await lab.platform())
    for incident in (earlier, later):
        history = await lab.env.client.get_workflow_handle(incident).fetch_history()
        report = await replay_incident(
            IncidentHistory(incident, [history]), lab.store.events(incident)
        )
        assert report.ok, report.as_dict()


async def test_a_measure_taken_back_on_failure_hands_the_settings_to_the_later_incident(
    lab: Lab,
) -> None:
    """`on_failure: undo` takes the measures back with no commander asked: as a forced
    stand-down, it hands the settings to the later incident, which is told why."""
    before = settings_of(await lab.platform())
    earlier = await lab.trigger(EARLIER + FAILING)
    await lab.settle(earlier, {"cut-reach": "applied", "gate": "awaiting_approval"})
    later = await lab.trigger(LATER)
    await lab.settle(later, {"limit-one": "applied", "elsewhere": "applied"})

    await lab.sandbox.fault(path_prefix="/moderation", status=400, times=1)
    await lab.act(earlier, CrisisWorkflow.approve, approve("gate"))
    await lab.settle(earlier, {"cut-reach": "undone", "gate": "failed"}, state="failed")
    await _handed_over(lab, earlier, later, "gate failed (on_failure: undo)")

    await lab.incidents.stand_down(later, actor="alice", reason="calm")
    await lab.incidents.stand_down(earlier, actor="alice", reason="over")
    await lab.audit(later, until="incident.closed")
    assert before == settings_of(await lab.platform())
    assert lab.store.verify(earlier).ok and lab.store.verify(later).ok


async def test_a_lapse_with_no_later_incident_tells_nobody(lab: Lab) -> None:
    earlier = await lab.trigger(EARLIER)
    await lab.settle(earlier, {"cut-reach": "applied"})
    await lab.advance(timedelta(hours=2, minutes=1))
    await lab.sync(earlier)
    events = await lab.audit(earlier, until="step.expired")
    assert not {"overlap.reasserting", "overlap.check_failed"} & set(kinds(events))


ONLY_X = """
steps:
  - id: x
    do: recommender.throttle
    with: {region: GB, categories: [incitement_to_violence], reach_multiplier: 0.5}
    expires_after: 2h
"""
BOTH = """
steps:
  - id: x-and-y
    do: recommender.throttle
    with:
      region: GB
      categories: [incitement_to_violence, racial_hatred]
      reach_multiplier: 0.25
"""
ONLY_Y = """
steps:
  - id: y
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.1, reshare_limit: 0}
"""


async def test_a_later_measure_wider_than_the_lapsed_one_restores_only_what_it_replaced(
    lab: Lab,
) -> None:
    """The later measure also covers a setting the earlier one never touched: putting it back over
    the earlier restore must not make it replace its own value there (its restore at stand-down
    would then leave it in force)."""
    before = settings_of(await lab.platform())
    earlier = await lab.trigger(ONLY_X)
    await lab.settle(earlier, {"x": "applied"})
    later = await lab.trigger(BOTH)
    await lab.settle(later, {"x-and-y": "applied"})

    await lab.advance(timedelta(hours=2, minutes=1))
    await lab.sync(earlier)
    events = await lab.audit(later, until="step.applied", count=2)
    assert [
        "overlap.lifted",
        "step.undone",
        "overlap.restored",
        "step.started",
        "step.applied",
    ] == [k for k in kinds(events) if k != "note.added"][-5:]
    await lab.sync(later)
    gb = (await lab.platform())["recommender"]["GB"]
    assert 0.25 == gb["incitement_to_violence"]["reach_multiplier"]
    assert 0.25 == gb["racial_hatred"]["reach_multiplier"]

    await lab.incidents.stand_down(later, actor="alice", reason="over")
    await lab.audit(later, until="incident.closed")
    assert before == settings_of(await lab.platform())
    assert lab.store.verify(earlier).ok and lab.store.verify(later).ok


async def test_the_later_incidents_own_measures_over_the_lifted_one_keep_their_place(
    lab: Lab,
) -> None:
    """The later incident applied a second measure over its first (on y): putting the first back
    must not put it over the second."""
    before = settings_of(await lab.platform())
    earlier = await lab.trigger(ONLY_X)
    await lab.settle(earlier, {"x": "applied"})
    later = await lab.trigger(BOTH + ONLY_Y.replace("steps:\n", ""))
    await lab.settle(later, {"x-and-y": "applied", "y": "applied"})

    await lab.advance(timedelta(hours=2, minutes=1))
    await lab.sync(earlier)
    await lab.audit(later, until="step.applied", count=4)
    status = await lab.sync(later)
    assert (2, 2) == (step(status, "x-and-y").applications, step(status, "y").applications)
    gb = (await lab.platform())["recommender"]["GB"]
    assert 0.25 == gb["incitement_to_violence"]["reach_multiplier"]
    assert {"reach_multiplier": 0.1, "reshare_limit": 0} == gb["racial_hatred"]

    await lab.incidents.stand_down(later, actor="alice", reason="over")
    await lab.audit(later, until="incident.closed")
    assert before == settings_of(await lab.platform())


OWN_OVER_LATER = """
steps:
  - id: x
    do: recommender.throttle
    with: {region: GB, categories: [incitement_to_violence], reach_multiplier: 0.5}
    expires_after: 2h
  - id: pause
    wait: 30m
  - id: x-harder
    do: recommender.throttle
    with: {region: GB, categories: [incitement_to_violence], reach_multiplier: 0.1}
"""


async def own_over_later(lab: Lab) -> tuple[str, str]:
    """A applies x, B applies over it, then A x-harder over B: (A, B)."""
    earlier = await lab.trigger(OWN_OVER_LATER)
    await lab.settle(earlier, {"x": "applied"})
    later = await lab.trigger(LATER)
    await lab.settle(later, {"limit-one": "applied", "elsewhere": "applied"})
    await lab.advance(timedelta(minutes=31))
    await lab.sync(earlier)
    await lab.settle(earlier, {"x": "applied", "x-harder": "applied"})
    return earlier, later


async def test_a_lapse_under_the_incidents_own_later_measure_is_left_to_commanders(
    lab: Lab,
) -> None:
    """A applies x, B applies over it, then A applies over B. A's lapse restacks A's own later
    measure (over B's restore of nothing): putting B's back would put it over A's, so neither
    is touched and A names B."""
    earlier, later = await own_over_later(lab)

    await lab.advance(timedelta(hours=2))
    await lab.sync(earlier)
    events = await lab.audit(earlier, until="overlap.unresolved")
    unresolved = next(e for e in events if e.kind == "overlap.unresolved")
    assert {later: ["limit-one"]} == unresolved.data["incidents"]
    assert "restacked" in unresolved.data["reason"]
    assert {later: ["limit-one"]} == unresolved.data["lifted"]
    # The later incident is told its measure no longer holds, and says so until it is undone.
    events = await lab.audit(later, until="overlap.left_lifted")
    notice = next(e for e in events if e.kind == "overlap.left_lifted")
    assert "overlap.lifted" not in kinds(lab.store.events(later))
    assert {"by": earlier, "step": "x", "steps": ["limit-one"]}.items() <= notice.data.items()
    assert "restacked" in notice.data["why"]
    status = await lab.sync(later)
    assert ("applied", earlier) == (
        step(status, "limit-one").state,
        step(status, "limit-one").lifted_by,
    )
    assert step(status, "elsewhere").lifted_by is None
    row = lab.store.incident(later)
    assert row is not None and row.summary is not None
    assert earlier == row.summary["measures"]["limit-one"]["lifted_by"]  # the board's

    await lab.incidents.stand_down(later, actor="alice", reason="over")
    events = await lab.audit(later, until="incident.closed")
    status = await lab.status(later)
    assert ("undone", None) == (
        step(status, "limit-one").state,
        step(status, "limit-one").lifted_by,
    )
    # Its time in force, in the report, ends when it was lifted, not at the stand-down.
    lift = next(e for e in events if e.kind == "overlap.left_lifted")
    (measure,) = [m for m in build_report(events).measures if m.step_id == "limit-one"]
    (interval,) = measure.intervals
    assert ("lifted", lift.at) == (interval.ended, interval.end)
    assert measure.outcome_text.startswith(f"lifted by {earlier}'s restore at ")
    assert measure.outcome_text.endswith("(left to commanders), then undone at stand-down")


async def test_more_than_one_later_incident_is_left_to_commanders(lab: Lab) -> None:
    """A changes x, then B x and y, then C y. Putting B back would disturb C: only lifting both
    and putting both back in order would be right, so A names them and tells neither."""
    first = await lab.trigger(ONLY_X)
    await lab.settle(first, {"x": "applied"})
    second = await lab.trigger(BOTH)
    await lab.settle(second, {"x-and-y": "applied"})
    third = await lab.trigger(ONLY_Y)
    await lab.settle(third, {"y": "applied"})

    await lab.advance(timedelta(hours=2, minutes=1))
    await lab.sync(first)
    events = await lab.audit(first, until="overlap.unresolved")
    unresolved = next(e for e in events if e.kind == "overlap.unresolved")
    assert {second: ["x-and-y"], third: ["y"]} == unresolved.data["incidents"]
    # Only B's measure was lifted (on x); C's on y still holds, and C is not told.
    assert {second: ["x-and-y"]} == unresolved.data["lifted"]
    events = await lab.audit(second, until="overlap.left_lifted")
    notice = next(e for e in events if e.kind == "overlap.left_lifted")
    assert ["x-and-y"] == notice.data["steps"]
    assert first == step(await lab.sync(second), "x-and-y").lifted_by
    assert step(await lab.sync(third), "y").lifted_by is None
    for incident in (second, third):
        assert "overlap.lifted" not in kinds(lab.store.events(incident))
    assert "overlap.left_lifted" not in kinds(lab.store.events(third))


async def test_a_lapse_while_the_later_incident_stands_down_is_restored_once_it_closes(
    client: Client,
    settings: Settings,
    worker: None,
    sandbox: Sandbox,
    sqlite_store: AuditStore,
    tmp_path: Path,
) -> None:
    """The later incident is taking its measure back, slowly, when the earlier one lapses: its
    restore lands after the earlier restore and brings the earlier measure back, so the earlier
    incident applies its restore again once the later one has closed. On the dev server, in real
    time: the time-skipping server lets no timer fire while a lever call is under way."""
    incidents = Incidents(client, settings)
    before = settings_of(await sandbox.state())
    files = {}
    for name, body in (("earlier", ONLY_X.replace("2h", "5s")), ("later", BOTH)):
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_text(HEADER + body)
    earlier = (await incidents.trigger(str(files["earlier"]), {}, actor="alice")).incident_id

    async def earlier_applied() -> None:
        assert "applied" == step(await incidents.status(earlier), "x").state

    # The later measure must land over the earlier one: on a busy machine the later incident's
    # lever could otherwise reach the platform first (and there is then nothing to hand back).
    await assert_eventually(earlier_applied, timeout=10, interval=0.05)
    later = (await incidents.trigger(str(files["later"]), {}, actor="alice")).incident_id

    async def applied() -> datetime:
        assert "applied" == step(await incidents.status(later), "x-and-y").state
        return at(step(await incidents.status(earlier), "x").expires_at)

    lapse = await assert_eventually(applied, timeout=10, interval=0.05)
    # The later undo is held 2.5 s from 1.5 s before the earlier lapse: the lapse comes meanwhile.
    await sandbox.fault(
        path_prefix="/recommender/throttle/restore", status=0, latency_ms=2500, times=1
    )
    await asyncio.sleep(max(0.0, (lapse - datetime.now(UTC)).total_seconds() - 1.5))
    await incidents.stand_down(later, actor="alice", reason="over")

    async def restored() -> list[AuditEvent]:
        events = sqlite_store.events(earlier)
        assert "overlap.restored" in kinds(events)
        assert before == settings_of(await sandbox.state())
        return events

    events = await assert_eventually(restored, timeout=15, interval=0.1)
    told = next(e for e in events if e.kind == "overlap.reasserting")
    assert (later, ["x-and-y"]) == (told.data["incident"], told.data["steps"])
    assert told.data.get("refused") or told.data.get("closed")  # as it stood down, or closed
    await incidents.stand_down(earlier, actor="alice", reason="over")
    assert sqlite_store.verify(earlier).ok


async def test_a_forced_stand_down_over_its_own_later_measure_still_hands_back(lab: Lab) -> None:
    """A applies x, B over it, A x-harder over B. Forced down, A takes x-harder back (B's
    measure is in force again), then x, whose restore lifts B's: nothing of A's is left over B,
    so B is told and puts its own back (not left to commanders for x-harder, already undone),
    and B's stand-down leaves the platform as before both."""
    before = settings_of(await lab.platform())
    earlier, later = await own_over_later(lab)

    await lab.incidents.stand_down(earlier, actor="alice", reason="calm", force=True)
    events = await lab.audit(earlier, until="incident.closed")
    assert "overlap.unresolved" not in kinds(events)
    assert [{"incident": later, "steps": ["limit-one"]}] == [
        e.data for e in events if e.kind == "overlap.reasserting"
    ]
    limit_one = step(await lab.sync(later), "limit-one")
    assert (2, None) == (limit_one.applications, limit_one.lifted_by)
    assert LIMIT_ONE == (await lab.platform())["recommender"]["GB"]["incitement_to_violence"]

    await lab.incidents.stand_down(later, actor="alice", reason="calm")
    await lab.audit(later, until="incident.closed")
    assert before == settings_of(await lab.platform())


LATER_NO_ANSWER = """
steps:
  - id: limit-one
    do: recommender.throttle
    with: {region: GB, categories: [incitement_to_violence], reach_multiplier: 0.25}
    timeout: 1s
    retry: {max_attempts: 2, initial_interval: 300ms, max_interval: 300ms}
"""


async def later_measure_with_no_answer(lab: Lab) -> tuple[dict[str, Any], str, str]:
    """The platform's settings before both, an earlier incident's measure, and a later one's on
    the same setting whose apply had no answer (the platform applied it): their ids."""
    before = settings_of(await lab.platform())
    earlier = await lab.trigger(EARLIER)
    await lab.settle(earlier, {"cut-reach": "applied"})
    slow = {"path_prefix": "/recommender", "operation_prefix": "apply-", "latency_ms": 1500}
    await lab.sandbox.fault(**slow, status=0, times=2)
    later = await lab.trigger(LATER_NO_ANSWER)
    await lab.settle(later, {"limit-one": "failed"}, state="failed")
    await lab.sandbox.clear_faults()
    assert step(await lab.status(later), "limit-one").uncertain
    return before, earlier, later


async def test_a_later_measure_with_no_answer_holds_the_earlier_stand_down(lab: Lab) -> None:
    """The later incident's apply had no answer, so the platform may have applied it over the
    earlier incident's measure. Standing the earlier one down first would put back what was
    there before both, and the later one's restore then what the earlier one had set: the
    earlier stand-down is refused, as it is when the later measure is known to be applied."""
    before, earlier, later = await later_measure_with_no_answer(lab)
    failed = next(e for e in await lab.audit(later, until="step.failed") if e.kind == "step.failed")
    assert failed.data["unanswered"] is True
    with pytest.raises(IncidentConflict) as refused:
        await refuse_if_later_overlaps(lab.store, earlier)
    assert f"{later}: recommender.throttle " in str(refused.value)
    assert "over cut-reach (may be in force: its apply had no answer)" in str(refused.value)
    # Newest first, as the refusal says: each restores exactly what it replaced.
    await lab.incidents.stand_down(later, actor="alice", reason="calm")
    await lab.audit(later, until="incident.closed")
    await refuse_if_later_overlaps(lab.store, earlier)  # nothing holds it now
    await lab.incidents.stand_down(earlier, actor="alice", reason="calm")
    await lab.audit(earlier, until="incident.closed")
    assert before == settings_of(await lab.platform())


async def test_an_earlier_restore_over_a_later_measure_with_no_answer_settles_it(
    lab: Lab,
) -> None:
    """Forced down, the earlier incident restores what was there before both, over the later
    measure whose apply had no answer: whatever that call did is gone from the platform. The
    later incident is told, so it no longer counts the measure as maybe in force, and its own
    stand-down restores nothing for it (learning the call's cached answer, it would have put
    back what the earlier measure had set)."""
    before, earlier, later = await later_measure_with_no_answer(lab)

    await lab.incidents.stand_down(earlier, actor="alice", reason="calm", force=True)
    await lab.audit(earlier, until="incident.closed")
    events = await lab.audit(later, until="overlap.lifted")
    lifted = next(e for e in events if e.kind == "overlap.lifted")
    assert (earlier, [], ["limit-one"]) == (
        lifted.data["by"],
        lifted.data["steps"],
        lifted.data["no_answer"],
    )
    limit_one = step(await lab.sync(later), "limit-one")
    assert ("failed", False) == (limit_one.state, limit_one.uncertain)
    assert f"restored over by {earlier}" in (limit_one.outcome or "")
    assert "limit-one" not in (lab.store.incident(later).summary or {})["measures"]
    assert before == settings_of(await lab.platform())

    await lab.incidents.stand_down(later, actor="alice", reason="calm")
    events = await lab.audit(later, until="incident.closed")
    assert "step.undone" not in kinds(events)
    assert before == settings_of(await lab.platform())
    assert lab.store.verify(earlier).ok and lab.store.verify(later).ok
