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
