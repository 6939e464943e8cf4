"""The plan of a shipped playbook: how long each measure holds, as authors read it."""

from __future__ import annotations

from pathlib import Path

from engine.plan import make_plan
from engine.playbook_files import load_playbook

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


def test_lapses_after_spells_out_a_duration_that_reads_differently() -> None:
    """`48h` is shown with `2d`, `24h` with `1d`, `12h` as it is (not as `2 days, 0:00:00`)."""
    playbook = load_playbook(PLAYBOOKS / "violent-disorder.yaml")
    inputs = {name: spec.default for name, spec in playbook.inputs.items()}
    steps = {s.id: s for s in make_plan(playbook, inputs, "critical").steps}
    assert "48h (2d)" == steps["exclude-unreviewed"].lapses_after
    assert "24h (1d)" == steps["restrict-new-livestreams"].lapses_after
    assert "12h" == steps["forward-limit-one"].lapses_after
    assert None is steps["tell-regulator"].lapses_after


def test_a_step_held_back_by_an_earlier_approval_on_its_settings_says_so() -> None:
    """At `critical`, the strictest reshare cut waits for the elevated cut's approval (same lever,
    region and categories); the livestream restriction and the notices do not; below `critical`
    nothing is held back (the strictest cut does not run)."""
    playbook = load_playbook(PLAYBOOKS / "violent-disorder.yaml")
    inputs = {name: spec.default for name, spec in playbook.inputs.items()}
    critical = make_plan(playbook, inputs, "critical").steps
    assert {"forward-limit-one": "cut-reshares"} == {s.id: s.after for s in critical if s.after}
    severe = make_plan(playbook, inputs, "severe").steps
    assert [] == [s.id for s in severe if s.after]
