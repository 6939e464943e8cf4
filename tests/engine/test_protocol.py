"""The written crisis response protocol: the document model built from a playbook, and its
Markdown and HTML renderings, which must carry every element of it."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import re
from datetime import UTC, datetime
from html import unescape
from pathlib import Path

import pytest

from engine.playbook_files import playbook_files
from engine.protocol import (
    NoPlaybooks,
    PlaybookDoc,
    ProtocolDocument,
    build_protocol,
    levers_used,
    load_sources,
    render_html,
    render_markdown,
)
from workflows.playbook import walk_steps

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "playbooks"  # stakeholders and templates for playbooks written here

# Levels, an approval with quorum 2 inside a parallel step, a level-gated branch, a `when:`-gated
# escalation notification, expiries, a wait, reviews, an undo notification, on_stand_down, a
# post-incident review, and an input without a default read by a condition.
PLAYBOOK = """\
playbook: protocol-test
version: 3
title: Livestreamed attack
owner: trust-and-safety
description: >-
  Activate when footage of an attack is being livestreamed and re-uploaded.
inputs:
  region: {type: string, default: GB, description: Region of the attack}
  town: {type: string, description: Town targeted}
  notify: {type: boolean, default: false}
levels: [elevated, severe, critical]
reviews: {every: 6h, grace: 30m, on_missed: stand_down}
post_incident_review: {due_within: 7d, owner: policy-lead}
steps:
  - id: block-footage
    description: Block uploads of the perpetrator's footage
    do: hashes.block
    with: {list_id: gifct-incident, source: gifct-hsdb, hash_types: [pdq, vpdq]}
    expires_after: 2d
  - id: let-it-settle
    wait: 15m
  - id: together
    parallel:
      - id: cut-reach
        do: recommender.throttle
        with: {region: "${inputs.region}", categories: [terrorism], reach_multiplier: 0.1}
        expires_after: 12h
        approval: {roles: [commander, policy-lead], quorum: 2, timeout: 1h, on_timeout: skip}
      - id: tighten
        level: severe
        do: detection.set_threshold
        with: {classifier: terrorism, threshold: 0.3}
        expires_after: 6h
  - id: tell-police
    when: level >= 'critical'
    do: notify.send
    with: {to: law-enforcement, template: crisis-escalated, severity: critical}
  - id: tell-regulator
    do: notify.webhook
    with: {to: regulator, severity: critical, message: "Crisis in ${inputs.region}"}
    undo:
      do: notify.webhook
      with: {to: regulator, severity: info, message: "Crisis over in ${inputs.region}"}
  - id: tell-town
    when: inputs.town == 'Southport'
    do: notify.send
    with: {to: executives, template: crisis-opened}
on_stand_down:
  - id: all-clear
    do: notify.send
    with: {to: internal-crisis-team, template: crisis-closed, severity: info}
"""
GENERATED = datetime(2026, 6, 18, 9, 30, tzinfo=UTC)


def protocol_for(tmp_path: Path, text: str = PLAYBOOK) -> ProtocolDocument:
    path = tmp_path / "protocol-test.yaml"
    path.write_text(text)
    return build_protocol(load_sources([str(path)], LIBRARY), generated_at=GENERATED)


@pytest.fixture
def document(tmp_path: Path) -> ProtocolDocument:
    return protocol_for(tmp_path)


def only(document: ProtocolDocument) -> PlaybookDoc:
    assert 1 == len(document.playbooks)
    return document.playbooks[0]


def text_of(html: str) -> str:
    """The page's text as a reader sees it: tags dropped, entities decoded, spaces collapsed."""
    inline = re.sub(r"</?(code|a|strong|em|span)\b[^>]*>", "", html)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", inline)).split())


# --- the model --------------------------------------------------------------------------------
def test_identity_purpose_and_inputs(document: ProtocolDocument) -> None:
    """Name, title, version, owner, content hash, activation criteria and inputs with defaults."""
    pb = only(document)
    assert ("protocol-test", "Livestreamed attack", 3, "trust-and-safety") == (
        pb.name,
        pb.title,
        pb.version,
        pb.owner,
    )
    assert pb.content_hash.startswith("sha256:") and 71 == len(pb.content_hash)
    assert pb.description.startswith("Activate when footage of an attack")
    assert [("region", "GB"), ("town", None), ("notify", "false")] == [
        (i.name, i.default) for i in pb.inputs
    ]
    assert GENERATED == document.generated_at
    assert "2026-06-18 09:30 UTC" == document.generated


def test_steps_in_order_with_levels_and_conditions(document: ProtocolDocument) -> None:
    """Every step, branches and stand-down steps included, in plan order, with the levels it
    applies at: a level-gated branch from severe, the `when:`-gated call to the police only at
    critical, and a condition on an input without a default as "depends"."""
    pb = only(document)
    assert ["elevated", "severe", "critical"] == pb.columns
    assert [
        ("1", "block-footage", "measure", ["yes", "yes", "yes"]),
        ("2", "let-it-settle", "wait", ["yes", "yes", "yes"]),
        ("3", "together", "parallel", ["yes", "yes", "yes"]),
        ("3.1", "cut-reach", "measure", ["yes", "yes", "yes"]),
        ("3.2", "tighten", "measure", ["no", "yes", "yes"]),
        ("4", "tell-police", "notification", ["no", "no", "yes"]),
        ("5", "tell-regulator", "notification", ["yes", "yes", "yes"]),
        ("6", "tell-town", "notification", ["depends", "depends", "depends"]),
        ("close.1", "all-clear", "notification", ["yes", "yes", "yes"]),
    ] == [(s.order, s.id, s.kind, s.applies) for s in pb.steps]
    elevated = ["block-footage", "let-it-settle", "together", "cut-reach", "tell-regulator"]
    assert [
        ("elevated", [*elevated, "tell-town"]),  # a stand-down step starts at no level
        ("severe", ["tighten"]),
        ("critical", ["tell-police"]),
    ] == [(lv.name, lv.adds) for lv in pb.levels]
    steps = {s.id: s for s in pb.steps}
    assert "together" == steps["cut-reach"].parent
    assert "from level severe upwards" == steps["tighten"].condition
    assert "only if inputs.town == 'Southport' (inputs.town is given at trigger, no default)" == (
        steps["tell-town"].condition
    )
    assert "15m" == steps["let-it-settle"].wait
    assert ["let-it-settle"] == [w.id for w in pb.waits]


def test_measures_in_plain_words(document: ProtocolDocument) -> None:
    """A measure has its lever's summary, its parameters (an input shown with its default, the
    lever's own defaults marked), approval, time limit, undo and failure policy."""
    steps = {s.id: s for s in only(document).measures}
    assert [
        "block-footage",
        "cut-reach",
        "tighten",
        "tell-police",
        "tell-regulator",
        "tell-town",
        "all-clear",
    ] == list(steps)
    cut = steps["cut-reach"]
    assert "recommender.throttle" == cut.lever
    assert cut.lever_summary.startswith("Cut the reach of content")
    params = {p.name: p for p in cut.parameters}
    assert ("${inputs.region}", "inputs.region defaults to GB", False) == (
        params["region"].value,
        params["region"].note,
        params["region"].lever_default,
    )
    assert "Region code, e.g. GB" == params["region"].meaning
    assert ("none", True) == (params["reshare_limit"].value, params["reshare_limit"].lever_default)
    assert cut.approval is not None
    assert (["commander", "policy-lead"], 2, "1h", "skip") == (
        cut.approval.roles,
        cut.approval.quorum,
        cut.approval.timeout,
        cut.approval.on_timeout,
    )
    assert (
        "Needs 2 approvals from distinct people holding commander or policy-lead within 1h; "
        "one rejection skips it; if the approvals do not come in time, the step is skipped."
    ) == cut.approval.rule
    assert "12h" == cut.expires_after
    assert cut.time_limit.startswith("Lapses (is undone) 12h after it is applied")
    assert (
        "restore",
        "Restored to the prior state on stand-down (and earlier, when it lapses).",
    ) == (
        cut.undo_kind,
        cut.undo,
    )
    assert "explicit" == steps["tell-regulator"].undo_kind
    assert "`notify.webhook`" in steps["tell-regulator"].undo
    assert "none" == steps["tell-police"].undo_kind
    assert "If it fails: the playbook stops" in cut.on_failure
    assert "up to 5 attempts" in cut.attempts
    assert steps["all-clear"].closing
    # It runs after every undo: its failure stops nothing, whatever its on_failure says.
    assert (
        "If it fails: the failure is recorded; the other stand-down steps still run and the "
        "incident closes." == steps["all-clear"].on_failure
    )


def test_roles_and_approvers(document: ProtocolDocument) -> None:
    """The commander, the owner, the review owner and every approving role with what it approves."""
    roles = {r.role: r.duties for r in only(document).roles}
    assert ["incident commander", "trust-and-safety", "policy-lead", "commander"] == list(roles)
    assert ["owns and maintains this playbook (owner)"] == roles["trust-and-safety"]
    approves = "approves `cut-reach` (needs 2 approvals from commander, policy-lead within 1h)"
    assert ["owns the post-incident review", approves] == roles["policy-lead"]
    assert [approves] == roles["commander"]


def test_notifications_at_open_escalation_and_close(document: ProtocolDocument) -> None:
    """Open: notify steps that run at the first level; escalation: the ones gated on a higher
    level; close: undo notifications and on_stand_down. Directory names and templates resolved."""
    pb = only(document)
    assert [("tell-regulator", "open"), ("tell-town", "open")] == [
        (n.step_id, n.stage) for n in pb.notifications_at("open")
    ]
    (police,) = pb.notifications_at("escalation")
    assert ("tell-police", "on escalation to critical") == (police.step_id, police.when_sent)
    assert "National police single point of contact (external)" == police.recipient
    assert ("crisis-escalated", "critical") == (police.template, police.severity)
    assert "Crisis escalated to {{ incident.level }}" in (police.subject or "")
    assert ["webhook:notify-connector"] == police.channels
    assert [("tell-regulator", "Crisis over in ${inputs.region}"), ("all-clear", None)] == [
        (n.step_id, n.message) for n in pb.notifications_at("close")
    ]


def test_reviews_conclusion_and_post_incident_review(document: ProtocolDocument) -> None:
    """Review cadence with grace and the missed-review action; stand-down, expiry and closing
    steps; the post-incident review deadline and owner."""
    pb = only(document)
    assert pb.reviews is not None
    assert pb.reviews.startswith("Every 6h from the declaration")
    assert "within 30m of its due time is missed: the incident is stood down." in pb.reviews
    conclusion = " ".join(pb.conclusion)
    assert "`crisis stand-down" in conclusion
    # Newest first, as the stand-down runs; closing messages after every measure.
    assert "`tighten`, `cut-reach`, `block-footage` restored to the prior state." in conclusion
    assert "Then the closing messages are sent, newest first: `tell-regulator`." in conclusion
    assert "Then the stand-down steps run: `all-clear`." in conclusion
    assert "`block-footage` after 2d, `cut-reach` after 12h, `tighten` after 6h" in conclusion
    assert "A missed review stands the incident down without a person." in conclusion
    assert pb.post_incident_review.startswith(
        "Due within 7d of the incident's close, owned by policy-lead."
    )


def test_a_playbook_without_levels_reviews_or_review_spec(tmp_path: Path) -> None:
    """No levels: one column for every incident; no review cadence; the default review period."""
    text = """\
playbook: plain
version: 1
title: Plain
description: For tests.
steps:
  - id: surge
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 3}
"""
    pb = only(protocol_for(tmp_path, text))
    assert (["every incident"], [], None) == (pb.columns, pb.levels, pb.reviews)
    assert [["yes"]] == [s.applies for s in pb.steps]
    assert "None: in force until stand-down" in pb.measures[0].time_limit
    assert pb.post_incident_review.startswith("Due within 14d of the incident's close, owner not")
    assert "(Not set in the playbook: the default applies.)" in pb.post_incident_review


def test_levers_used_are_distinct_in_order_of_first_use_with_undo_levers(tmp_path: Path) -> None:
    path = tmp_path / "protocol-test.yaml"
    path.write_text(PLAYBOOK)
    (source,) = load_sources([str(path)], LIBRARY)
    assert [
        "hashes.block",
        "recommender.throttle",
        "detection.set_threshold",
        "notify.send",
        "notify.webhook",
    ] == levers_used(source.playbook)


def test_an_empty_library_is_an_error(tmp_path: Path) -> None:
    """Nothing to document is a named error, not an empty document."""
    with pytest.raises(NoPlaybooks, match="no playbooks to document"):
        load_sources([], tmp_path)


def test_the_library_skips_scenarios_and_its_own_files(tmp_path: Path) -> None:
    """`<playbook>.scenario.yaml`, templates.yaml and stakeholders.yaml are not playbooks."""
    for name in (
        "a.yaml",
        "b.yml",
        "a.scenario.yaml",
        "b.scenario.yml",
        "templates.yaml",
        "stakeholders.yaml",
        "notes.txt",
    ):
        (tmp_path / name).write_text("x: 1\n")
    assert ["a.yaml", "b.yml"] == [p.name for p in playbook_files(tmp_path)]


# --- the renderings ---------------------------------------------------------------------------
def expected_fragments(pb: PlaybookDoc) -> list[str]:
    """What a reader must find in either rendering: every element of the model, as text."""
    found = [pb.name, pb.title, pb.content_hash, pb.owner, pb.description, pb.post_incident_review]
    found += [i.name for i in pb.inputs] + [i.default for i in pb.inputs if i.default]
    found += [lv.name for lv in pb.levels] + [r.role for r in pb.roles]
    found += [pb.reviews or "", *pb.conclusion]
    for s in pb.steps:
        found += [s.id, s.order, s.summary]
        if s.is_lever:
            found += [s.lever or "", s.lever_summary, s.time_limit, s.undo, s.on_failure]
            found.append(s.attempts)
            found += [p.value for p in s.parameters] + [p.meaning for p in s.parameters]
            if s.approval:
                found.append(s.approval.rule)
    for n in pb.notifications:
        found += [n.recipient, n.when_sent, n.severity, *n.channels]
        found += [n.subject or "", n.message or ""]
    return [plain(f) for f in found if f]


def plain(text: str) -> str:
    """Text without code marks and with spaces collapsed, to compare across formats."""
    return " ".join(text.replace("`", "").split())


def test_markdown_carries_every_element(document: ProtocolDocument) -> None:
    """The Markdown holds every element of the model, the hash table at the top, and the date."""
    text = render_markdown(document)
    flat = plain(text)
    pb = only(document)
    missing = [f for f in expected_fragments(pb) if f not in flat]
    assert [] == missing
    assert text.startswith("# Crisis response protocol\n")
    assert "Generated 2026-06-18 09:30 UTC" in text
    top = text.split("\n---\n")[0]
    assert "| `protocol-test` | Livestreamed attack | 3 | trust-and-safety |" in top
    assert f"`{pb.content_hash}`" in top
    assert "| 3.2 | `tighten` | measure | no | yes | yes |" in text
    for stage in ("When the incident is declared", "On escalation", "At the close"):
        assert f"**{stage}:**" in text


def test_html_carries_every_element(document: ProtocolDocument) -> None:
    """The standalone page holds the same elements, with no external asset and print CSS."""
    html = render_html(document)
    flat = plain(text_of(html))
    pb = only(document)
    missing = [f for f in expected_fragments(pb) if f not in flat]
    assert [] == missing
    assert html.startswith("<!DOCTYPE html>")
    assert '<meta name="viewport"' in html and "@media print" in html
    assert "@media (max-width: 640px)" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<link" not in html and "<script" not in html
    for s in pb.steps:
        assert f'id="pb-protocol-test-step-{s.id}"' in html
    assert "Generated 2026-06-18 09:30 UTC" in flat


def test_html_is_escaped(tmp_path: Path) -> None:
    """Text from a playbook cannot inject markup into the page."""
    hostile = PLAYBOOK.replace(
        "Activate when footage of an attack is being livestreamed and re-uploaded.",
        "Activate on <script>alert('x')</script> & <b>bold</b> claims.",
    ).replace("title: Livestreamed attack", 'title: "Attack <img src=x onerror=alert(1)>"')
    html = render_html(protocol_for(tmp_path, hostile))
    assert "<script>" not in html and "<img" not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert "Attack &lt;img src=x onerror=alert(1)&gt;" in html


def test_markdown_table_cells_stay_one_row(tmp_path: Path) -> None:
    """A pipe or a line break in a value does not break the Markdown tables."""
    text = PLAYBOOK.replace(
        "{type: string, default: GB, description: Region of the attack}",
        '{type: string, default: GB, description: "Region | where\\nit happened"}',
    )
    md = render_markdown(protocol_for(tmp_path, text))
    assert "| `region` | string | `GB` | Region \\| where it happened |" in md


def test_the_shipped_library_renders(tmp_path: Path) -> None:
    """Every playbook in the library builds and renders; each step id appears in both formats."""
    sources = load_sources([], LIBRARY)
    assert [p.name for p in playbook_files(LIBRARY)] == [s.path.name for s in sources]
    document = build_protocol(sources)
    md, html = render_markdown(document), render_html(document)
    # Named within the library, never by the generating machine's absolute path.
    assert [f"playbooks/{s.path.name}" for s in sources] == [p.file for p in document.playbooks]
    assert str(REPO) not in md and str(REPO) not in html
    for source in sources:
        for _, step in walk_steps(source.playbook):
            assert f"`{step.id}`" in md
            assert f'id="pb-{source.playbook.playbook}-step-{step.id}"' in html


def test_a_branch_says_when_its_parallel_step_runs_and_roles_read_as_english(
    tmp_path: Path,
) -> None:
    """A branch of a level-gated parallel step is not "always"; "an executive", not "a"; a
    playbook named twice is documented once."""
    shipped = LIBRARY / "violent-disorder.yaml"
    document = build_protocol(
        load_sources([str(shipped), "violent-disorder"], LIBRARY), generated_at=GENERATED
    )
    pb = only(document)
    steps = {s.id: s for s in pb.steps}
    parent = steps["escalation-to-regulator"].parent
    assert parent is not None and steps[parent].condition
    assert steps[parent].condition == steps["escalation-to-regulator"].condition
    assert "a commander and an executive" == steps["forward-limit-one"].approval.who
    assert " a executive" not in render_markdown(document)


def test_levels_leave_out_stand_down_steps_and_a_gated_branch_is_withdrawn(tmp_path: Path) -> None:
    """`on_stand_down` steps start at no level; a branch of a level-gated parallel step says it
    is taken back when the level drops; a measure held back by an earlier approval on its
    settings says so."""
    extra = """\
  - id: gated
    level: severe
    parallel:
      - id: gated-notice
        do: notify.webhook
        with: {to: regulator, message: escalated}
        undo:
          do: notify.webhook
          with: {to: regulator, message: de-escalated}
  - id: cut-reach-more
    do: recommender.throttle
    with: {region: "${inputs.region}", categories: [terrorism], reach_multiplier: 0.05}
on_stand_down:
"""
    pb = only(protocol_for(tmp_path, PLAYBOOK.replace("on_stand_down:\n", extra)))
    assert all("all-clear" not in level.adds for level in pb.levels)
    steps = {s.id: s for s in pb.steps}
    assert "when its level or condition no longer holds" in steps["gated-notice"].undo
    assert "together" == steps["cut-reach-more"].after
    assert "**Order:** while `together` waits for its approval" in render_markdown(
        protocol_for(tmp_path, PLAYBOOK.replace("on_stand_down:\n", extra))
    )
