"""The audit activity groups a burst of writes into few transactions; a bad write fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.audit import AuditWriter
from store.audit_store import AppendResult, AuditStore, Write
from store.errors import AuditConflict
from store.seals import Signer
from tests.store.test_audit_store import chain, new_id
from workflows.audit import AuditBatch, make_event


class CountingStore(AuditStore):
    """The real store, counting the transactions the writer asks for."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.groups: list[int] = []

    def append_many(self, writes: Sequence[Write]) -> list[AppendResult | Exception]:
        self.groups.append(len(writes))
        return super().append_many(writes)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> CountingStore:
    url = request.getfixturevalue(f"{request.param}_url")
    counting = CountingStore(url)
    request.addfinalizer(counting.dispose)
    return counting


async def test_a_burst_of_writes_takes_few_transactions(
    store: CountingStore, tmp_path: Path
) -> None:
    """Forty incidents writing at once: every row lands, each answer is its own, and the writes
    share transactions instead of taking one each."""
    writer = AuditWriter(store, Signer(tmp_path / "key.pem"))
    chains = {incident: chain(incident, 6) for incident in [new_id() for _ in range(40)]}
    answers = await asyncio.gather(
        *(
            ActivityEnvironment().run(writer.write_audit, AuditBatch(events=events, task=4))
            for events in chains.values()
        )
    )
    assert [(6, 6, events[-1].hash) for events in chains.values()] == [
        (a.inserted, a.last_seq, a.head_hash) for a in answers
    ]
    for incident, events in chains.items():
        assert events == store.events(incident)
    assert 40 == sum(store.groups)
    assert len(store.groups) < 40


async def test_a_conflicting_write_fails_alone(store: CountingStore, tmp_path: Path) -> None:
    """A write that disagrees with the record fails its own activity; the group's others land."""
    writer = AuditWriter(store, Signer(tmp_path / "key.pem"))
    held = chain(new_id(), 2)
    store.append(held, task=9)
    rival = make_event(
        incident_id=held[0].incident_id,
        seq=2,
        kind="step.applied",
        at="2026-11-28T10:00:30+00:00",
        prev_hash=held[0].hash,
    )
    others = [chain(new_id(), 3) for _ in range(5)]
    batches = [AuditBatch(events=[held[0], rival], task=3), *(AuditBatch(events=e) for e in others)]
    outcomes = await asyncio.gather(
        *(ActivityEnvironment().run(writer.write_audit, batch) for batch in batches),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], AuditConflict)
    assert [3] * 5 == [o.inserted for o in outcomes[1:]]  # type: ignore[union-attr]
    assert held == store.events(held[0].incident_id)
    assert all(store.events(e[0].incident_id) == e for e in others)
    assert [6] == store.groups  # the conflict was found inside a group, and the group split
