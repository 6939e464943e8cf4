"""Two incidents on the same settings: standing the older down first would lift the newer's
measures, so it is refused (409, naming the newer) unless forced; newest first restores all."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import Settings
from tests.api.conftest import Tokens
from tests.api.test_api_actions import act, answer, api_with, conflict, status_when, trigger
from tests.conftest import Sandbox

OVERLAP_PLAYBOOK = """\
playbook: overlap
version: 1
title: Overlap
description: For tests of incidents on the same settings.
inputs:
  region: {type: string}
  reach: {type: number, default: 0.5}
steps:
  - id: throttle
    do: recommender.throttle
    with: {region: "${inputs.region}", categories: [scams], reach_multiplier: "${inputs.reach}"}
  - id: tell
    do: notify.webhook
    with: {to: internal-crisis-team, message: "throttled ${inputs.region}"}
"""


@pytest.fixture
async def api(
    settings: Settings, tmp_path: Path, tokens: Tokens
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_with(settings, tmp_path, tokens, {"overlap": OVERLAP_PLAYBOOK}) as http:
        yield http


async def applied(api: httpx.AsyncClient, region: str, reach: float) -> str:
    incident = await trigger(api, "overlap", inputs={"region": region, "reach": reach})
    await status_when(api, incident, lambda s: s["throttle"] == "applied")
    return incident


async def policy(sandbox: Sandbox, region: str) -> Any:
    return (await sandbox.state())["recommender"].get(region, {}).get("scams")


async def test_the_older_incident_cannot_lift_the_newers_measures(
    api: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    region = f"Z{uuid.uuid4().hex[:3].upper()}"  # settings no other test touches
    older = await applied(api, region, 0.5)
    newer = await applied(api, region, 0.25)
    elsewhere = await applied(api, f"{region}X", 0.5)  # another region: not the same settings

    refused = await act(api, older, "stand-down", reason="calm")
    conflict(refused, older, newer, f"recommender.throttle {region}/scams", "throttle")
    assert elsewhere not in refused.json()["error"]["message"]
    assert "running" == answer(await api.get(f"/v1/incidents/{older}"))["state"]
    assert 0.25 == (await policy(sandbox, region))["reach_multiplier"]

    # Newest first restores both exactly: the setting is back to none at all.
    assert "closed" == answer(await act(api, newer, "stand-down", reason="calm"))["state"]
    assert 0.5 == (await policy(sandbox, region))["reach_multiplier"]
    assert "closed" == answer(await act(api, older, "stand-down", reason="calm"))["state"]
    assert None is await policy(sandbox, region)
    assert "closed" == answer(await act(api, elsewhere, "stand-down", reason="calm"))["state"]


async def test_the_refusal_names_each_later_incident_newest_first(
    api: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """Two later incidents: the refusal says what each holds and the order that restores every
    setting exactly, newest first; in that order all three go down and the setting is back."""
    region = f"Z{uuid.uuid4().hex[:3].upper()}"
    oldest = await applied(api, region, 0.5)
    middle = await applied(api, region, 0.25)
    newest = await applied(api, region, 0.1)
    refused = await act(api, oldest, "stand-down", reason="calm")
    held = f"recommender.throttle {region}/scams over throttle"
    conflict(
        refused,
        f"({newest}: {held}; {middle}: {held})",
        f"stand {newest} then {middle} (newest measure first) down first",
    )
    for incident in (newest, middle, oldest):
        assert "closed" == answer(await act(api, incident, "stand-down", reason="calm"))["state"]
    assert None is await policy(sandbox, region)


async def test_a_commander_may_force_the_older_down(
    api: httpx.AsyncClient, sandbox: Sandbox, tokens: Tokens
) -> None:
    """Forced, the older incident hands the settings to the newer, as a lapse of its measure
    would: the newer puts its measure back over the older's restore, and its own stand-down
    then leaves the setting as it was before both (not as the older had set it)."""
    region = f"Z{uuid.uuid4().hex[:3].upper()}"
    older = await applied(api, region, 0.5)
    newer = await applied(api, region, 0.25)
    forced = answer(await act(api, older, "stand-down", reason="calm", force=True))
    assert ("closed", True) == (forced["state"], forced["stand_down"]["force"])
    # The hand-back is done before the forced stand-down answers.
    assert 0.25 == (await policy(sandbox, region))["reach_multiplier"]
    newer_status = answer(await api.get(f"/v1/incidents/{newer}"))
    (step,) = [s for s in newer_status["steps"] if s["id"] == "throttle"]
    assert (2, None) == (step["applications"], step["lifted_by"])  # put back, not left lifted

    assert "closed" == answer(await act(api, newer, "stand-down", reason="calm"))["state"]
    assert None is await policy(sandbox, region)

    audited = {
        incident: (
            await api.get(f"/v1/incidents/{incident}/audit", headers=tokens.headers("carol"))
        ).json()["events"]
        for incident in (older, newer)
    }
    requested = next(e for e in audited[older] if e["kind"] == "stand_down.requested")
    assert {"reason": "calm", "forced": True} == requested["data"]
    assert [newer] == [
        e["data"]["incident"] for e in audited[older] if e["kind"] == "overlap.reasserting"
    ]
    lifted = next(e for e in audited[newer] if e["kind"] == "overlap.lifted")
    assert (older, "stood down (forced)") == (lifted["data"]["by"], lifted["data"]["reason"])
