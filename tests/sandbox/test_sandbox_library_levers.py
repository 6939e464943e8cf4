"""The library levers on the sandbox over real loopback HTTP: apply, restore, refusals."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.sandbox.test_sandbox_api import post, state

# Parts of the sandbox state that only record traffic; everything else is platform settings.
TRAFFIC = {"applications", "stats"}

ADS = {
    "region": "GB",
    "categories": ["charity", "financial_services"],
    "max_account_age_days": 14,
    "review": "enhanced",
}
SANCTION = {
    "list_id": "internal-csam-known",
    "sanction": "ban",
    "preserve_evidence": True,
    "report_to": ["ncmec", "iwf"],
}
SUPPRESS = {
    "region": "GB",
    "categories": ["self_harm", "suicide"],
    "terms": ["blackout challenge"],
    "show_support_resources": True,
}
SHARE = {
    "list_id": "christchurch-2019",
    "partners": ["gifct-hsdb", "tech-against-terrorism"],
    "include_new_hashes": True,
}
WARNING = {
    "region": "GB",
    "categories": ["fraud", "impersonation"],
    "kind": "interstitial",
    "message_key": "scam-warning",
    "audience": "all",
}
THROTTLE = {
    "region": "GB",
    "categories": ["news"],
    "reach_multiplier": 0,
    "max_account_age_days": 7,
    "keywords": ["southport", "Southport mosque"],
}

HOLD = {"max_account_age_days": 14, "review": "enhanced"}
BAN = {"sanction": "ban", "preserve_evidence": True, "report_to": ["ncmec", "iwf"]}
SUPPRESSION = {"terms": ["blackout challenge"], "show_support_resources": True}
SHARED = {"partners": ["gifct-hsdb", "tech-against-terrorism"], "include_new_hashes": True}
NOTICE = {"message_key": "scam-warning", "audience": "all"}
SCOPED = {
    "reach_multiplier": 0.0,
    "reshare_limit": None,
    "max_account_age_days": 7,
    "keywords": ["southport", "Southport mosque"],
}


@dataclass(frozen=True)
class Lever:
    """One library lever as the sandbox serves it, with what a first apply does."""

    path: str
    part: str  # its key in GET /state
    args: dict[str, Any]
    previous: dict[str, Any]  # what the first apply on the initial state answers
    in_force: dict[str, Any]  # state[part] after it
    replaced: dict[str, Any]  # what restoring `previous` then answers: the policy in force


LEVERS = {
    "ads": Lever(
        "/ads/hold-new-advertisers",
        "ad_holds",
        ADS,
        {"region": "GB", "holds": {"charity": None, "financial_services": None}},
        {"GB": {"charity": HOLD, "financial_services": HOLD}},
        {"region": "GB", "holds": {"charity": HOLD, "financial_services": HOLD}},
    ),
    "sanction": Lever(
        "/accounts/sanction-on-match",
        "match_sanctions",
        SANCTION,
        {"list_id": "internal-csam-known", "policy": None},
        {"internal-csam-known": BAN},
        {"list_id": "internal-csam-known", "policy": BAN},
    ),
    "suppress": Lever(
        "/search/suppress-suggestions",
        "search_suppressions",
        SUPPRESS,
        {"region": "GB", "suppressions": {"self_harm": None, "suicide": None}},
        {"GB": {"self_harm": SUPPRESSION, "suicide": SUPPRESSION}},
        {"region": "GB", "suppressions": {"self_harm": SUPPRESSION, "suicide": SUPPRESSION}},
    ),
    "share": Lever(
        "/hashes/lists/share",
        "hash_shares",
        SHARE,
        {"list_id": "christchurch-2019", "share": None},
        {"christchurch-2019": SHARED},
        {"list_id": "christchurch-2019", "share": SHARED},
    ),
    "warning": Lever(
        "/warnings/show",
        "user_warnings",
        WARNING,
        {
            "region": "GB",
            "kind": "interstitial",
            "warnings": {"fraud": None, "impersonation": None},
        },
        {"GB": {"interstitial": {"fraud": NOTICE, "impersonation": NOTICE}}},
        {
            "region": "GB",
            "kind": "interstitial",
            "warnings": {"fraud": NOTICE, "impersonation": NOTICE},
        },
    ),
    "throttle": Lever(
        "/recommender/throttle",
        "recommender",
        THROTTLE,
        {"region": "GB", "policies": {"news": None}},
        {"GB": {"news": SCOPED}},
        {"region": "GB", "policies": {"news": SCOPED}},
    ),
}

# A second apply on (part of) the same target, and what it then answers as `previous`.
ON_TOP: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "ads": (
        {"region": "GB", "categories": ["charity", "government_services"]},
        {"region": "GB", "holds": {"charity": HOLD, "government_services": None}},
    ),
    "sanction": (
        {"list_id": "internal-csam-known", "sanction": "suspend"},
        {"list_id": "internal-csam-known", "policy": BAN},
    ),
    "suppress": (
        {"region": "GB", "categories": ["self_harm"], "terms": ["pro-ana"]},
        {"region": "GB", "suppressions": {"self_harm": SUPPRESSION}},
    ),
    "share": (
        {"list_id": "christchurch-2019", "partners": ["gifct-hsdb"], "include_new_hashes": False},
        {"list_id": "christchurch-2019", "share": SHARED},
    ),
    "warning": (
        {
            "region": "GB",
            "categories": ["fraud"],
            "message_key": "scam-warning-v2",
            "audience": "young_users",
        },
        {"region": "GB", "kind": "interstitial", "warnings": {"fraud": NOTICE}},
    ),
    "throttle": (
        {"region": "GB", "categories": ["news", "video"], "reach_multiplier": 0.5},
        {"region": "GB", "policies": {"news": SCOPED, "video": None}},
    ),
}


@pytest.fixture
def http(sandbox_url: str) -> Iterator[httpx.Client]:
    """A plain HTTP client on the sandbox shared by the test run, reset to its initial state."""
    with httpx.Client(base_url=sandbox_url, timeout=10) as c:
        assert c.post("/reset").status_code == 200
        yield c


def settings_of(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in snapshot.items() if k not in TRAFFIC}


@pytest.mark.parametrize("name", sorted(LEVERS))
def test_apply_and_restore_round_trip(http: httpx.Client, name: str) -> None:
    """Apply answers the empty policy it replaced; restore answers the policy and removes it."""
    lever = LEVERS[name]
    before = state(http)
    assert before[lever.part] == {}

    applied = post(http, lever.path, lever.args, "i1/s1/apply-1", ("i1", "s1", "apply-1"))
    assert applied.status_code == 200, applied.text
    assert applied.json() == {"previous": lever.previous}
    assert state(http)[lever.part] == lever.in_force

    restore = {"args": lever.args, "previous": lever.previous}
    restored = post(http, f"{lever.path}/restore", restore, "i1/s1/undo-1", ("i1", "s1", "undo-1"))
    assert restored.status_code == 200, restored.text
    assert restored.json() == {"previous": lever.replaced}
    after = state(http)
    assert settings_of(after) == settings_of(before)
    assert after["stats"]["duplicates"] == 0


@pytest.mark.parametrize("name", sorted(ON_TOP))
def test_apply_on_top_restores_the_earlier_policy(http: httpx.Client, name: str) -> None:
    """A second apply answers the first's policy as `previous`, and restore brings it back."""
    lever = LEVERS[name]
    assert post(http, lever.path, lever.args, "i1/s1/apply-1").status_code == 200
    earlier = state(http)
    later, expected = ON_TOP[name]

    answer = post(http, lever.path, later, "i2/s1/apply-1")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"previous": expected}
    assert state(http)[lever.part] != earlier[lever.part]

    restore = {"args": later, "previous": expected}
    assert post(http, f"{lever.path}/restore", restore, "i2/s1/undo-1").status_code == 200
    assert settings_of(state(http)) == settings_of(earlier)


def test_warning_kinds_are_separate_policies(http: httpx.Client) -> None:
    """A banner on a category does not replace its interstitial, and restoring it leaves it."""
    assert post(http, "/warnings/show", WARNING, "i1/s1/apply-1").status_code == 200
    banner = {"region": "GB", "categories": ["fraud"], "kind": "banner", "message_key": "fraud"}
    answer = post(http, "/warnings/show", banner, "i2/s1/apply-1").json()
    assert answer == {"previous": {"region": "GB", "kind": "banner", "warnings": {"fraud": None}}}
    warnings = state(http)["user_warnings"]["GB"]
    assert warnings["banner"] == {"fraud": {"message_key": "fraud", "audience": "all"}}
    assert warnings["interstitial"] == LEVERS["warning"].in_force["GB"]["interstitial"]

    restore = {"args": banner, "previous": answer["previous"]}
    assert post(http, "/warnings/show/restore", restore, "i2/s1/undo-1").status_code == 200
    assert state(http)["user_warnings"] == LEVERS["warning"].in_force


def test_unscoped_throttle_keeps_its_shape(http: httpx.Client) -> None:
    """A throttle without scope is written as before, and one on top of it restores it exactly."""
    plain = {"region": "GB", "categories": ["news"], "reach_multiplier": 0.25, "reshare_limit": 5}
    assert post(http, "/recommender/throttle", plain, "i1/s1/apply-1").status_code == 200
    assert state(http)["recommender"] == {
        "GB": {"news": {"reach_multiplier": 0.25, "reshare_limit": 5}}
    }
    answer = post(http, "/recommender/throttle", THROTTLE, "i2/s1/apply-1").json()
    assert answer["previous"]["policies"]["news"] == {"reach_multiplier": 0.25, "reshare_limit": 5}
    # A null reshare_limit keeps the limit in force; the scope is the new policy's own.
    assert state(http)["recommender"]["GB"]["news"] == {**SCOPED, "reshare_limit": 5}

    restore = {"args": THROTTLE, "previous": answer["previous"]}
    assert post(http, "/recommender/throttle/restore", restore, "i2/s1/undo-1").status_code == 200
    assert state(http)["recommender"] == {
        "GB": {"news": {"reach_multiplier": 0.25, "reshare_limit": 5}}
    }


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/accounts/sanction-on-match", {**SANCTION, "list_id": "no-such-list"}),
        (
            "/accounts/sanction-on-match/restore",
            {
                "args": {**SANCTION, "list_id": "no-such-list"},
                "previous": {"list_id": "no-such-list", "policy": None},
            },
        ),
        ("/hashes/lists/share", {**SHARE, "list_id": "no-such-list"}),
        (
            "/hashes/lists/share/restore",
            {
                "args": {**SHARE, "list_id": "no-such-list"},
                "previous": {"list_id": "no-such-list", "share": None},
            },
        ),
    ],
)
def test_unknown_hash_list_is_404(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    """Sanctioning on or sharing an unknown list is a 404 naming it, and applies nothing."""
    response = post(http, path, body, "i1/s1/apply-1")
    assert response.status_code == 404
    assert "no-such-list" in response.json()["error"]
    assert state(http)["stats"]["applied"] == 0


def _restore(lever: str, **previous: Any) -> dict[str, Any]:
    return {"args": LEVERS[lever].args, "previous": {**LEVERS[lever].previous, **previous}}


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/ads/hold-new-advertisers", {**ADS, "categories": []}, "categories"),
        ("/ads/hold-new-advertisers", {**ADS, "max_account_age_days": 0}, "max_account_age_days"),
        ("/ads/hold-new-advertisers", {**ADS, "max_account_age_days": 366}, "max_account_age"),
        ("/ads/hold-new-advertisers", {**ADS, "review": "none"}, "review"),
        ("/ads/hold-new-advertisers", {**ADS, "advertisers": "all"}, "advertisers"),
        ("/accounts/sanction-on-match", {**SANCTION, "sanction": "warn"}, "sanction"),
        ("/accounts/sanction-on-match", {**SANCTION, "preserve_evidence": False}, "report_to"),
        ("/accounts/sanction-on-match", {**SANCTION, "report_to": [""]}, "report_to"),
        ("/search/suppress-suggestions", {**SUPPRESS, "categories": []}, "categories"),
        ("/search/suppress-suggestions", {**SUPPRESS, "terms": "blackout"}, "terms"),
        ("/hashes/lists/share", {**SHARE, "partners": []}, "partners"),
        ("/warnings/show", {**WARNING, "kind": "popup"}, "kind"),
        ("/warnings/show", {**WARNING, "audience": "adults"}, "audience"),
        ("/warnings/show", {**WARNING, "message_key": "Scam Warning!"}, "message_key"),
        ("/recommender/throttle", {**THROTTLE, "reach_multiplier": -0.1}, "reach_multiplier"),
        ("/recommender/throttle", {**THROTTLE, "max_account_age_days": 0}, "max_account_age"),
        ("/recommender/throttle", {**THROTTLE, "keywords": [""]}, "keywords"),
        ("/ads/hold-new-advertisers/restore", _restore("ads", region="FR"), "region"),
        (
            "/ads/hold-new-advertisers/restore",
            _restore("ads", holds={"charity": None, "gambling": None}),
            "gambling",
        ),
        (
            "/accounts/sanction-on-match/restore",
            _restore("sanction", list_id="gifct-perpetrator-content"),
            "list_id",
        ),
        (
            "/accounts/sanction-on-match/restore",
            _restore("sanction", policy={**BAN, "preserve_evidence": False}),
            "report_to",
        ),
        ("/search/suppress-suggestions/restore", _restore("suppress", region="FR"), "region"),
        (
            "/search/suppress-suggestions/restore",
            _restore("suppress", suppressions={"gambling": None}),
            "gambling",
        ),
        ("/hashes/lists/share/restore", _restore("share", list_id="internal-csam-known"), "list"),
        (
            "/hashes/lists/share/restore",
            _restore("share", share={"partners": [], "include_new_hashes": True}),
            "partners",
        ),
        ("/warnings/show/restore", _restore("warning", region="FR"), "region"),
        ("/warnings/show/restore", _restore("warning", kind="banner"), "kind"),
        (
            "/warnings/show/restore",
            _restore("warning", warnings={"fraud": {"message_key": "x", "audience": "teens"}}),
            "audience",
        ),
        (
            "/recommender/throttle/restore",
            _restore("throttle", policies={"news": {**SCOPED, "max_account_age_days": 400}}),
            "max_account_age_days",
        ),
    ],
)
def test_invalid_requests_are_422(
    http: httpx.Client, path: str, body: dict[str, Any], message: str
) -> None:
    """Bad arguments or a restore naming another target are a 422 naming the problem."""
    before = state(http)
    response = post(http, path, body, "i1/s1/apply-1")
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]
    after = state(http)
    assert after["stats"]["applied"] == 0
    assert settings_of(after) == settings_of(before)


@pytest.mark.parametrize("name", sorted(LEVERS))
def test_replay_answers_the_first_response_without_reapplying(
    http: httpx.Client, name: str
) -> None:
    """The same key and body answer the first response again; the state is left as it was."""
    lever = LEVERS[name]
    first = post(http, lever.path, lever.args, "i1/s1/apply-1")
    after_first = state(http)
    again = post(http, lever.path, lever.args, "i1/s1/apply-1")
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    # Re-applied, it would answer the policy it put in force as `previous`; a replay cannot.
    assert again.json() == first.json() == {"previous": lever.previous}
    after = state(http)
    assert after[lever.part] == after_first[lever.part]
    assert (after["stats"]["applied"], after["stats"]["replayed"]) == (1, 1)


@pytest.mark.parametrize("name", sorted(ON_TOP))
def test_same_key_with_another_body_is_422(http: httpx.Client, name: str) -> None:
    """A key reused for different arguments is refused and changes nothing."""
    lever = LEVERS[name]
    assert post(http, lever.path, lever.args, "i1/s1/apply-1").status_code == 200
    before = state(http)
    other, _ = ON_TOP[name]
    response = post(http, lever.path, other, "i1/s1/apply-1")
    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["error"]
    after = state(http)
    assert after[lever.part] == before[lever.part]
    assert after["stats"]["applied"] == 1


@pytest.mark.parametrize("name", sorted(LEVERS))
def test_missing_key_is_400(http: httpx.Client, name: str) -> None:
    """An apply or restore without an Idempotency-Key is a 400 and applies nothing."""
    lever = LEVERS[name]
    restore = {"args": lever.args, "previous": lever.previous}
    for path, body in ((lever.path, lever.args), (f"{lever.path}/restore", restore)):
        response = post(http, path, body, None)
        assert response.status_code == 400
        assert "Idempotency-Key" in response.json()["error"]
    assert state(http)["stats"]["applied"] == 0
