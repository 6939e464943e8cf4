"""The exclude-unreviewed, livestream and hash-blocking levers end to end, and catalogue wiring."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from temporalio.client import Client

from activities.platform import ROUTES
from core.settings import Settings
from engine.incidents import Incidents
from sandbox.app import create_app
from tests.conftest import Sandbox
from tests.helpers import assert_eventually
from workflows.incident import IncidentStatus
from workflows.levers import LEVERS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "platform-api.md"

PLAYBOOK = """
playbook: test-new-levers
version: 1
title: Livestreamed attack
description: For tests.
steps:
  - id: exclude-unreviewed
    do: recommender.exclude_unreviewed
    with:
      region: NZ
      categories: [terrorism, violent_extremism]
      surfaces: [feed, search_suggestions]
      min_score: 0.3
  - id: restrict-livestream
    do: livestream.restrict
    with: {region: NZ, block_new_streams: true, disable_recording: true}
  - id: block-footage
    do: hashes.block
    with:
      list_id: christchurch-2019
      source: gifct-hsdb
      hash_types: [pdq, md5, tmk, vpdq]
      action: block_and_report
"""

# Parts of the sandbox state that only record traffic; everything else is platform settings.
TRAFFIC = {"applications", "stats"}


@pytest.mark.usefixtures("worker")
async def test_new_levers_apply_and_stand_down_restores_the_initial_state(
    client: Client, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    """The three levers change the platform, and stand-down puts back exactly the initial state."""
    before = await sandbox.state()
    path = tmp_path / "test-new-levers.yaml"
    path.write_text(PLAYBOOK)
    incidents = Incidents(client, settings)
    triggered = await incidents.trigger(str(path), {}, actor="alice", eager=True)

    async def all_applied() -> IncidentStatus:
        status = await incidents.status(triggered.incident_id)
        assert [s.state for s in status.steps] == ["applied"] * 3, status
        return status

    await assert_eventually(all_applied)
    during = await sandbox.state()
    exclusion = {"surfaces": ["feed", "search_suggestions"], "min_score": 0.3}
    assert during["recommender_exclusions"] == {
        "NZ": {"terrorism": exclusion, "violent_extremism": exclusion}
    }
    assert during["livestream"] == {
        "NZ": {
            "all": {
                "block_new_streams": True,
                "disable_comments": False,
                "disable_gifts": False,
                "disable_recording": True,
            }
        }
    }
    assert during["hashes"] == {
        "christchurch-2019": {
            "source": "gifct-hsdb",
            "hash_types": ["pdq", "md5", "tmk", "vpdq"],
            "action": "block_and_report",
            "blocking": True,
        }
    }

    closed = await incidents.stand_down(triggered.incident_id, actor="bob", reason="contained")
    assert closed.state == "closed"
    assert [s.state for s in closed.steps] == ["undone"] * 3
    after = await sandbox.state()
    settings_before = {k: v for k, v in before.items() if k not in TRAFFIC}
    assert {k: v for k, v in after.items() if k not in TRAFFIC} == settings_before
    assert after["stats"]["duplicates"] == 0
    operations = Counter((a["step"], a["operation"]) for a in after["applications"])
    assert operations == {
        (step, operation): 1
        for step in ("exclude-unreviewed", "restrict-livestream", "block-footage")
        for operation in ("apply-1", "undo-1")
    }


def test_every_lever_is_routed_to_a_configured_connector() -> None:
    """Every catalogued lever has a route, every route a lever, every connector a URL setting."""
    assert sorted(ROUTES) == sorted(LEVERS)
    unconfigured = sorted(
        {route.connector for route in ROUTES.values()}
        - {name.removesuffix("_url") for name in Settings.model_fields if name.endswith("_url")}
    )
    assert unconfigured == [], f"connectors without a <connector>_url setting: {unconfigured}"


def test_every_lever_is_served_by_the_sandbox() -> None:
    """The sandbox serves each route, and its restore too when the lever is reversible."""
    served = {
        re.sub(r"\{[^}]*\}", "{}", route.path)
        for route in create_app(webhook_secret="test").routes
        if "POST" in getattr(route, "methods", set())
    }
    missing = []
    for name, route in ROUTES.items():
        path = re.sub(r"\{[^}]*\}", "{}", f"/{route.connector}{route.path}")
        wanted = [path, f"{path}/restore"] if LEVERS[name].reversible else [path]
        missing += [p for p in wanted if p not in served]
    assert missing == [], f"lever paths the sandbox does not serve: {missing}"


def test_every_reversible_lever_is_in_the_contract() -> None:
    """docs/platform-api.md has a table row for each reversible lever with its path."""
    docs = DOCS.read_text(encoding="utf-8")
    undocumented = [
        name
        for name, lever in LEVERS.items()
        if lever.reversible
        and f"| `{name}` | `/{ROUTES[name].connector}{ROUTES[name].path}` |" not in docs
    ]
    assert undocumented == [], f"levers missing from docs/platform-api.md: {undocumented}"
