"""Two measures on the same platform settings: the newer is applied over the older. When the
older lapses first, taking it back must not wipe the newer (nor bring the older back after
stand-down): the newer is lifted, the older restored, the newer put back with its own expiry."""

from __future__ import annotations

from datetime import timedelta

from tests.workflows.lab import Lab, at, kinds, settings_of, step

STACKED = """
steps:
  - id: cut-reshares
    do: recommender.throttle
    with:
      region: GB
      categories: [incitement_to_violence, racial_hatred]
      reach_multiplier: 0.5
      reshare_limit: 5
    expires_after: 2h
  - id: limit-one
    do: recommender.throttle
    with:
      region: GB
      categories: [incitement_to_violence]
      reach_multiplier: 0.25
      reshare_limit: 1
    expires_after: 6h
  - id: elsewhere
    do: recommender.throttle
    with: {region: IE, categories: [incitement_to_violence], reach_multiplier: 0.5}
    expires_after: 1h
"""


async def test_an_older_measure_lapsing_leaves_the_newer_in_force(lab: Lab) -> None:
    before = settings_of(await lab.platform())
    incident = await lab.trigger(STACKED)
    status = await lab.settle(
        incident, {"cut-reshares": "applied", "limit-one": "applied", "elsewhere": "applied"}
    )
    limit_one_expiry = step(status, "limit-one").expires_at
    gb = (await lab.platform())["recommender"]["GB"]
    assert {"reach_multiplier": 0.25, "reshare_limit": 1} == gb["incitement_to_violence"]

    # `elsewhere` (another region) lapses alone: nothing of GB moves.
    await lab.advance(timedelta(minutes=90))
    await lab.sync(incident)
    events = await lab.audit(incident, until="step.expired")
    assert ["elsewhere"] == [e.step_id for e in events if e.kind in ("step.expired", "step.undone")]

    # cut-reshares lapses under limit-one.
    await lab.advance(timedelta(hours=1))
    status = await lab.sync(incident)
    assert ("expired", "applied") == (
        step(status, "cut-reshares").state,
        step(status, "limit-one").state,
    )
    assert limit_one_expiry == step(status, "limit-one").expires_at  # keeps its own expiry
    gb = (await lab.platform())["recommender"]["GB"]
    assert {"reach_multiplier": 0.25, "reshare_limit": 1} == gb["incitement_to_violence"]
    assert None is gb.get("racial_hatred")  # only cut-reshares covered it: restored to none
    events = await lab.audit(incident, until="step.expired", count=2)
    tail = [(e.kind, e.step_id) for e in events if e.kind != "note.added"][-5:]
    assert [
        ("step.undone", "limit-one"),
        ("step.expired", "cut-reshares"),
        ("step.started", "limit-one"),
        ("step.applied", "limit-one"),
    ] == tail[-4:], tail
    lifted = next(e for e in events if e.kind == "step.undone" and e.step_id == "limit-one")
    assert "lifted while cut-reshares is taken back" == lifted.data["reason"]

    # At its own time limit-one lapses, and the platform is as it was before the incident.
    await lab.advance(timedelta(hours=4))
    status = await lab.sync(incident)
    assert "expired" == step(status, "limit-one").state
    assert at(limit_one_expiry) <= at(status.steps[1].undone_at)
    assert before == settings_of(await lab.platform())
    assert lab.store.verify(incident).ok
    assert 3 == kinds(await lab.audit(incident, until="step.expired", count=3)).count(
        "step.expired"
    )


async def test_stand_down_after_a_lapse_restores_everything(lab: Lab) -> None:
    """The failure this guards against: the older's restore wiped the newer, whose own restore
    then brought the older's setting back after close."""
    before = settings_of(await lab.platform())
    incident = await lab.trigger(STACKED)
    await lab.settle(incident, {"cut-reshares": "applied", "limit-one": "applied"})
    await lab.advance(timedelta(hours=3))
    await lab.sync(incident)
    await lab.incidents.stand_down(incident, actor="alice", reason="calm")
    await lab.audit(incident, until="incident.closed")
    assert before == settings_of(await lab.platform())
