"""Histories recorded from earlier versions of the interpreter still replay through today's code,
and today's code records exactly the audit events those incidents recorded."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from engine.verification import (
    IncidentHistory,
    recorded_audit_events,
    recorded_audit_heads,
    replay_incident,
)

HISTORIES = sorted((Path(__file__).resolve().parents[1] / "histories").glob("*.json"))


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays_and_reproduces_its_audit_events(path: Path) -> None:
    """No nondeterminism; the replay's audit events equal the history's, hash for hash."""
    history = IncidentHistory.from_file(path)
    # v1 wrote audit batches as regular activities, whose inputs the history holds whole; later
    # versions write them as local activities, whose markers hold each write's chain head (which
    # commits to every earlier event).
    recorded = await recorded_audit_events(history)
    heads = recorded_audit_heads(history)
    assert recorded or heads
    report = await replay_incident(history, recorded)
    assert report.divergence is None
    assert report.replay_vs_history.matches, report.replay_vs_history.first_difference
    covered = max([len(recorded), *(seq for seq, _ in heads)])
    assert report.replay_vs_history.events == covered > 0


def test_histories_are_kept() -> None:
    """Each version's histories are committed (a stand-down and a failure): v1, v2 with audit
    writes as local activities and a patch marker per change, v3 with one version marker (and a
    timer restarted for each measure applied with an expiry), v4 keeping that timer, and v5,
    whose last lever call of each phase writes the trail (and a third: every step applied; two
    incidents whose measures overlap: the earlier lapses, the later puts its own back; two more:
    the earlier is stood down by force and hands the setting over; and a lever whose failure
    after its retries says when it failed and after how many attempts); v6 and v7, whose step
    waiting for its approval holds back only the later steps on its settings (and five more: the
    steps after it went on while it waited; a parallel branch that landed after its sibling
    failed with on_failure undo, recorded before anything took it back, taken back as it landed,
    and landed before the undos;
    an escalation running an earlier step under a later one on its settings, and the same
    recorded before it did; a stand-down whose undo failed for good, closed at once as before
    the close waited for a restore, and since: the undo retried, or restored by hand; an
    on_failure undo taking back a measure under a later incident's, before and since it handed
    the settings back, and a missed review's stand-down, likewise; a stand-down sent before any
    worker ran the incident, before and since it followed the trigger; a failed withdrawal
    restored by hand under a later incident's measure, before and since that handed the
    settings back; a measure lapsed under a later one and renewed, before and since it came back
    under it; a stand-down's undo the platform erred on at first, before and since it was put
    off until the other measures were undone, and the last measure's erring for longer, before
    and since it was put off behind those; a measure whose apply had no answer, left in force
    by the stand-down, taken back, and since its step.failed says so)."""
    kept = {p.stem for p in HISTORIES}
    versions = ("v1", "v2", "v3", "v4", "v5", "v6", "v7")
    assert {f"{v}-{kind}" for v in versions for kind in ("stand-down", "failed")} <= kept
    assert {"v5-applied", "v5-overlap-earlier", "v5-overlap-later"} <= kept
    assert {"v5-forced-earlier", "v5-forced-later", "v5-retried-failure"} <= kept
    assert {
        "v7-held",
        "v7-landed",
        "v7-landed-unpatched",
        "v7-landed-settled",
        "v7-under",
        "v7-under-unpatched",
        "v7-undo-failed-unpatched",
        "v7-restored",
        "v7-restored-by-hand",
        "v7-unasked-unpatched-earlier",
        "v7-unasked-unpatched-later",
        "v7-unasked-earlier",
        "v7-unasked-later",
        "v7-late-unpatched",
        "v7-late",
        "v7-by-hand-unpatched-earlier",
        "v7-by-hand-unpatched-later",
        "v7-by-hand-earlier",
        "v7-by-hand-later",
        "v7-missed-unpatched-earlier",
        "v7-missed-unpatched-later",
        "v7-missed-earlier",
        "v7-missed-later",
        "v7-renewed-unpatched",
        "v7-renewed",
        "v7-put-off-unpatched",
        "v7-put-off",
        "v7-put-off-last-unpatched",
        "v7-put-off-last",
        "v7-undo-erring-unpatched",
        "v7-undo-erring",
        "v7-undo-erring-trail-first",
        "v7-no-answer-unpatched",
        "v7-no-answer",
        "v7-recorded-no-answer",
        "v7-forced-no-answer-unpatched-earlier",
        "v7-forced-no-answer-unpatched-later",
        "v7-forced-no-answer-earlier",
        "v7-forced-no-answer-later",
        "v7-withdrawn-on-landing-unpatched",
        "v7-withdrawn-on-landing",
        "v7-notice-refused-unpatched",
        "v7-notice-refused",
        "v7-de-escalated-unpatched",
        "v7-de-escalated",
        "v7-heard-before-notice-unpatched",
        "v7-heard-before-notice",
    } <= kept


async def test_an_edited_history_file_is_caught(tmp_path: Path) -> None:
    """Changing who acted inside an exported history no longer matches what the replay makes."""
    source = next(p for p in HISTORIES if p.stem == "v1-stand-down")
    original = IncidentHistory.from_file(source)
    data = json.loads(source.read_text())
    for event in data["events"]:
        attributes = event.get("activityTaskScheduledEventAttributes")
        if attributes and attributes["activityType"]["name"] == "write_audit":
            payload = attributes["input"]["payloads"][0]
            text = base64.b64decode(payload["data"]).decode()
            payload["data"] = base64.b64encode(
                text.replace("recorder", "mallory").encode()
            ).decode()
            break
    edited = tmp_path / "v1-stand-down.json"
    edited.write_text(json.dumps(data))
    report = await replay_incident(
        IncidentHistory.from_file(edited), await recorded_audit_events(original)
    )
    assert report.replay_vs_store.matches
    assert not report.replay_vs_history.matches
    assert "seq 1" in (report.replay_vs_history.first_difference or "")
