"""The playbook library's levers end to end on the real worker: applied, stood down, retried."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from core.settings import Settings
from engine.incidents import Incidents
from engine.playbook_files import validate_file
from tests.conftest import Sandbox
from tests.helpers import assert_eventually
from workflows.incident import IncidentStatus

STEPS = (
    "hold-new-advertisers",
    "sanction-uploaders",
    "suppress-suggestions",
    "share-hashes",
    "warn-users",
    "throttle-new-accounts",
)
PLAYBOOK = """
playbook: test-library-levers
version: 1
title: Library levers
description: For tests.
steps:
  - id: hold-new-advertisers
    do: ads.hold_new_advertisers
    timeout: {timeout}
    with:
      region: GB
      categories: [charity, government_services]
      max_account_age_days: 14
      review: enhanced
  - id: sanction-uploaders
    do: accounts.sanction_on_match
    timeout: {timeout}
    with: {{list_id: internal-csam-known, sanction: ban, report_to: [ncmec, iwf]}}
  - id: suppress-suggestions
    do: search.suppress_suggestions
    timeout: {timeout}
    with:
      region: GB
      categories: [self_harm]
      terms: [blackout challenge]
      show_support_resources: true
  - id: share-hashes
    do: hashes.share
    timeout: {timeout}
    with: {{list_id: christchurch-2019, partners: [gifct-hsdb, tech-against-terrorism]}}
  - id: warn-users
    do: users.show_warning
    timeout: {timeout}
    with:
      region: GB
      categories: [fraud]
      kind: search_notice
      message_key: scam-warning
      audience: young_users
  - id: throttle-new-accounts
    do: recommender.throttle
    timeout: {timeout}
    with:
      region: GB
      categories: [news]
      reach_multiplier: 0
      max_account_age_days: 7
      keywords: [southport]
"""

# What the playbook puts in force, by the sandbox state's part.
IN_FORCE: dict[str, Any] = {
    "ad_holds": {
        "GB": {
            "charity": {"max_account_age_days": 14, "review": "enhanced"},
            "government_services": {"max_account_age_days": 14, "review": "enhanced"},
        }
    },
    "match_sanctions": {
        "internal-csam-known": {
            "sanction": "ban",
            "preserve_evidence": True,
            "report_to": ["ncmec", "iwf"],
        }
    },
    "search_suppressions": {
        "GB": {"self_harm": {"terms": ["blackout challenge"], "show_support_resources": True}}
    },
    "hash_shares": {
        "christchurch-2019": {
            "partners": ["gifct-hsdb", "tech-against-terrorism"],
            "include_new_hashes": True,
        }
    },
    "user_warnings": {
        "GB": {
            "search_notice": {"fraud": {"message_key": "scam-warning", "audience": "young_users"}}
        }
    },
    "recommender": {
        "GB": {
            "news": {
                "reach_multiplier": 0.0,
                "reshare_limit": None,
                "max_account_age_days": 7,
                "keywords": ["southport"],
            }
        }
    },
}

# Policies another team already had in force on the same targets, set straight on the platform.
EARLIER: list[tuple[str, dict[str, Any]]] = [
    ("/ads/hold-new-advertisers", {"region": "GB", "categories": ["charity"]}),
    ("/accounts/sanction-on-match", {"list_id": "internal-csam-known", "sanction": "suspend"}),
    (
        "/search/suppress-suggestions",
        {"region": "GB", "categories": ["self_harm"], "terms": ["pro-ana"]},
    ),
    ("/hashes/lists/share", {"list_id": "christchurch-2019", "partners": ["gifct-hsdb"]}),
    (
        "/warnings/show",
        {
            "region": "GB",
            "categories": ["fraud"],
            "kind": "search_notice",
            "message_key": "fraud-advice",
        },
    ),
    (
        "/recommender/throttle",
        {"region": "GB", "categories": ["news"], "reach_multiplier": 0.5, "reshare_limit": 3},
    ),
]
# The connectors' apply paths, whose first answers a retry test loses.
APPLY_PATHS = [path for path, _ in EARLIER]

# Parts of the sandbox state that only record traffic; everything else is platform settings.
TRAFFIC = {"applications", "stats"}


def settings_of(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in snapshot.items() if k not in TRAFFIC}


async def run_playbook(
    client: Client, settings: Settings, tmp_path: Path, *, timeout: str = "10s"
) -> tuple[Incidents, str]:
    """Trigger the playbook and wait until every step is applied; answer the incident id."""
    path = tmp_path / "test-library-levers.yaml"
    path.write_text(PLAYBOOK.format(timeout=timeout))
    incidents = Incidents(client, settings)
    triggered = await incidents.trigger(str(path), {}, actor="alice", eager=True)

    async def all_applied() -> IncidentStatus:
        status = await incidents.status(triggered.incident_id)
        assert [s.state for s in status.steps] == ["applied"] * len(STEPS), status
        return status

    await assert_eventually(all_applied, timeout=60)
    return incidents, triggered.incident_id


async def stand_down(incidents: Incidents, incident_id: str) -> None:
    closed = await incidents.stand_down(incident_id, actor="bob", reason="contained")
    assert closed.state == "closed"
    assert [s.state for s in closed.steps] == ["undone"] * len(STEPS), closed


def applied_once_each(snapshot: dict[str, Any]) -> None:
    """Each step was applied once and undone once, and no logical operation ran twice."""
    operations = Counter(
        (a["step"], a["operation"]) for a in snapshot["applications"] if a["incident"]
    )
    assert operations == {
        (step, operation): 1 for step in STEPS for operation in ("apply-1", "undo-1")
    }
    assert snapshot["stats"]["duplicates"] == 0


@pytest.mark.usefixtures("worker")
async def test_library_levers_apply_and_stand_down_restores_the_initial_state(
    client: Client, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Every lever's policy is in force with its parameters, and stand-down removes them all."""
    before = await sandbox.state()
    incidents, incident_id = await run_playbook(client, settings, tmp_path)

    during = await sandbox.state()
    assert {part: during[part] for part in IN_FORCE} == IN_FORCE

    await stand_down(incidents, incident_id)
    after = await sandbox.state()
    assert settings_of(after) == settings_of(before)
    applied_once_each(after)


@pytest.mark.usefixtures("worker")
async def test_stand_down_restores_the_policies_in_force_before(
    client: Client, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    """On top of earlier policies, each step records them and stand-down puts them back."""
    for index, (path, args) in enumerate(EARLIER):
        response = await sandbox.http.post(
            path, json=args, headers={"Idempotency-Key": f"other-team/{index}"}
        )
        assert response.status_code == 200, response.text
    earlier = await sandbox.state()
    incidents, incident_id = await run_playbook(client, settings, tmp_path)

    during = await sandbox.state()
    replaced = {part: during[part] for part in IN_FORCE}
    # The earlier throttle's reshare limit stays (a throttle without one keeps the limit).
    news = IN_FORCE["recommender"]["GB"]["news"]
    assert replaced == {**IN_FORCE, "recommender": {"GB": {"news": {**news, "reshare_limit": 3}}}}
    status = await incidents.status(incident_id)
    previous = {s.id: s.previous for s in status.steps}
    assert previous["sanction-uploaders"] == {
        "list_id": "internal-csam-known",
        "policy": {"sanction": "suspend", "preserve_evidence": True, "report_to": []},
    }
    assert previous["hold-new-advertisers"] == {
        "region": "GB",
        "holds": {
            "charity": {"max_account_age_days": 30, "review": "manual"},
            "government_services": None,
        },
    }
    assert previous["throttle-new-accounts"] == {
        "region": "GB",
        "policies": {"news": {"reach_multiplier": 0.5, "reshare_limit": 3}},
    }

    await stand_down(incidents, incident_id)
    after = await sandbox.state()
    assert settings_of(after) == settings_of(earlier)
    applied_once_each(after)


@pytest.mark.usefixtures("worker")
async def test_lost_answers_are_retried_under_the_same_key_and_applied_once(
    client: Client, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Each connector answers its first apply and restore too late; the retries, under the same
    idempotency keys, are answered from the platform's memory instead of applying again."""
    before = await sandbox.state()
    for path in APPLY_PATHS:
        await sandbox.fault(path_prefix=path, status=0, latency_ms=1500, times=1)
    incidents, incident_id = await run_playbook(client, settings, tmp_path, timeout="1s")
    during = await sandbox.state()
    assert {part: during[part] for part in IN_FORCE} == IN_FORCE
    assert during["stats"]["faults_injected"] == len(APPLY_PATHS)

    for path in APPLY_PATHS:
        await sandbox.fault(path_prefix=f"{path}/restore", status=0, latency_ms=1500, times=1)
    await stand_down(incidents, incident_id)

    async def settled() -> dict[str, Any]:
        # A late request may still be sleeping in the sandbox when the workflow has moved on.
        snapshot = await sandbox.state()
        assert snapshot["stats"]["replayed"] >= 2 * len(STEPS), snapshot["stats"]
        return snapshot

    after = await assert_eventually(settled, timeout=10)
    assert after["stats"]["faults_injected"] == 2 * len(APPLY_PATHS)
    assert settings_of(after) == settings_of(before)
    applied_once_each(after)
    keys = Counter(a["key"] for a in after["applications"])
    assert set(keys.values()) == {1}


def test_playbook_check_accepts_the_levers_and_names_bad_arguments(tmp_path: Path) -> None:
    """The playbook validates as written; a bad argument is caught at its line before any run."""
    path = tmp_path / "test-library-levers.yaml"
    text = PLAYBOOK.format(timeout="10s")
    path.write_text(text)
    assert [str(p) for p in validate_file(path)] == []

    broken = (
        text.replace("review: enhanced", "review: none")
        .replace("sanction: ban,", "sanction: ban, preserve_evidence: false,")
        .replace("kind: search_notice", "kind: popup")
        .replace("reach_multiplier: 0", "reach_multiplier: -1")
    )
    path.write_text(broken)
    problems = validate_file(path)
    lines = broken.splitlines()

    def line_of(fragment: str) -> int:
        return next(n for n, line in enumerate(lines, 1) if fragment in line)

    assert {p.line for p in problems} == {
        line_of("review: none"),
        line_of("preserve_evidence: false"),
        line_of("kind: popup"),
        line_of("reach_multiplier: -1"),
    }, [str(p) for p in problems]
