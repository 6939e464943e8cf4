"""The post-incident report, built from hand-made audit trails (no Temporal needed)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine.report import (
    IncidentReport,
    build_report,
    chart_filename,
    offset_label,
    render_chart_svg,
    render_html,
    render_json,
    render_markdown,
)
from workflows.audit import GENESIS_HASH, AuditEvent, make_event
from workflows.playbook import Playbook

T0 = datetime(2026, 8, 3, 12, 0, tzinfo=UTC)
HOUR = 3600
DAY = 24 * HOUR
INCIDENT = "INC-1"


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


class Trail:
    """Chains events exactly as the workflow's AuditTrail does."""

    def __init__(self, incident_id: str = INCIDENT) -> None:
        self.incident_id = incident_id
        self.events: list[AuditEvent] = []

    def add(
        self,
        seconds: float,
        kind: str,
        *,
        actor: str | None = None,
        step: str | None = None,
        other_step: str | None = None,
        **data: Any,
    ) -> Trail:
        if other_step is not None:  # the data's own "step": another incident's, in overlaps
            data["step"] = other_step
        self.events.append(
            make_event(
                incident_id=self.incident_id,
                seq=len(self.events) + 1,
                kind=kind,
                at=at(seconds),
                prev_hash=self.events[-1].hash if self.events else GENESIS_HASH,
                actor=actor,
                step_id=step,
                data=data,
            )
        )
        return self


PLAYBOOK = Playbook.model_validate(
    {
        "playbook": "violent-disorder",
        "version": 3,
        "title": "Violent disorder incited online",
        "description": "Test playbook.",
        "owner": "trust-and-safety",
        "levels": ["elevated", "critical"],
        "steps": [
            {"id": "throttle-recommender", "do": "recommender.throttle"},
            {"id": "raise-detection", "do": "detection.set_threshold", "level": "critical"},
        ],
        "post_incident_review": {"due_within": "7d", "owner": "head-of-trust-and-safety"},
    }
)
THROTTLE = {"region": "GB", "categories": ["incitement_to_violence"], "reach_multiplier": 0.25}
EXCLUDE = {"region": "GB", "categories": ["incitement_to_violence"]}
SURGE = {"queue": "hate", "extra_reviewers": 25, "priority": "urgent"}
DETECT = {"classifier": "incitement_to_violence", "threshold": 0.25}
CLOSED_AT = 50 * HOUR + 5


def crisis(*, until: float | None = None) -> list[AuditEvent]:
    """Two days of violent disorder, as the workflow would record them (up to `until`)."""
    t = Trail()
    t.add(
        0,
        "incident.triggered",
        actor="alice",
        playbook="violent-disorder",
        version=3,
        playbook_hash="sha256:" + "ab" * 32,
        inputs={"region": "GB"},
        level="elevated",
    )
    t.add(
        0,
        "step.started",
        step="notify-regulator",
        lever="notify.webhook",
        args={"to": "regulator", "severity": "critical", "message": "Crisis protocol activated"},
    )
    t.add(10, "step.applied", step="notify-regulator", lever="notify.webhook", previous=None)
    t.add(
        10,
        "step.started",
        step="exclude-unreviewed",
        lever="recommender.exclude_unreviewed",
        args=EXCLUDE,
    )
    t.add(
        12,
        "step.applied",
        step="exclude-unreviewed",
        lever="recommender.exclude_unreviewed",
        previous={"excluded": False},
        expires_at=at(DAY + 12),
    )
    t.add(
        12,
        "approval.requested",
        step="throttle-recommender",
        roles=["commander", "legal"],
        quorum=2,
        deadline=at(15 * 60 + 12),
    )
    t.add(
        180,
        "approval.given",
        actor="alice",
        step="throttle-recommender",
        role="commander",
        comment="",
        count=1,
    )
    t.add(
        432,
        "approval.given",
        actor="bob",
        step="throttle-recommender",
        role="legal",
        comment="proportionate",
        count=2,
    )
    t.add(432, "approval.granted", step="throttle-recommender", approvers=["alice", "bob"])
    t.add(
        432,
        "step.started",
        step="throttle-recommender",
        lever="recommender.throttle",
        args=THROTTLE,
    )
    t.add(434, "step.applied", step="throttle-recommender", lever="recommender.throttle")
    t.add(434, "step.dormant", step="raise-detection", level="elevated")
    t.add(434, "step.started", step="surge-hate-queue", lever="moderation.surge", args=SURGE)
    t.add(437, "step.applied", step="surge-hate-queue", lever="moderation.surge")
    t.add(HOUR, "note.added", actor="carol", text="A false name for the attacker is circulating")
    t.add(
        2 * HOUR,
        "level.escalated",
        actor="alice",
        level="critical",
        reason="disorder spreading to a second city",
    )
    t.add(
        2 * HOUR,
        "step.started",
        step="raise-detection",
        lever="detection.set_threshold",
        args=DETECT,
    )
    t.add(2 * HOUR + 2, "step.applied", step="raise-detection", lever="detection.set_threshold")
    t.add(5 * HOUR, "review.confirmed", actor="carol", note="", next_due=at(11 * HOUR))
    t.add(11 * HOUR + 1800, "review.missed", due=at(11 * HOUR), on_missed="record")
    t.add(12 * HOUR, "review.confirmed", actor="alice", note="calmer", next_due=at(18 * HOUR))
    t.add(
        23 * HOUR,
        "measure.renewed",
        actor="carol",
        step="exclude-unreviewed",
        until=at(2 * DAY),
        reason="reports still spiking",
        was=at(DAY + 12),
        reapply=False,
    )
    t.add(
        30 * HOUR,
        "level.de_escalated",
        actor="alice",
        level="elevated",
        reason="disorder subsiding",
    )
    t.add(
        30 * HOUR + 3,
        "step.withdrawn",
        step="raise-detection",
        lever="detection.set_threshold",
        restored={"threshold": 0.8},
        reason="level is now elevated",
    )
    t.add(40 * HOUR, "level.escalated", actor="bob", level="critical", reason="fresh unrest")
    t.add(
        40 * HOUR,
        "step.started",
        step="raise-detection",
        lever="detection.set_threshold",
        args=DETECT,
    )
    t.add(40 * HOUR + 2, "step.applied", step="raise-detection", lever="detection.set_threshold")
    t.add(
        2 * DAY,
        "step.expired",
        step="exclude-unreviewed",
        lever="recommender.exclude_unreviewed",
        restored={"excluded": False},
        reason="expiry reached",
    )
    t.add(50 * HOUR, "stand_down.requested", actor="alice", reason="disorder over")
    for offset, step, lever in [
        (1, "raise-detection", "detection.set_threshold"),
        (2, "surge-hate-queue", "moderation.surge"),
        (3, "throttle-recommender", "recommender.throttle"),
        (4, "notify-regulator", "notify.webhook"),
    ]:
        t.add(50 * HOUR + offset, "step.undone", step=step, lever=lever, restored={}, reason="")
    t.add(CLOSED_AT, "incident.closed", actor="alice")
    if until is None:
        return t.events
    return [e for e in t.events if (datetime.fromisoformat(e.at) - T0).total_seconds() <= until]


@pytest.fixture(scope="module")
def report() -> IncidentReport:
    return build_report(
        crisis(),
        playbook=PLAYBOOK,
        integrity={"chain": "ok", "seals": "ok", "replay": "ok"},
        now=T0 + timedelta(days=3),
    )


def spans(report: IncidentReport) -> dict[str, list[tuple[float, float, str]]]:
    return {
        m.step_id: [(i.start_offset_seconds, i.end_offset_seconds, i.ended) for i in m.intervals]
        for m in report.measures
    }


def test_facts_come_from_the_trigger_and_the_level_changes(report: IncidentReport) -> None:
    """The trigger's playbook, inputs and level, every level change, and who acted."""
    facts = report.facts
    assert ("INC-1", "violent-disorder", 3) == (facts.incident_id, facts.playbook, facts.version)
    assert "sha256:" + "ab" * 32 == facts.playbook_hash
    assert {"region": "GB"} == facts.inputs
    assert ("alice", at(0), "elevated") == (
        facts.triggered_by,
        facts.triggered_at,
        facts.level_at_start,
    )
    assert [
        (at(0), "elevated", "alice", "triggered"),
        (at(2 * HOUR), "critical", "alice", "disorder spreading to a second city"),
        (at(30 * HOUR), "elevated", "alice", "disorder subsiding"),
        (at(40 * HOUR), "critical", "bob", "fresh unrest"),
    ] == [(c.at, c.level, c.actor, c.reason) for c in facts.level_history]
    assert ["alice", "carol", "bob"] == facts.commanders  # bob first commanded at +40h
    assert ["alice", "bob"] == facts.approvers
    assert ("closed", at(CLOSED_AT), CLOSED_AT) == (
        facts.state,
        facts.closed_at,
        facts.duration_seconds,
    )
    assert ("alice", "disorder over") == (facts.stand_down_by, facts.stand_down_reason)


def test_key_figures_are_exact(report: IncidentReport) -> None:
    """Time to first lever, regulator, full mitigation, stand-down; active time; counts."""
    figures = report.key_figures
    assert 10 == figures.to_first_lever
    assert 12 == figures.to_first_measure
    assert 10 == figures.to_regulator_notified
    # surge-hate-queue, the last step of the sequence at the starting level (before +2h).
    assert 437 == figures.to_full_mitigation
    assert 50 * HOUR == figures.to_stand_down
    assert 172_788 + 179_569 + 179_565 + 136_800 == figures.measures_active_seconds
    assert 7 * 60 == figures.longest_approval_wait_seconds
    assert (1, 0, 0) == (
        figures.approvals_granted,
        figures.approvals_rejected,
        figures.approvals_timed_out,
    )
    assert (2, 1) == (figures.reviews_on_time, figures.reviews_missed)
    assert (0, 0, 0, False) == (
        figures.step_failures,
        figures.undo_failures,
        figures.retries,
        figures.incident_failed,
    )
    assert (1, 1) == (figures.reapplications, figures.renewals)


def test_every_interval_of_every_measure_is_collected(report: IncidentReport) -> None:
    """Applied, withdrawn and re-applied measures keep every interval and how each ended."""
    assert {
        "exclude-unreviewed": [(12, 2 * DAY, "expired")],
        "throttle-recommender": [(434, 50 * HOUR + 3, "undone_at_stand_down")],
        "raise-detection": [
            (2 * HOUR + 2, 30 * HOUR + 3, "withdrawn"),
            (40 * HOUR + 2, 50 * HOUR + 1, "undone_at_stand_down"),
        ],
        "surge-hate-queue": [(437, 50 * HOUR + 2, "undone_at_stand_down")],
    } == spans(report)
    by_id = {m.step_id: m for m in report.measures}
    assert 136_800 == by_id["raise-detection"].active_seconds
    assert "expired at 2026-08-05 12:00" == by_id["exclude-unreviewed"].outcome_text
    assert ["alice", "bob"] == by_id["throttle-recommender"].approved_by
    assert ["carol"] == [r.actor for r in by_id["exclude-unreviewed"].renewals]
    assert [("notify-regulator", "regulator", at(10), at(50 * HOUR + 4))] == [
        (n.step_id, n.to, n.sent_at, n.closing_sent_at) for n in report.notifications
    ]


def test_approval_rounds_record_votes_and_waiting_time(report: IncidentReport) -> None:
    """One round for the throttle: two votes, granted after seven minutes."""
    [round_] = report.approvals
    assert ("throttle-recommender", "granted", 420, at(432)) == (
        round_.step_id,
        round_.outcome,
        round_.wait_seconds,
        round_.settled_at,
    )
    assert [("alice", "commander"), ("bob", "legal")] == [(v.actor, v.role) for v in round_.votes]


def test_timeline_has_one_sentence_per_event(report: IncidentReport) -> None:
    """Each event becomes a row with its offset and a plain sentence."""
    assert len(crisis()) == len(report.timeline)
    text = {e.seq: e.text for e in report.timeline}
    assert "alice triggered violent-disorder v3 at level elevated" == text[1]
    assert "regulator notified (notify-regulator, notify.webhook)" == text[3]
    assert "alice approved throttle-recommender as commander (1 of 2)" == text[7]
    assert "throttle-recommender approved by alice and bob" == text[9]
    assert "raise-detection held back: not called for at level elevated" == text[12]
    assert "alice escalated to critical: disorder spreading to a second city" == text[16]
    assert "review missed (due 23:00)" == text[20]
    assert (
        "carol renewed exclude-unreviewed until 2026-08-05 12:00: reports still spiking" == text[22]
    )
    assert "measure raise-detection withdrawn (level is now elevated)" == text[24]
    assert "measure exclude-unreviewed lapsed" == text[28]
    assert "measure raise-detection undone at stand-down" == text[30]
    assert "closing message for notify-regulator sent (notify.webhook)" == text[33]
    assert 432 == report.timeline[8].offset_seconds


def test_review_is_due_until_the_deadline_then_overdue() -> None:
    """Due = close + the playbook's due_within; status flips the second after it."""
    due = T0 + timedelta(seconds=CLOSED_AT) + timedelta(days=7)
    before = build_report(crisis(), playbook=PLAYBOOK, now=due - timedelta(seconds=1))
    after = build_report(crisis(), playbook=PLAYBOOK, now=due + timedelta(hours=1))
    assert ("due", due.isoformat(), "head-of-trust-and-safety", 1) == (
        before.post_incident_review.status,
        before.post_incident_review.due_at,
        before.post_incident_review.owner,
        before.post_incident_review.remaining_seconds,
    )
    assert ("overdue", -HOUR) == (
        after.post_incident_review.status,
        after.post_incident_review.remaining_seconds,
    )


def test_review_defaults_to_fourteen_days_without_a_playbook() -> None:
    """No playbook: 14 days, no owner, and the level order is inferred from the events."""
    report = build_report(crisis(), now=T0 + timedelta(days=15))
    due = T0 + timedelta(seconds=CLOSED_AT) + timedelta(days=14)
    assert ("14d", due.isoformat(), "", "due") == (
        report.post_incident_review.due_within,
        report.post_incident_review.due_at,
        report.post_incident_review.owner,
        report.post_incident_review.status,
    )
    assert ["elevated", "critical"] == report.facts.levels
    assert "not checked" == report.integrity


def test_an_open_incident_runs_its_measures_up_to_now() -> None:
    """Open intervals end at `now`; a dormant step counts when the playbook names its lever."""
    report = build_report(crisis(until=HOUR), playbook=PLAYBOOK, now=T0 + timedelta(hours=3))
    assert ("running", 3 * HOUR, None) == (
        report.facts.state,
        report.facts.duration_seconds,
        report.key_figures.to_stand_down,
    )
    assert [(12, 3 * HOUR, "still_active")] == spans(report)["exclude-unreviewed"]
    assert [] == spans(report)["raise-detection"]
    assert "not applied: dormant: not called for at level elevated" == next(
        m.outcome_text for m in report.measures if m.step_id == "raise-detection"
    )
    assert ("pending", None) == (
        report.post_incident_review.status,
        report.post_incident_review.due_at,
    )


def test_a_step_the_failure_stopped_says_so_not_the_stand_down() -> None:
    t = Trail("INC-3")
    t.add(0, "incident.triggered", actor="dan", playbook="violent-disorder", version=3, inputs={})
    # Waiting for its approval when the first step fails: nothing new starts after a failure.
    t.add(0, "approval.requested", step="raise-detection", roles=["legal"], quorum=1)
    t.add(1, "step.started", step="throttle-recommender", lever="recommender.throttle", args={})
    t.add(2, "step.failed", step="throttle-recommender", lever="recommender.throttle", error="x")
    t.add(3, "incident.failed", step="throttle-recommender")
    t.add(HOUR, "stand_down.requested", actor="dan", reason="over")
    t.add(HOUR + 1, "incident.closed", actor="dan")
    report = build_report(t.events, playbook=PLAYBOOK, now=T0 + timedelta(hours=2))
    assert "not applied: the incident failed at throttle-recommender before it ran" == next(
        m.outcome_text for m in report.measures if m.step_id == "raise-detection"
    )


def test_failed_undo_and_rejection_are_findings() -> None:
    """An undo that failed leaves the measure open to close; a rejected step never ran."""
    t = Trail("INC-2")
    t.add(0, "incident.triggered", actor="dan", playbook="p", version=1, inputs={}, level=None)
    t.add(0, "step.started", step="surge", lever="moderation.surge", args=SURGE)
    t.add(5, "step.applied", step="surge", lever="moderation.surge")
    t.add(5, "approval.requested", step="throttle", roles=["legal"], quorum=1, deadline=at(905))
    t.add(65, "approval.rejected", actor="erin", step="throttle", role="legal", reason="too broad")
    t.add(100, "step.started", step="hashes", lever="hashes.block", args={})
    t.add(101, "step.failed", step="hashes", lever="hashes.block", error="platform said 409")
    t.add(102, "incident.failed", step="hashes")
    t.add(HOUR, "stand_down.requested", actor="dan", reason="over")
    t.add(HOUR + 1, "step.undo_failed", step="surge", lever="moderation.surge", error="timeout")
    t.add(HOUR + 2, "incident.closed", actor="dan")
    report = build_report(t.events, now=T0 + timedelta(hours=2))
    measures = {m.step_id: m for m in report.measures}
    # Its undo failed: it may still be in force when the report is made, after the close.
    assert [(5, 2 * HOUR, "undo_failed", True)] == [
        (i.start_offset_seconds, i.end_offset_seconds, i.ended, i.open)
        for i in measures["surge"].intervals
    ]
    assert "undo failed: timeout — may still be in force" == measures["surge"].outcome_text
    assert "not applied: rejected by erin: too broad" == measures["throttle"].outcome_text
    assert "not applied: failed: platform said 409" == measures["hashes"].outcome_text
    assert ("rejected", 60) == (report.approvals[0].outcome, report.approvals[0].wait_seconds)
    figures = report.key_figures
    assert (1, 1, True, None) == (
        figures.step_failures,
        figures.undo_failures,
        figures.incident_failed,
        figures.to_regulator_notified,
    )
    # The sequence stopped at the failure: what ran before it is no full mitigation.
    assert (None, "hashes") == (figures.to_full_mitigation, figures.full_mitigation_failed)
    assert "| not reached: hashes failed |" in render_markdown(report)
    assert "closed" == report.facts.state
    svg = render_chart_svg(report)
    assert 1 == svg.count('<rect class="bar bar-undo_failed"')
    assert 'class="level-line"' not in svg
    assert "undo failed: timeout" in render_html(report)


def test_a_measure_restored_by_hand_is_in_force_until_the_restore_was_recorded() -> None:
    """The undo failed at stand-down; a retry failed too; then a commander recorded the setting
    restored by hand: the measure's time in force ends there, and the timeline says who did
    what."""
    t = Trail("INC-3")
    t.add(0, "incident.triggered", actor="dan", playbook="p", version=1, inputs={}, level=None)
    t.add(0, "step.started", step="surge", lever="moderation.surge", args=SURGE)
    t.add(5, "step.applied", step="surge", lever="moderation.surge")
    t.add(HOUR, "stand_down.requested", actor="dan", reason="over")
    t.add(HOUR + 1, "step.undo_failed", step="surge", lever="moderation.surge", error="HTTP 400")
    t.add(HOUR + 60, "undo.retried", actor="erin", step="surge", reason="back?", error="HTTP 400")
    t.add(HOUR + 61, "step.undo_failed", step="surge", lever="moderation.surge", error="HTTP 400")
    t.add(
        HOUR + 600,
        "step.restored_by_hand",
        actor="erin",
        step="surge",
        lever="moderation.surge",
        reason="set in the admin tool",
    )
    t.add(HOUR + 600, "incident.closed", actor="dan")
    report = build_report(t.events, now=T0 + timedelta(hours=3))
    surge = next(m for m in report.measures if m.step_id == "surge")
    assert [(5, HOUR + 600, "restored_by_hand", False)] == [
        (i.start_offset_seconds, i.end_offset_seconds, i.ended, i.open) for i in surge.intervals
    ]
    assert "undo failed; restored by hand (erin): set in the admin tool" == surge.outcome_text
    assert 2 == report.key_figures.undo_failures
    timeline = render_markdown(report)
    assert "erin retried the undo of surge: back?" in timeline
    assert "erin recorded surge restored by hand on the platform: set in the admin tool" in timeline
    assert 1 == render_chart_svg(report).count('<rect class="bar bar-restored_by_hand"')


def test_people_who_only_approved_are_approvers_not_commanders() -> None:
    """Commanders are those who triggered, escalated, noted, stood down; approvers are listed
    apart, in the facts of every rendering."""
    t = Trail("INC-3")
    t.add(0, "incident.triggered", actor="root", playbook="p", version=1, inputs={}, level=None)
    t.add(1, "approval.requested", step="cut", roles=["commander", "legal"], quorum=2)
    t.add(2, "approval.given", actor="root", step="cut", role="commander", comment="")
    t.add(3, "approval.given", actor="lena", step="cut", role="legal", comment="")
    t.add(4, "approval.rejected", actor="bob", step="other", role="policy-lead", reason="no")
    report = build_report(t.events, now=T0 + timedelta(hours=1))
    assert (["root"], ["root", "lena", "bob"]) == (
        report.facts.commanders,
        report.facts.approvers,
    )
    markdown = render_markdown(report)
    assert "| Commanders | root |" in markdown
    assert "| Approvers | root, lena, bob |" in markdown
    assert "<tr><th>Approvers</th><td>root, lena, bob</td></tr>" in render_html(report)


def test_a_closing_notice_is_not_the_regulator_being_notified() -> None:
    """A regulator told only by the on_stand_down notice was not notified of the incident:
    the figure stays empty; the notice is still listed."""
    t = Trail("INC-4")
    t.add(0, "incident.triggered", actor="root", playbook="p", version=1, inputs={}, level=None)
    t.add(60, "stand_down.requested", actor="root", reason="over")
    t.add(61, "step.started", step="closing", lever="notify.webhook", args={"to": "regulator"})
    t.add(62, "step.applied", step="closing", lever="notify.webhook")
    report = build_report(t.events, now=T0 + timedelta(hours=1))
    assert None is report.key_figures.to_regulator_notified
    assert ["closing"] == [n.step_id for n in report.notifications]
    assert "standing_down" == report.facts.state  # not closed yet, as status says


def test_a_message_taking_a_step_back_is_no_measure_in_the_timeline() -> None:
    """A notification's undo is a message: withdrawn, it was sent; failed, it was not delivered,
    and nothing of it is left in force."""
    t = Trail("INC-5")
    t.add(0, "incident.triggered", actor="root", playbook="p", version=1, inputs={}, level="high")
    t.add(1, "step.started", step="tell", lever="notify.webhook", args={"to": "regulator"})
    t.add(2, "step.applied", step="tell", lever="notify.webhook")
    t.add(60, "step.withdrawn", step="tell", lever="notify.webhook", reason="level is now low")
    t.add(61, "step.started", step="tell", lever="notify.webhook", args={"to": "regulator"})
    t.add(62, "step.applied", step="tell", lever="notify.webhook")
    t.add(90, "stand_down.requested", actor="root", reason="over")
    t.add(91, "step.undo_failed", step="tell", lever="notify.webhook", error="HTTP 400")
    text = [e.text for e in build_report(t.events, now=T0 + timedelta(hours=1)).timeline]
    assert "message withdrawing tell sent (notify.webhook) (level is now low)" == text[3]
    assert "closing message for tell NOT delivered (notify.webhook): HTTP 400" == text[-1]


def test_an_undo_says_how_and_why_when_the_trail_does() -> None:
    """An explicit undo call is not a restore, and a reason (an undo retried after the others,
    a measure lifted under another) says why it came when it did."""
    t = Trail("INC-8")
    t.add(0, "incident.triggered", actor="root", playbook="p", version=1, inputs={}, level=None)
    for n, step in enumerate(("hashes", "throttle")):
        t.add(1 + n, "step.started", step=step, lever="recommender.throttle", args=THROTTLE)
        t.add(1 + n, "step.applied", step=step, lever="recommender.throttle")
    t.add(60, "stand_down.requested", actor="root", reason="over")
    t.add(61, "step.undone", step="hashes", lever="hashes.remove", restored=None)
    why = "retried after the other measures (recommender.throttle: platform error HTTP 503)"
    t.add(90, "step.undone", step="throttle", lever="recommender.throttle", restored={}, reason=why)
    text = [e.text for e in build_report(t.events, now=T0 + timedelta(hours=1)).timeline]
    assert "measure hashes undone at stand-down by its undo call (hashes.remove)" == text[-2]
    assert f"measure throttle undone at stand-down ({why})" == text[-1]


def test_a_notification_sent_again_at_a_level_reached_again_is_listed_each_time() -> None:
    """Told at critical, told it is over on de-escalation, told again at critical and at the
    close: two rows, each with its own closing message."""
    t = Trail("INC-6")
    t.add(0, "incident.triggered", actor="root", playbook="p", version=1, inputs={}, level="c")
    for start, end, kind in ((60, 120, "step.withdrawn"), (180, 240, "step.undone")):
        t.add(start, "step.started", step="tell-exec", lever="notify.send", args={"to": "execs"})
        t.add(start, "step.applied", step="tell-exec", lever="notify.send")
        if kind == "step.undone":
            t.add(end - 1, "stand_down.requested", actor="root", reason="over")
        t.add(end, kind, step="tell-exec", lever="notify.send")
    report = build_report(t.events, now=T0 + timedelta(hours=1))
    assert [(at(60), at(120)), (at(180), at(240))] == [
        (n.sent_at, n.closing_sent_at) for n in report.notifications
    ]
    assert 2 == render_markdown(report).count("| `tell-exec` | execs |")


def test_full_mitigation_is_not_reached_while_a_first_level_approval_is_awaited() -> None:
    """Escalated while a step of the first level still waits for its approval: the first level
    was never fully in force, and the figure says which step it waited for; approved first, the
    figure is when that step came into force."""

    def trail(approved_at: float | None) -> Trail:
        t = Trail("INC-7")
        t.add(0, "incident.triggered", actor="root", playbook="p", version=1, inputs={}, level="e")
        t.add(1, "step.started", step="surge", lever="moderation.surge", args={})
        t.add(2, "step.applied", step="surge", lever="moderation.surge")
        t.add(2, "approval.requested", step="cut", roles=["commander"], quorum=1, deadline=at(900))
        if approved_at is not None:
            t.add(approved_at, "approval.granted", step="cut", approvers=["alice"])
            t.add(approved_at, "step.started", step="cut", lever="recommender.throttle", args={})
            t.add(approved_at + 1, "step.applied", step="cut", lever="recommender.throttle")
        t.add(120, "level.escalated", actor="alice", level="s", reason="spreading")
        return t

    waited = build_report(trail(None).events, now=T0 + timedelta(hours=1))
    assert (None, ["cut"]) == (
        waited.key_figures.to_full_mitigation,
        waited.key_figures.full_mitigation_awaiting,
    )
    assert (
        "| Trigger → full mitigation (initial sequence in force) | not reached: cut awaiting "
        in (render_markdown(waited))
    )
    approved = build_report(trail(60).events, now=T0 + timedelta(hours=1))
    assert (61.0, []) == (
        approved.key_figures.to_full_mitigation,
        approved.key_figures.full_mitigation_awaiting,
    )


def test_an_approval_timeout_that_fails_the_step_is_a_step_failure() -> None:
    """`on_timeout: fail` fails the step (and the incident) with no step.failed event."""
    t = Trail("INC-5")
    t.add(0, "incident.triggered", actor="root", playbook="p", version=1, inputs={}, level=None)
    t.add(1, "approval.requested", step="t-fail", roles=["legal"], quorum=1, deadline=at(61))
    t.add(61, "approval.timed_out", step="t-fail", on_timeout="fail")
    t.add(61, "incident.failed", step="t-fail", error="approval timed out")
    report = build_report(t.events, now=T0 + timedelta(hours=1))
    figures = report.key_figures
    assert (1, 1, True) == (
        figures.step_failures,
        figures.approvals_timed_out,
        figures.incident_failed,
    )
    assert "failed" == report.facts.state
    assert "| Step failures / undo failures / retries | 1 / 0 / 0 |" in render_markdown(report)


def test_a_measure_whose_apply_had_no_answer_is_in_force_until_taken_back() -> None:
    """Its apply timed out (the step failed), and the stand-down sent it again to learn what it
    replaced: the measure was in force, and says how that was learned, then undone."""
    t = Trail("INC-8")
    t.add(0, "incident.triggered", actor="root", playbook="p", version=1, inputs={})
    t.add(1, "step.started", step="surge", lever="moderation.surge", args=SURGE)
    t.add(2.9, "step.failed", step="surge", lever="moderation.surge", error="no answer", attempts=2)
    t.add(60, "stand_down.requested", actor="alice", reason="calm")
    t.add(
        61, "step.applied", step="surge", lever="moderation.surge", previous={}, after_failure=True
    )
    t.add(62, "step.undone", step="surge", lever="moderation.surge", restored={}, reason="")
    t.add(62, "incident.closed", actor="alice")
    report = build_report(t.events, now=T0 + timedelta(hours=1))
    (measure,) = report.measures
    assert ("undone_at_stand_down", 1.0) == (measure.outcome, measure.active_seconds)
    assert any(
        "its apply had had no answer; sent again, the platform said what it replaced" in line.text
        for line in report.timeline
    )
    # The failure says how hard it tried: its attempts, since the call began.
    assert "surge failed (moderation.surge) after 2 attempts over 1.9s: no answer" in [
        line.text for line in report.timeline
    ]


def test_a_failure_recorded_before_attempts_were_says_how_long_it_tried() -> None:
    t = Trail("INC-9")
    t.add(0, "incident.triggered", actor="root", playbook="p", version=1, inputs={})
    t.add(1, "step.started", step="surge", lever="moderation.surge", args=SURGE)
    t.add(31, "step.failed", step="surge", lever="moderation.surge", error="activity timed out")
    report = build_report(t.events, now=T0 + timedelta(hours=1))
    assert "surge failed (moderation.surge) after 30s: activity timed out" in [
        line.text for line in report.timeline
    ]


def test_json_round_trips(report: IncidentReport) -> None:
    """render_json is plain JSON and reads back into the same report."""
    data = render_json(report)
    assert data == json.loads(json.dumps(data))
    assert report == IncidentReport.model_validate(json.loads(json.dumps(data)))
    assert {"chain": "ok", "seals": "ok", "replay": "ok"} == data["integrity"]


def test_svg_has_one_bar_per_interval_and_is_deterministic(report: IncidentReport) -> None:
    """Five intervals, five bars, coloured by how each ended; the same text every time."""
    svg = render_chart_svg(report)
    assert 5 == svg.count('<rect class="bar ')
    assert 3 == svg.count('class="bar bar-undone_at_stand_down"')
    assert 1 == svg.count('class="bar bar-expired"')
    assert 1 == svg.count('class="bar bar-withdrawn"')
    assert 1 == svg.count('class="level-line"')
    assert svg.startswith("<svg ") and svg.rstrip().endswith("</svg>")
    assert ["0", "+6h", "+12h", "+18h", "+1d", "+1d 6h", "+1d 12h", "+1d 18h", "+2d"] == (
        re.findall(r'class="tick-label"[^>]*>([^<]*)<', svg)
    )
    assert svg == render_chart_svg(report.model_copy(deep=True))


def test_html_is_one_page_with_the_chart_and_every_step(report: IncidentReport) -> None:
    """Inline CSS, the SVG inline, every step id, no external resources."""
    html = render_html(report)
    assert render_chart_svg(report) in html
    assert "<style>" in html
    assert not re.search(r'<(link|script)\b|src="http', html)
    step_ids = {e.step_id for e in crisis() if e.step_id}
    assert {
        "notify-regulator",
        "exclude-unreviewed",
        "throttle-recommender",
        "raise-detection",
        "surge-hate-queue",
    } == step_ids
    for step_id in step_ids:
        assert step_id in html
    assert "@media print" in html


def test_html_and_markdown_escape_what_people_typed() -> None:
    """A note's markup shows as text, never as markup, in HTML and in Markdown (which renderers
    pass raw HTML through); inputs shown as code stay as typed (code is text already)."""
    t = Trail()
    t.add(0, "incident.triggered", actor="a", playbook="p", version=1, inputs={"x": "<b>"})
    t.add(1, "note.added", actor="a", text="<script>alert(1)</script> & more")
    t.add(2, "note.added", actor="a", text="held until level >= 'severe'")
    report = build_report(t.events, now=T0)
    html = render_html(report)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>" not in html
    markdown = render_markdown(report)
    assert "&lt;script>alert(1)&lt;/script> &amp; more" in markdown
    assert "held until level >= 'severe'" in markdown  # no tag starts with `>`: as typed
    assert "<script>" not in markdown
    assert '`{"x": "<b>"}`' in markdown


def test_markdown_links_the_chart_file_and_lists_the_figures(report: IncidentReport) -> None:
    """The chart is an image link to the file the caller writes beside the .md."""
    name = chart_filename(report.facts.incident_id)
    markdown = render_markdown(report, name)
    assert "report-INC-1.svg" == name
    assert "](report-INC-1.svg)" in markdown
    assert "| Trigger → regulator notified | 10s |" in markdown
    assert "| Trigger → full mitigation (initial sequence in force) | 7m 17s |" in markdown
    assert "review missed (due 23:00)" in markdown
    assert "![" not in render_markdown(report, None)


def test_key_figures_under_a_minute_keep_their_fraction(report: IncidentReport) -> None:
    """The first measures usually come within a second: "0s" would hide how fast."""
    figures = report.key_figures.model_copy(
        update={"to_first_lever": 0.0434, "to_first_measure": 1.26, "to_regulator_notified": 0.0}
    )
    markdown = render_markdown(report.model_copy(update={"key_figures": figures}), None)
    assert "| Trigger → first lever applied | 43 ms |" in markdown
    assert "| Trigger → first measure in force | 1.3s |" in markdown
    assert "| Trigger → regulator notified | 0 ms |" in markdown


def test_events_of_another_incident_or_without_a_trigger_are_refused() -> None:
    """A report covers one whole trail: mixed incidents or a missing trigger are errors."""
    events = crisis()
    with pytest.raises(ValueError, match="several incidents"):
        build_report([*events, Trail("INC-9").add(0, "note.added", text="x").events[0]])
    with pytest.raises(ValueError, match=r"has no incident\.triggered"):
        build_report(events[1:])
    with pytest.raises(ValueError, match="no audit events"):
        build_report([])


def test_an_action_recorded_ahead_of_its_trigger_still_reports() -> None:
    """Before the patch `actions-recorded-after-the-trigger`, a stand-down that reached the
    incident before its first workflow task was recorded first: the report reads it as is."""
    t = Trail("INC-6")
    t.add(0, "stand_down.requested", actor="dan", reason="false alarm")
    t.add(0, "incident.triggered", actor="erin", playbook="p", version=2, inputs={}, level="low")
    t.add(1, "incident.closed", actor="dan")
    report = build_report(t.events, now=T0 + timedelta(hours=1))
    facts = report.facts
    assert ("erin", "p", 2, "low", "closed") == (
        facts.triggered_by,
        facts.playbook,
        facts.version,
        facts.level_at_start,
        facts.state,
    )
    assert ["stand_down.requested", "incident.triggered", "incident.closed"] == [
        e.kind for e in report.timeline
    ]


def test_deliveries_read_as_who_was_told_and_what_failed() -> None:
    """Each channel's delivery is a sentence; a failed one says so, with its error."""
    t = Trail()
    t.add(0, "incident.triggered", actor="alice", playbook="p", version=1, inputs={})
    common = {"operation": "apply-1", "stakeholder": "regulator", "channel": "webhook"}
    t.add(
        1,
        "notification.delivered",
        step="tell",
        target="webhook:https://r",
        message_id="m-1",
        **common,
    )
    t.add(
        2,
        "notification.failed",
        step="tell",
        target="email:a@r.example",
        error="554 refused",
        **common,
    )
    text = [e.text for e in build_report(t.events).timeline]
    assert "regulator told via webhook:https://r (tell; message id m-1)" == text[1]
    assert "delivery to regulator via email:a@r.example FAILED (tell): 554 refused" == text[2]


def test_overlap_events_read_as_what_happened_between_incidents() -> None:
    """Measures on the same settings as another incident's: each hand-back event is a sentence
    naming the other incident, and one left to commanders says so."""
    t = Trail()
    t.add(0, "incident.triggered", actor="alice", playbook="p", version=1, inputs={})
    lifted = {"by": "INC-0", "other_step": "cut", "reason": "expiry reached"}
    t.add(1, "overlap.lifted", steps=["limit"], **lifted)
    t.add(2, "overlap.restored", step="limit", incident="INC-0", other_step="cut")
    t.add(3, "overlap.reasserting", step="limit", incident="INC-9", steps=["x"])
    t.add(4, "overlap.reasserting", step="limit", incident="INC-9", steps=["x"], refused=True)
    t.add(
        5,
        "overlap.unresolved",
        step="limit",
        incidents={"INC-8": ["a"], "INC-9": ["x"]},
        reason="more than one later incident holds measures on these settings",
        lifted={"INC-9": ["x"]},
    )
    t.add(6, "overlap.left_lifted", steps=["limit"], why="...", **lifted)
    t.add(
        7, "overlap.restore_failed", step="limit", incident="INC-0", other_step="cut", error="503"
    )
    t.add(8, "overlap.check_failed", step="limit", error="store away")
    text = [e.text for e in build_report(t.events).timeline][1:]
    assert [
        "INC-0 took back cut: lifting limit to put it back over that restore",
        "INC-0's restore of cut applied again",
        "limit's restore lifted INC-9's measures there: it puts them back",
        "limit's restore lifted INC-9's measures; it was closing: restoring again",
        "limit's restore lifted measures of INC-8, INC-9; putting them back is left to "
        "commanders (more than one later incident holds measures on these settings)",
        "INC-0 took back cut, lifting limit where they overlap; putting it back is left to "
        "commanders",
        "INC-0's restore of cut FAILED: 503",
        "looking for later incidents on limit's settings failed: store away",
    ] == text


def test_a_step_held_back_by_its_condition_says_so() -> None:
    """A step.dormant that names its condition reads as the condition, not the level (earlier
    trails, which never name it, read as before)."""
    t = Trail().add(0, "incident.triggered", actor="alice", playbook="p", version=1)
    t.add(1, "step.dormant", step="police", level="elevated", condition="inputs.region == 'GB'")
    t.add(2, "step.dormant", step="surge", level="elevated")
    report = build_report(t.events, now=T0 + timedelta(hours=1))
    text = {e.seq: e.text for e in report.timeline}
    assert "police held back: its condition is false (inputs.region == 'GB')" == text[2]
    assert "surge held back: not called for at level elevated" == text[3]


@pytest.mark.parametrize(
    ("seconds", "label"),
    [(0.4, "+00:00:00"), (899.6, "+00:14:59"), (900.0, "+00:15:00"), (90061.9, "+1d 01:01:01")],
)
def test_an_offset_reads_as_a_clock_does_cut_to_the_second(seconds: float, label: str) -> None:
    """14:59.6 after the trigger reads +00:14:59, as a clock shows it: rounded, it read
    +00:15:00, the minute a 15-minute deadline passes."""
    assert label == offset_label(seconds)


def test_inputs_in_other_scripts_are_shown_as_written() -> None:
    """An input in any script reads as it was given, not as JSON escapes."""
    t = Trail("INC-9")
    given = {"challenge_terms": "étoile 🌟"}
    t.add(0, "incident.triggered", actor="root", playbook="p", version=1, inputs=given, level=None)
    report = build_report(t.events, now=T0 + timedelta(hours=1))
    assert '`{"challenge_terms": "étoile 🌟"}`' in render_markdown(report)
    assert "étoile 🌟" in render_html(report)
