"""Record workflow histories that the replay tests keep forever.

Run against a fresh dev server with today's interpreter before changing it:
    python -m tests.histories.record v1   # (v2, ...: the tag of the version being kept)
    python -m tests.histories.record v5 overlap   # two incidents: a lapse under a later measure
    python -m tests.histories.record v5 forced    # a forced stand-down hands a setting over,
                                                  # and a lever that fails after its retries
    python -m tests.histories.record v7 held      # a step waiting for its approval while the
                                                  # rest go on but one on the same settings
    python -m tests.histories.record v7 landed    # a parallel branch lands after its sibling
                                                  # failed with on_failure undo (kept renamed:
                                                  # v7-landed-unpatched, before any patch on it;
                                                  # v7-landed, taken back on landing;
                                                  # v7-landed-settled, landed before the undos)
    python -m tests.histories.record v7 under     # an escalation runs an earlier step under a
                                                  # later one on its settings (v7-under;
                                                  # v7-under-unpatched: before it was)
    python -m tests.histories.record v7 restore   # a stand-down whose undo fails for good (kept
                                                  # as v7-undo-failed-unpatched, closed at once,
                                                  # before the close waited for a restore;
                                                  # v7-restored: the undo retried, failing again,
                                                  # then undone; v7-restored-by-hand)
    python -m tests.histories.record v7 unasked   # an earlier incident's on_failure undo takes
                                                  # back a measure under a later one's (kept as
                                                  # v7-unasked-unpatched-*, before it handed the
                                                  # settings back; v7-unasked-*: handed back)
    python -m tests.histories.record v7 missed    # a missed review stands an incident down under
                                                  # a later one's measure (kept as
                                                  # v7-missed-unpatched-*, the later measure
                                                  # lifted unannounced; v7-missed-*: handed back)
    python -m tests.histories.record v7 by-hand   # a withdrawal whose undo failed, under a later
                                                  # incident's measure, restored by hand (kept as
                                                  # v7-by-hand-unpatched-*, the later measure left
                                                  # lifted; v7-by-hand-*: handed back)
    python -m tests.histories.record v7 late      # a stand-down sent before any worker ran the
                                                  # incident (kept as v7-late-unpatched, recorded
                                                  # ahead of the trigger; v7-late: after it)
    python -m tests.histories.record v7 renewed   # a measure lapsed under a later one, renewed
                                                  # (kept as v7-renewed-unpatched, applied over
                                                  # it; v7-renewed: applied under it)
    python -m tests.histories.record v7 put-off   # the platform errs on a stand-down's undo for
                                                  # its first tries (kept as
                                                  # v7-put-off-unpatched, the others waiting
                                                  # behind its retries; v7-put-off: undone first)
    python -m tests.histories.record v7 put-off-last   # as put-off, and the last measure's undo
                                                  # errs for longer (v7-put-off-last-unpatched:
                                                  # the put-off ones wait behind its retries;
                                                  # v7-put-off-last: it is put off behind them)
    python -m tests.histories.record v7 undo-erring   # the oldest measure's undo errs five times
                                                  # (v7-undo-erring-unpatched: status shows no
                                                  # error while it retries; v7-undo-erring: it does;
                                                  # v7-undo-erring-trail-first: and the trail so
                                                  # far is written before it retries)
    python -m tests.histories.record v7 withdrawn-on-landing   # a de-escalation while an
                                                  # escalation's notice is on its way (kept as
                                                  # v7-withdrawn-on-landing-unpatched, left
                                                  # applied; v7-withdrawn-on-landing: withdrawn)
    python -m tests.histories.record v7 notice-refused   # the platform refuses a stand-down's
                                                  # notice (kept as v7-notice-refused-unpatched,
                                                  # sent again and failed twice;
                                                  # v7-notice-refused: refused for good at once)
Each recorded history is replayed by tests/workflows/test_replay_histories.py, so a change to the
interpreter that would break incidents already running fails the suite.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

import httpx
from temporalio.client import Client

from core.settings import Settings
from engine.devserver import free_port, start_dev_server
from engine.incidents import Incidents
from engine.temporal import connect, running_worker
from sandbox.app import create_app
from store.audit_store import AuditStore
from tests.helpers import serve_app
from workflows.crisis import CrisisWorkflow
from workflows.incident import ApproveRequest, LevelRequest, RenewRequest

HERE = Path(__file__).resolve().parent
FAILING = """
playbook: record-failing
version: 1
title: A lever that fails
description: For the recorded history of a failed incident.
steps:
  - id: throttle
    do: recommender.throttle
    with: {region: FR, categories: [fraud], reach_multiplier: 0.5}
  - id: threshold
    do: detection.set_threshold
    with: {classifier: no-such-classifier, threshold: 0.3}
  - id: surge
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 5}
"""
# Every step applied before the stand-down (from v5: the last lever call of each phase writes
# the audit trail itself).
APPLIED = """
playbook: record-applied
version: 1
title: Two levers, both applied
description: For the recorded history of an incident that applied all it could.
steps:
  - id: throttle
    do: recommender.throttle
    with: {region: FR, categories: [fraud], reach_multiplier: 0.5}
  - id: threshold
    do: detection.set_threshold
    with: {classifier: fraud, threshold: 0.3}
    expires_after: 6h
"""


# Two incidents on one setting: the earlier's measure lapses under the later's, which is told
# and puts its own back (the `reassert` update).
EARLIER = """
playbook: record-earlier
version: 1
title: A measure that lapses
description: For the recorded history of a measure lapsing under a later incident's.
steps:
  - id: throttle
    do: recommender.throttle
    with: {region: FR, categories: [fraud, scams], reach_multiplier: 0.5}
    expires_after: 3s
"""
LATER = """
playbook: record-later
version: 1
title: A measure over an earlier incident's
description: For the recorded history of a measure put back after an earlier one lapsed.
steps:
  - id: throttle
    do: recommender.throttle
    with: {region: FR, categories: [fraud], reach_multiplier: 0.25}
"""


async def record_overlap(tag: str, incidents: Incidents, client: Client, work: Path) -> None:
    ids = {name: f"REC-{tag}-overlap-{name}" for name in ("earlier", "later")}
    for name, body in (("earlier", EARLIER), ("later", LATER)):
        path = work / f"record-{name}.yaml"
        path.write_text(body)
        await incidents.trigger(str(path), {}, actor="recorder", incident_id=ids[name])
        await asyncio.sleep(0.5)
    for _ in range(200):  # the lapse, and the later incident's measure put back
        status = await incidents.status(ids["later"])
        if status.steps[0].applications == 2 and status.steps[0].state == "applied":
            break
        await asyncio.sleep(0.05)
    else:
        raise RuntimeError("the later incident's measure was not put back")
    for name in ("later", "earlier"):
        await incidents.stand_down(ids[name], actor="recorder", reason="recorded")
    await _keep(client, {f"{tag}-overlap-{name}": incident_id for name, incident_id in ids.items()})


RETRIED = """
playbook: record-retried
version: 1
title: A lever that fails after its retries
description: For the recorded history of a failure stamped when it happened.
steps:
  - id: throttle
    do: recommender.throttle
    with: {region: FR, categories: [fraud], reach_multiplier: 0.5}
  - id: threshold
    do: detection.set_threshold
    with: {classifier: fraud, threshold: 0.3}
    retry: {max_attempts: 3, initial_interval: 100ms, max_interval: 200ms}
"""


async def record_forced(
    tag: str, incidents: Incidents, client: Client, work: Path, sandbox_url: str
) -> None:
    """Earlier and later incidents on one setting, the earlier stood down by force (it hands the
    setting to the later one); and a lever whose failures say when and after how many attempts."""
    ids = {name: f"REC-{tag}-forced-{name}" for name in ("earlier", "later")}
    for name, body in (("earlier", LATER.replace("0.25", "0.5")), ("later", LATER)):
        path = work / f"record-forced-{name}.yaml"
        path.write_text(body.replace("record-later", f"record-forced-{name}"))
        await incidents.trigger(str(path), {}, actor="recorder", incident_id=ids[name])
        await _settled(incidents, ids[name])
    await incidents.stand_down(ids["earlier"], actor="recorder", reason="recorded", force=True)
    await incidents.stand_down(ids["later"], actor="recorder", reason="recorded")
    kept = {f"{tag}-forced-{name}": incident_id for name, incident_id in ids.items()}

    async with httpx.AsyncClient() as http:
        fault = {"path_prefix": "/detection", "status": 503}
        (await http.post(f"{sandbox_url}/faults", json=fault)).raise_for_status()
        retried = work / "record-retried.yaml"
        retried.write_text(RETRIED)
        incident_id = f"REC-{tag}-retried-failure"
        await incidents.trigger(str(retried), {}, actor="recorder", incident_id=incident_id)
        await _settled(incidents, incident_id)
        (await http.delete(f"{sandbox_url}/faults")).raise_for_status()
    await incidents.stand_down(incident_id, actor="recorder", reason="recorded")
    kept[f"{tag}-retried-failure"] = incident_id
    await _keep(client, kept)


# From v7: the steps after one waiting for its approval go on, but not one on its settings.
HELD = """
playbook: record-held
version: 1
title: A step waiting for its approval
description: For the recorded history of the steps after it going on meanwhile.
steps:
  - id: cut
    do: recommender.throttle
    with: {region: FR, categories: [fraud], reach_multiplier: 0.5, reshare_limit: 5}
    approval: {roles: [commander], timeout: 1h, on_timeout: skip}
  - id: threshold
    do: detection.set_threshold
    with: {classifier: fraud, threshold: 0.3}
  - id: stricter-cut
    do: recommender.throttle
    with: {region: FR, categories: [fraud], reach_multiplier: 0.5, reshare_limit: 1}
"""


async def record_held(tag: str, incidents: Incidents, client: Client, work: Path) -> None:
    incident_id = f"REC-{tag}-held"
    path = work / "record-held.yaml"
    path.write_text(HELD)
    await incidents.trigger(str(path), {}, actor="recorder", incident_id=incident_id)
    for _ in range(200):
        states = {s.id: s.state for s in (await incidents.status(incident_id)).steps}
        if states["threshold"] == "applied":
            break
        await asyncio.sleep(0.05)
    else:
        raise RuntimeError("the step after the one waiting for approval did not go on")
    approval = ApproveRequest(step_id="cut", actor="recorder", role="commander", comment="ok")
    await incidents.act(incident_id, CrisisWorkflow.approve, approval)
    await _settled(incidents, incident_id)
    await incidents.stand_down(incident_id, actor="recorder", reason="recorded")
    await _keep(client, {f"{tag}-held": incident_id})


# A step fails with on_failure undo while a parallel branch's call is still under way: with the
# patch `undo-on-landing-after-failure` that branch was taken back once it landed; from the patch
# `failure-stops-at-once-and-settles-calls`, it lands before every measure is taken back.
LANDED = """
playbook: record-landed
version: 1
title: A branch landing after its sibling failed
description: For the recorded history of a measure taken back as it lands.
steps:
  - id: threshold
    do: detection.set_threshold
    with: {classifier: fraud, threshold: 0.3}
  - id: both
    parallel:
      - id: surge
        do: moderation.surge
        with: {queue: fraud, extra_reviewers: 5}
        on_failure: undo
      - id: throttle
        do: recommender.throttle
        with: {region: FR, categories: [fraud], reach_multiplier: 0.5}
"""


async def record_landed(
    tag: str, incidents: Incidents, client: Client, work: Path, sandbox_url: str
) -> None:
    incident_id = f"REC-{tag}-landed"
    path = work / "record-landed.yaml"
    path.write_text(LANDED)
    async with httpx.AsyncClient() as http:
        for fault in (
            {"path_prefix": "/moderation", "status": 400, "times": 1},
            {"path_prefix": "/recommender", "status": 0, "latency_ms": 1500, "times": 1},
        ):
            (await http.post(f"{sandbox_url}/faults", json=fault)).raise_for_status()
        await incidents.trigger(str(path), {}, actor="recorder", incident_id=incident_id)
        for _ in range(200):
            status = await incidents.status(incident_id)
            if status.state == "failed" and all(s.state != "running" for s in status.steps):
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("the incident did not fail and settle")
    await incidents.stand_down(incident_id, actor="recorder", reason="recorded")
    await _keep(client, {f"{tag}-landed": incident_id})


# An escalation runs a step the sequence passed, on the settings of a later step already in
# force: from the patch `apply-under-later-measures`, it is applied under that one.
UNDER = """
playbook: record-under
version: 1
title: An earlier step applied under a later one
description: For the recorded history of an escalation keeping the later measure in force.
levels: [elevated, severe]
steps:
  - id: severe-cut
    level: severe
    do: recommender.throttle
    with: {region: FR, categories: [fraud], reach_multiplier: 0.5}
  - id: stricter
    do: recommender.throttle
    with: {region: FR, categories: [fraud], reach_multiplier: 0.25, reshare_limit: 1}
"""


async def record_under(tag: str, incidents: Incidents, client: Client, work: Path) -> None:
    incident_id = f"REC-{tag}-under"
    path = work / "record-under.yaml"
    path.write_text(UNDER)
    await incidents.trigger(str(path), {}, actor="recorder", incident_id=incident_id)
    await _settled(incidents, incident_id)
    escalation = LevelRequest(actor="recorder", reason="recorded")
    await incidents.act(incident_id, CrisisWorkflow.escalate, escalation)
    await _states(incidents, incident_id, {"severe-cut": "applied", "stricter": "applied"})
    await incidents.stand_down(incident_id, actor="recorder", reason="recorded")
    await _keep(client, {f"{tag}-under": incident_id})


# A measure lapses under a later step's on the same settings and is renewed (CrisisWorkflow.renew).
RENEWED = """
playbook: record-renewed
version: 1
title: A measure renewed under a later one
description: For the recorded history of a lapsed measure renewed under a later one in force.
steps:
  - id: looser
    do: recommender.throttle
    with: {region: FR, categories: [fraud], reach_multiplier: 0.5, reshare_limit: 5}
    expires_after: 3s
  - id: stricter
    do: recommender.throttle
    with: {region: FR, categories: [fraud], reach_multiplier: 0.25, reshare_limit: 1}
    expires_after: 1h
"""


async def record_renewed(tag: str, incidents: Incidents, client: Client, work: Path) -> None:
    incident_id = f"REC-{tag}-renewed"
    path = work / "record-renewed.yaml"
    path.write_text(RENEWED)
    await incidents.trigger(str(path), {}, actor="recorder", incident_id=incident_id)
    await _states(incidents, incident_id, {"looser": "expired", "stricter": "applied"})
    renewal = RenewRequest(step_id="looser", actor="recorder", reason="recorded", duration="1h")
    await incidents.act(incident_id, CrisisWorkflow.renew, renewal)
    await _states(incidents, incident_id, {"looser": "applied", "stricter": "applied"})
    await asyncio.sleep(1)  # the renewal's calls land (under: the later one is put back)
    await incidents.stand_down(incident_id, actor="recorder", reason="recorded")
    await _keep(client, {f"{tag}-renewed": incident_id})


# Two measures on one setting and one elsewhere; the platform errs on the newest one's undo.
PUT_OFF = """
playbook: record-put-off
version: 1
title: An undo the platform errs on
description: For the recorded history of a stand-down whose first undo erred at first.
steps:
  - id: surge
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 2}
  - id: looser
    do: recommender.throttle
    with: {region: FR, categories: [fraud], reach_multiplier: 0.5, reshare_limit: 5}
  - id: stricter
    do: recommender.throttle
    with: {region: FR, categories: [fraud], reach_multiplier: 0.25, reshare_limit: 1}
"""


async def record_put_off(
    tag: str, incidents: Incidents, client: Client, work: Path, sandbox_url: str, *, last: bool
) -> None:
    patch = "LAST_PUT_OFF_PATCH" if last else "UNDO_PUT_OFF_PATCH"
    name = f"{tag}-put-off-last" if last else f"{tag}-put-off"
    if not _has(patch):
        name += "-unpatched"
    incident_id = f"REC-{name}"
    path = work / "record-put-off.yaml"
    path.write_text(PUT_OFF)
    await incidents.trigger(str(path), {}, actor="recorder", incident_id=incident_id)
    await _states(incidents, incident_id, dict.fromkeys(("surge", "looser", "stricter"), "applied"))
    async with httpx.AsyncClient() as http:
        # Four errors: the first tries of a put-off undo, or four of an undo's full retries.
        fault = {"path_prefix": "/recommender", "operation_prefix": "undo-", "status": 503}
        (await http.post(f"{sandbox_url}/faults", json={**fault, "times": 4})).raise_for_status()
        if last:  # five errors: the quick tries and one of the full ones
            queue = {**fault, "path_prefix": "/moderation", "times": 5}
            (await http.post(f"{sandbox_url}/faults", json=queue)).raise_for_status()
        await incidents.stand_down(incident_id, actor="recorder", reason="recorded")
    await _keep(client, {name: incident_id})


async def record_undo_erring(
    tag: str, incidents: Incidents, client: Client, work: Path, sandbox_url: str
) -> None:
    """One measure whose undo the platform errs on five times: beyond an undo's quick first
    tries (v7-undo-erring-unpatched: one call retried throughout; v7-undo-erring: the trail
    so far written only once it lands; v7-undo-erring-trail-first: before it retries)."""
    name = f"{tag}-undo-erring"
    if not _has("UNDO_ERROR_SHOWN_PATCH"):
        name += "-unpatched"
    elif _has("TRAIL_BEFORE_RETRIES_PATCH"):
        name += "-trail-first"
    incident_id = f"REC-{name}"
    path = work / "record-undo-erring.yaml"
    path.write_text(PUT_OFF.replace("record-put-off", "record-undo-erring"))
    await incidents.trigger(str(path), {}, actor="recorder", incident_id=incident_id)
    await _states(incidents, incident_id, dict.fromkeys(("surge", "looser", "stricter"), "applied"))
    async with httpx.AsyncClient() as http:
        fault = {"path_prefix": "/moderation", "operation_prefix": "undo-", "status": 503}
        (await http.post(f"{sandbox_url}/faults", json={**fault, "times": 5})).raise_for_status()
        await incidents.stand_down(incident_id, actor="recorder", reason="recorded")
    await _keep(client, {name: incident_id})


NO_ANSWER = """
playbook: record-no-answer
version: 1
title: A measure applied with no answer
description: For the recorded history of a stand-down of a measure whose apply timed out.
steps:
  - id: surge
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 2}
    timeout: 1s
    retry: {max_attempts: 2, initial_interval: 100ms, max_interval: 200ms}
"""


async def record_no_answer(
    tag: str, incidents: Incidents, client: Client, work: Path, sandbox_url: str
) -> None:
    """A measure whose every apply attempt timed out, stood down once the platform answers
    again (v7-no-answer-unpatched: the stand-down leaves it)."""
    name = f"{tag}-no-answer"
    if not _has("UNCERTAIN_APPLY_PATCH"):
        name += "-unpatched"
    incident_id = f"REC-{name}"
    path = work / "record-no-answer.yaml"
    path.write_text(NO_ANSWER)
    async with httpx.AsyncClient() as http:
        slow = {"path_prefix": "/moderation", "operation_prefix": "apply-", "latency_ms": 1500}
        (await http.post(f"{sandbox_url}/faults", json={**slow, "times": 2})).raise_for_status()
        await incidents.trigger(str(path), {}, actor="recorder", incident_id=incident_id)
        await _states(incidents, incident_id, {"surge": "failed"})
        (await http.delete(f"{sandbox_url}/faults")).raise_for_status()
    await incidents.stand_down(incident_id, actor="recorder", reason="recorded")
    await _closed(incidents, incident_id)
    await _keep(client, {name: incident_id})


async def record_forced_no_answer(
    tag: str, incidents: Incidents, client: Client, work: Path, sandbox_url: str
) -> None:
    """An earlier incident stood down by force over a later measure whose apply had no answer,
    then the later incident stood down (-unpatched: the later one is told nothing of it, and its
    stand-down learns the call's cached answer and restores it)."""
    name = f"{tag}-forced-no-answer"
    if not _has("NO_ANSWER_LIFTED_PATCH", "workflows.overlap_handoff"):
        name += "-unpatched"
    ids = {part: f"REC-{name}-{part}" for part in ("earlier", "later")}
    earlier = work / "record-forced-no-answer-earlier.yaml"
    earlier.write_text(
        LATER.replace("0.25", "0.5").replace("record-later", "record-forced-no-answer-earlier")
    )
    later = work / "record-forced-no-answer-later.yaml"
    later.write_text(
        LATER.replace("record-later", "record-forced-no-answer-later")
        + "    timeout: 1s\n"
        + "    retry: {max_attempts: 2, initial_interval: 100ms, max_interval: 200ms}\n"
    )
    await incidents.trigger(str(earlier), {}, actor="recorder", incident_id=ids["earlier"])
    await _settled(incidents, ids["earlier"])
    async with httpx.AsyncClient() as http:
        slow = {"path_prefix": "/recommender", "operation_prefix": "apply-", "latency_ms": 1500}
        (await http.post(f"{sandbox_url}/faults", json={**slow, "times": 2})).raise_for_status()
        await incidents.trigger(str(later), {}, actor="recorder", incident_id=ids["later"])
        await _states(incidents, ids["later"], {"throttle": "failed"})
        (await http.delete(f"{sandbox_url}/faults")).raise_for_status()
    await incidents.stand_down(ids["earlier"], actor="recorder", reason="recorded", force=True)
    await _closed(incidents, ids["earlier"])
    await asyncio.sleep(1)  # the later incident is told
    await incidents.stand_down(ids["later"], actor="recorder", reason="recorded")
    await _closed(incidents, ids["later"])
    await _keep(client, {f"{name}-{part}": incident_id for part, incident_id in ids.items()})


LEVELLED_NOTICE = """\
playbook: record-withdrawn-on-landing
version: 1
title: Recorded
description: A notice of the higher level, on its way when the level drops.
levels: [elevated, severe]
steps:
  - id: base
    do: detection.set_threshold
    with: {classifier: fraud, threshold: 0.3}
  - id: tell
    level: severe
    do: notify.send
    with: {to: regulator, template: crisis-escalated}
    undo:
      do: notify.send
      with: {to: regulator, template: crisis-de-escalated}
"""


async def record_withdrawn_on_landing(
    tag: str, incidents: Incidents, client: Client, work: Path, sandbox_url: str
) -> None:
    """Escalated, then de-escalated while the higher level's notice is on its way (a slow
    delivery), then stood down (-unpatched: the notice stays applied once it lands)."""
    name = f"{tag}-withdrawn-on-landing"
    if not _has("WITHDRAW_ON_LANDING_PATCH"):
        name += "-unpatched"
    incident_id = f"REC-{name}"
    path = work / "record-withdrawn-on-landing.yaml"
    path.write_text(LEVELLED_NOTICE)
    await incidents.trigger(str(path), {}, actor="recorder", incident_id=incident_id)
    await _settled(incidents, incident_id)
    change = LevelRequest(actor="recorder", reason="recorded")
    async with httpx.AsyncClient() as http:
        slow = {"path_prefix": "/notify", "status": 0, "latency_ms": 2000, "times": 1}
        (await http.post(f"{sandbox_url}/faults", json=slow)).raise_for_status()
        await incidents.act(incident_id, CrisisWorkflow.escalate, change)
        for _ in range(200):
            if (await http.get(f"{sandbox_url}/state")).json()["stats"]["faults_injected"]:
                break
            await asyncio.sleep(0.05)
        await incidents.act(incident_id, CrisisWorkflow.de_escalate, change)
    await asyncio.sleep(3)  # the notice lands (and, patched, is withdrawn)
    await _settled(incidents, incident_id)
    await incidents.stand_down(incident_id, actor="recorder", reason="recorded")
    await _closed(incidents, incident_id)
    await _keep(client, {name: incident_id})


LEVELLED_MEASURES = """\
playbook: record-de-escalated
version: 1
title: Recorded
description: Measures of the higher level, withdrawn by a de-escalation.
levels: [elevated, severe]
steps:
  - id: base
    do: detection.set_threshold
    with: {classifier: fraud, threshold: 0.3}
  - id: surge
    level: severe
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 5}
  - id: terror
    level: severe
    do: detection.set_threshold
    with: {classifier: terrorism, threshold: 0.5}
"""


async def record_de_escalated(
    tag: str, incidents: Incidents, client: Client, work: Path, sandbox_url: str
) -> None:
    """Escalated, then de-escalated while the platform errs on the surge's undo five times: the
    terror measure is withdrawn, the surge once its undo's retries get through; then stood down
    (-unpatched: the de-escalation answered before any withdrawal was tried)."""
    name = f"{tag}-de-escalated"
    if not _has("DE_ESCALATION_WITHDRAWS_PATCH", "workflows.commander_actions"):
        name += "-unpatched"
    incident_id = f"REC-{name}"
    path = work / "record-de-escalated.yaml"
    path.write_text(LEVELLED_MEASURES)
    await incidents.trigger(str(path), {}, actor="recorder", incident_id=incident_id)
    await _settled(incidents, incident_id)
    change = LevelRequest(actor="recorder", reason="recorded")
    await incidents.act(incident_id, CrisisWorkflow.escalate, change)
    await _states(incidents, incident_id, dict.fromkeys(("base", "surge", "terror"), "applied"))
    async with httpx.AsyncClient() as http:
        fault = {"path_prefix": "/moderation", "operation_prefix": "undo-", "status": 503}
        (await http.post(f"{sandbox_url}/faults", json={**fault, "times": 5})).raise_for_status()
        await incidents.act(incident_id, CrisisWorkflow.de_escalate, change)
    await _states(
        incidents, incident_id, {"base": "applied", "surge": "dormant", "terror": "dormant"}
    )
    await incidents.stand_down(incident_id, actor="recorder", reason="recorded")
    await _closed(incidents, incident_id)
    await _keep(client, {name: incident_id})


SLOW_THEN_NOTICE = """\
playbook: record-heard
version: 1
title: Recorded
description: A slow measure, then a notice.
steps:
  - id: cut
    do: recommender.throttle
    with: {region: GB, categories: [spam], reach_multiplier: 0.5}
  - id: tell
    do: notify.webhook
    with: {to: regulator, message: measures in force}
"""


async def record_heard(
    tag: str, incidents: Incidents, client: Client, work: Path, sandbox_url: str
) -> None:
    """Stood down while the measure's call takes 3 s: the stand-down is heard before the notice
    (-unpatched: the notice was sent, then the measure undone)."""
    name = f"{tag}-heard-before-notice"
    if not _has("HEAR_BEFORE_NOTICE_PATCH"):
        name += "-unpatched"
    incident_id = f"REC-{name}"
    path = work / "record-heard.yaml"
    path.write_text(SLOW_THEN_NOTICE)
    async with httpx.AsyncClient() as http:
        slow = {"path_prefix": "/recommender", "status": 0, "latency_ms": 3000, "times": 1}
        (await http.post(f"{sandbox_url}/faults", json=slow)).raise_for_status()
        await incidents.trigger(str(path), {}, actor="recorder", incident_id=incident_id)
        await asyncio.sleep(1)
        await incidents.stand_down(incident_id, actor="recorder", reason="recorded")
    await _closed(incidents, incident_id)
    await _keep(client, {name: incident_id})


NOTICE = """\
playbook: record-notice-refused
version: 1
title: Recorded
description: A notice whose closing notice the platform refuses.
steps:
  - id: tell
    do: notify.send
    with: {to: regulator, template: crisis-opened}
    undo:
      do: notify.send
      with: {to: regulator, template: crisis-closed}
"""


async def record_notice_refused(
    tag: str, incidents: Incidents, client: Client, work: Path, sandbox_url: str
) -> None:
    """Stood down while the platform refuses every notice's undo with a 422 (-unpatched: the
    closing notice is sent again at once, and fails twice)."""
    name = f"{tag}-notice-refused"
    if not _has("NOTICE_REFUSED_PATCH"):
        name += "-unpatched"
    incident_id = f"REC-{name}"
    path = work / "record-notice-refused.yaml"
    path.write_text(NOTICE)
    await incidents.trigger(str(path), {}, actor="recorder", incident_id=incident_id)
    await _settled(incidents, incident_id)
    async with httpx.AsyncClient() as http:
        refuse = {"path_prefix": "/notify", "operation_prefix": "undo-", "status": 422}
        (await http.post(f"{sandbox_url}/faults", json=refuse)).raise_for_status()
        await incidents.stand_down(incident_id, actor="recorder", reason="recorded")
        (await http.delete(f"{sandbox_url}/faults")).raise_for_status()
    await _closed(incidents, incident_id)
    await _keep(client, {name: incident_id})


def _has(patch: str, module: str = "workflows.incident_run") -> bool:
    """Whether the interpreter being recorded has the patch (else its history is kept as the
    "-unpatched" twin: how incidents ran before it)."""
    return hasattr(__import__(module, fromlist=[patch]), patch)


async def _states(incidents: Incidents, incident_id: str, wanted: dict[str, str]) -> None:
    for _ in range(400):
        states = {s.id: s.state for s in (await incidents.status(incident_id)).steps}
        if states == wanted:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{incident_id} never reached {wanted}")


async def record_restore(
    tag: str, incidents: Incidents, client: Client, work: Path, sandbox_url: str
) -> None:
    """The platform refuses the threshold's undo at stand-down. Before the close waited for a
    restore, the incident closed at once; since, a commander retries the undo (refused again,
    then done) or records a restore by hand, and only then does it close."""
    kept = {}
    async with httpx.AsyncClient() as http:
        for name in ("restored", "restored-by-hand"):
            incident_id = f"REC-{tag}-{name}"
            await incidents.trigger(
                str(work / "record-applied.yaml"), {}, actor="recorder", incident_id=incident_id
            )
            await _settled(incidents, incident_id)
            fault = {"path_prefix": "/detection", "operation_prefix": "undo-", "status": 400}
            (await http.post(f"{sandbox_url}/faults", json=fault)).raise_for_status()
            status = await incidents.stand_down(incident_id, actor="recorder", reason="recorded")
            if status.state == "closed":
                kept[f"{tag}-undo-failed-unpatched"] = incident_id
                (await http.delete(f"{sandbox_url}/faults")).raise_for_status()
                break
            from workflows.incident import RestoreRequest  # absent before the close waited

            retry = RestoreRequest(step_id="threshold", actor="recorder", reason="recorded")
            if name == "restored":
                await incidents.act(incident_id, CrisisWorkflow.restore, retry)  # fails again
                (await http.delete(f"{sandbox_url}/faults")).raise_for_status()
                await incidents.act(incident_id, CrisisWorkflow.restore, retry)
            else:
                by_hand = retry.model_copy(update={"by_hand": True})
                await incidents.act(incident_id, CrisisWorkflow.restore, by_hand)
                (await http.delete(f"{sandbox_url}/faults")).raise_for_status()
            await _closed(incidents, incident_id)
            kept[f"{tag}-{name}"] = incident_id
    await _keep(client, kept)


# A step failing with on_failure undo takes back a measure a later incident's is applied over:
# from the patch `hand-back-when-taken-back-unasked`, the settings are handed to that incident.
UNASKED = """
playbook: record-unasked
version: 1
title: A measure taken back on failure, under a later incident's
description: For the recorded history of a take-back no commander asked for.
steps:
  - id: throttle
    do: recommender.throttle
    with: {region: FR, categories: [fraud], reach_multiplier: 0.5}
  - id: gate
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 5}
    approval: {roles: [commander], timeout: 1h, on_timeout: skip}
    retry: {max_attempts: 1}
    on_failure: undo
"""


async def record_unasked(
    tag: str, incidents: Incidents, client: Client, work: Path, sandbox_url: str
) -> None:
    ids = {name: f"REC-{tag}-unasked-{name}" for name in ("earlier", "later")}
    for name, body in (("earlier", UNASKED), ("later", LATER)):
        path = work / f"record-unasked-{name}.yaml"
        path.write_text(body.replace("record-later", "record-unasked-later"))
        await incidents.trigger(str(path), {}, actor="recorder", incident_id=ids[name])
        await _settled(incidents, ids[name])
    async with httpx.AsyncClient() as http:
        fault = {"path_prefix": "/moderation", "status": 400, "times": 1}
        (await http.post(f"{sandbox_url}/faults", json=fault)).raise_for_status()
    approval = ApproveRequest(step_id="gate", actor="approver", role="commander")
    await incidents.act(ids["earlier"], CrisisWorkflow.approve, approval)
    for _ in range(200):  # failed, taken back (and, once patched, the later one told)
        status = await incidents.status(ids["earlier"])
        if status.state == "failed" and status.steps[0].state == "undone":
            break
        await asyncio.sleep(0.05)
    else:
        raise RuntimeError("the earlier incident did not fail and take its measure back")
    await asyncio.sleep(1)  # the later incident puts its measure back, when told
    for name in ("later", "earlier"):
        await incidents.stand_down(ids[name], actor="recorder", reason="recorded")
    await _keep(client, {f"{tag}-unasked-{name}": incident_id for name, incident_id in ids.items()})


WITHDRAWN = """
playbook: record-withdrawn
version: 1
title: A measure withdrawn by a de-escalation
description: For the recorded history of a failed withdrawal restored by hand.
levels: [elevated, severe]
steps:
  - id: throttle
    level: severe
    do: recommender.throttle
    with: {region: FR, categories: [fraud], reach_multiplier: 0.5}
"""


async def record_by_hand(
    tag: str, incidents: Incidents, client: Client, work: Path, sandbox_url: str
) -> None:
    ids = {name: f"REC-{tag}-by-hand-{name}" for name in ("earlier", "later")}
    earlier, later = work / "record-withdrawn.yaml", work / "record-by-hand-later.yaml"
    earlier.write_text(WITHDRAWN)
    later.write_text(LATER.replace("record-later", "record-by-hand-later"))
    await incidents.trigger(
        str(earlier), {}, actor="recorder", incident_id=ids["earlier"], level="severe"
    )
    await _settled(incidents, ids["earlier"])
    await incidents.trigger(str(later), {}, actor="recorder", incident_id=ids["later"])
    await _settled(incidents, ids["later"])
    async with httpx.AsyncClient() as http:
        fault = {
            "path_prefix": "/recommender",
            "operation_prefix": "undo-",
            "status": 400,
            "times": 1,
        }
        (await http.post(f"{sandbox_url}/faults", json=fault)).raise_for_status()
    drop = LevelRequest(actor="recorder", reason="recorded", to_level="elevated")
    await incidents.act(ids["earlier"], CrisisWorkflow.de_escalate, drop)
    for _ in range(200):
        if (await incidents.status(ids["earlier"])).steps[0].state == "undo_failed":
            break
        await asyncio.sleep(0.05)
    else:
        raise RuntimeError("the withdrawal did not fail")
    from workflows.incident import RestoreRequest

    by_hand = RestoreRequest(step_id="throttle", actor="recorder", reason="recorded", by_hand=True)
    await incidents.act(ids["earlier"], CrisisWorkflow.restore, by_hand)
    await asyncio.sleep(1)  # the later incident puts its measure back, when told
    for name in ("later", "earlier"):
        await incidents.stand_down(ids[name], actor="recorder", reason="recorded")
    await _keep(client, {f"{tag}-by-hand-{name}": incident_id for name, incident_id in ids.items()})


REVIEWED = """
playbook: record-reviewed
version: 1
title: A review missed
description: For the recorded history of a missed review's stand-down under a later measure.
reviews: {every: 2s, grace: 1s, on_missed: stand_down}
steps:
  - id: throttle
    do: recommender.throttle
    with: {region: FR, categories: [fraud], reach_multiplier: 0.5}
"""


async def record_missed(tag: str, incidents: Incidents, client: Client, work: Path) -> None:
    ids = {name: f"REC-{tag}-missed-{name}" for name in ("earlier", "later")}
    for name, body in (("earlier", REVIEWED), ("later", LATER)):
        path = work / f"record-missed-{name}.yaml"
        path.write_text(body.replace("record-later", "record-missed-later"))
        await incidents.trigger(str(path), {}, actor="recorder", incident_id=ids[name])
        await _settled(incidents, ids[name])
    await _closed(incidents, ids["earlier"])  # the review missed: the system stood it down
    await asyncio.sleep(1)  # the later incident puts its measure back, when told
    await incidents.stand_down(ids["later"], actor="recorder", reason="recorded")
    await _keep(client, {f"{tag}-missed-{name}": incident_id for name, incident_id in ids.items()})


async def record_late(
    tag: str, client: Client, settings: Settings, store: AuditStore, work: Path
) -> None:
    """Triggered while no worker runs; a stand-down is sent meanwhile, and a worker comes two
    seconds later. From the patches `actions-recorded-after-the-trigger` and
    `trigger-dated-at-the-start`, the trail begins with the trigger, dated when it was sent."""
    incidents = Incidents(client, settings)
    incident_id = f"REC-{tag}-late"
    await incidents.trigger(
        str(work / "record-applied.yaml"), {}, actor="recorder", incident_id=incident_id
    )
    stand_down = asyncio.create_task(
        incidents.stand_down(incident_id, actor="recorder", reason="recorded")
    )
    await asyncio.sleep(2)
    async with running_worker(client, settings=settings, store=store):
        await stand_down
    await _keep(client, {f"{tag}-late": incident_id})


async def _keep(client: Client, kept: dict[str, str]) -> None:
    """Write each incident's history as tests/histories/NAME.json (`kept`: name -> incident)."""
    for name, incident_id in kept.items():
        history = await client.get_workflow_handle(incident_id).fetch_history()
        (HERE / f"{name}.json").write_text(_without_local_paths(history.to_json()))
        print(f"recorded {incident_id}: {len(history.events)} events")


async def _closed(incidents: Incidents, incident_id: str) -> None:
    for _ in range(200):
        if (await incidents.status(incident_id)).state == "closed":
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{incident_id} did not close")


async def _settled(incidents: Incidents, incident_id: str) -> None:
    for _ in range(200):
        status = await incidents.status(incident_id)
        if all(s.state not in ("pending", "running") for s in status.steps):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{incident_id} did not settle")


async def record(tag: str, sandbox_url: str, address: str, work: Path, scenario: str) -> None:
    settings = Settings(
        temporal_address=address,
        sandbox_port=int(sandbox_url.rsplit(":", 1)[1]),
        database_url=f"sqlite:///{work / 'audit.db'}",
        task_queue="record",
    )
    client = await connect(settings)
    store = AuditStore(settings.resolved_database_url)
    failing = work / "record-failing.yaml"
    failing.write_text(FAILING)
    applied = work / "record-applied.yaml"
    applied.write_text(APPLIED)
    if scenario == "late":
        await record_late(tag, client, settings, store, work)
        return
    async with running_worker(client, settings=settings, store=store):
        incidents = Incidents(client, settings)
        if scenario == "overlap":
            await record_overlap(tag, incidents, client, work)
            return
        if scenario == "forced":
            await record_forced(tag, incidents, client, work, sandbox_url)
            return
        if scenario == "held":
            await record_held(tag, incidents, client, work)
            return
        if scenario == "landed":
            await record_landed(tag, incidents, client, work, sandbox_url)
            return
        if scenario == "under":
            await record_under(tag, incidents, client, work)
            return
        if scenario == "restore":
            await record_restore(tag, incidents, client, work, sandbox_url)
            return
        if scenario == "unasked":
            await record_unasked(tag, incidents, client, work, sandbox_url)
            return
        if scenario == "missed":
            await record_missed(tag, incidents, client, work)
            return
        if scenario == "by-hand":
            await record_by_hand(tag, incidents, client, work, sandbox_url)
            return
        if scenario == "renewed":
            await record_renewed(tag, incidents, client, work)
            return
        if scenario in ("put-off", "put-off-last"):
            last = scenario == "put-off-last"
            await record_put_off(tag, incidents, client, work, sandbox_url, last=last)
            return
        if scenario == "undo-erring":
            await record_undo_erring(tag, incidents, client, work, sandbox_url)
            return
        if scenario == "no-answer":
            await record_no_answer(tag, incidents, client, work, sandbox_url)
            return
        if scenario == "forced-no-answer":
            await record_forced_no_answer(tag, incidents, client, work, sandbox_url)
            return
        if scenario == "withdrawn-on-landing":
            await record_withdrawn_on_landing(tag, incidents, client, work, sandbox_url)
            return
        if scenario == "notice-refused":
            await record_notice_refused(tag, incidents, client, work, sandbox_url)
            return
        if scenario == "de-escalated":
            await record_de_escalated(tag, incidents, client, work, sandbox_url)
            return
        if scenario == "heard":
            await record_heard(tag, incidents, client, work, sandbox_url)
            return
        for name, playbook in (
            ("stand-down", "violent-disorder"),
            ("failed", str(failing)),
            ("applied", str(applied)),
        ):
            incident_id = f"REC-{tag}-{name}"
            await incidents.trigger(playbook, {}, actor="recorder", incident_id=incident_id)
            for _ in range(200):
                status = await incidents.status(incident_id)
                if all(s.state not in ("pending", "running") for s in status.steps[:2]):
                    break
                await asyncio.sleep(0.05)
            await incidents.stand_down(incident_id, actor="recorder", reason="recorded")
            await _keep(client, {f"{tag}-{name}": incident_id})


def _without_local_paths(text: str) -> str:
    """Stack traces in failures name files: keep them relative to the package roots, so a kept
    history says nothing about the machine it was recorded on."""
    for prefix in sorted({p for p in sys.path if p}, key=len, reverse=True):
        text = text.replace(prefix.rstrip("/") + "/", "")
    return text.replace(str(HERE.parents[1]) + "/", "")


def main() -> None:
    tag = sys.argv[1] if len(sys.argv) > 1 else "v1"
    scenario = sys.argv[2] if len(sys.argv) > 2 else "each"  # or overlap, forced, held, landed,
    # under, restore, unasked, late, by-hand, missed, renewed, put-off, put-off-last,
    # undo-erring, no-answer, forced-no-answer, withdrawn-on-landing, notice-refused,
    # de-escalated, heard
    with tempfile.TemporaryDirectory() as tmp, serve_app(create_app()) as sandbox_url:
        port = free_port()
        server = start_dev_server(db_file=Path(tmp) / "temporal.db", port=port)
        try:
            httpx.post(f"{sandbox_url}/reset").raise_for_status()
            asyncio.run(record(tag, sandbox_url, f"127.0.0.1:{port}", Path(tmp), scenario))
        finally:
            server.terminate()
            server.wait()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
