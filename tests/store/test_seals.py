"""Seals make a rewritten chain detectable, offline, with nothing but the public key."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from engine.errors import BundleError
from engine.integrity import check, check_store, read_bundle, write_bundle
from store.audit_store import AuditStore, verify_chain
from store.errors import AuditStoreError
from store.seals import Signer, verify_seals
from tests.store.test_audit_store import chain, new_id
from workflows.audit import AuditEvent, make_event


def closed_chain(incident_id: str, count: int) -> list[AuditEvent]:
    events = chain(incident_id, count - 1)
    closing = make_event(
        incident_id=incident_id,
        seq=count,
        kind="incident.closed",
        at="2026-11-28T11:00:00+00:00",
        prev_hash=events[-1].hash,
    )
    return [*events, closing]


def test_the_signing_key_is_created_once_with_owner_only_permissions(tmp_path: Path) -> None:
    """A missing key is generated (0600); the next signer loads the same key."""
    path = tmp_path / "keys" / "signing-key.pem"
    first = Signer(path)
    assert 0o600 == stat.S_IMODE(os.stat(path).st_mode)
    assert first.key_id == Signer(path).key_id


def test_sealed_chain_verifies_and_a_rewritten_chain_does_not(tmp_path: Path) -> None:
    """Rewriting every row (a valid chain of different content) fails the seal check."""
    signer = Signer(tmp_path / "key.pem")
    incident = new_id()
    events = closed_chain(incident, 5)
    seals = [signer.seal(events[2], reason="checkpoint"), signer.seal(events[-1], reason="closed")]
    assert check(incident, events, seals, signer.public_key).ok

    forged, previous = [], "0" * 64
    for event in events:  # same shape, other content, chain recomputed from the first row
        copy = make_event(
            incident_id=incident,
            seq=event.seq,
            kind=event.kind,
            at=event.at,
            prev_hash=previous,
            actor="mallory",
            step_id=event.step_id,
            data=event.data,
        )
        forged.append(copy)
        previous = copy.hash
    result = check(incident, forged, seals, signer.public_key)
    assert (True, False) == (result.chain.ok, result.seals.ok)
    assert "row 3 is not the row that was sealed" in (result.seals.problem or "")


def test_a_seal_from_another_key_or_an_altered_seal_is_refused(tmp_path: Path) -> None:
    """Seals must be made by the engine's key and be unmodified."""
    engine, impostor = Signer(tmp_path / "a.pem"), Signer(tmp_path / "b.pem")
    incident = new_id()
    events = closed_chain(incident, 3)
    foreign = impostor.seal(events[-1], reason="closed")
    assert "another key" in (
        verify_seals(events, [foreign], engine.public_key, closed=True).problem or ""
    )
    genuine = engine.seal(events[-1], reason="closed")
    tampered = genuine.model_copy(update={"sealed_at": "2020-01-01T00:00:00+00:00"})
    assert "forged" in (
        verify_seals(events, [tampered], engine.public_key, closed=True).problem or ""
    )


def test_a_closed_incident_must_be_sealed_to_its_last_row(tmp_path: Path) -> None:
    """Rows appended after the last seal of a closed incident are reported as unsealed."""
    signer = Signer(tmp_path / "key.pem")
    events = closed_chain(new_id(), 4)
    result = verify_seals(
        events, [signer.seal(events[1], reason="checkpoint")], signer.public_key, closed=True
    )
    assert (False, 2) == (result.ok, result.sealed_through)


def test_seals_are_stored_once_per_head(audit_store: AuditStore, tmp_path: Path) -> None:
    """A retried write seals the same head once; seals come back in order."""
    signer = Signer(tmp_path / "key.pem")
    incident = new_id()
    events = closed_chain(incident, 4)
    audit_store.append(events)
    assert audit_store.add_seal(signer.seal(events[1], reason="checkpoint"))
    assert not audit_store.add_seal(signer.seal(events[1], reason="checkpoint"))
    assert audit_store.add_seal(signer.seal(events[3], reason="closed"))
    assert [2, 4] == [s.seq for s in audit_store.seals(incident)]


def test_a_seal_is_written_with_the_rows_it_covers_or_not_at_all(
    audit_store: AuditStore, tmp_path: Path
) -> None:
    """The writer's one transaction: rows and the seal of their head; a retried write adds
    neither twice; a write the store refuses leaves no seal behind."""
    signer = Signer(tmp_path / "key.pem")
    incident = new_id()
    events = closed_chain(incident, 4)
    seal = signer.seal(events[3], reason="closed")
    assert 4 == audit_store.append(events, task=5, seal=seal).inserted
    assert 0 == audit_store.append(events, task=5, seal=seal).inserted
    assert [4] == [s.seq for s in audit_store.seals(incident)]
    held = audit_store.events(incident), audit_store.seals(incident)
    assert verify_seals(*held, signer.public_key, closed=True).ok

    other = new_id()
    orphan = chain(other, 3)[1:]  # starts at seq 2: nothing to chain to
    with pytest.raises(AuditStoreError):
        audit_store.append(orphan, seal=signer.seal(orphan[-1], reason="checkpoint"))
    assert ([], []) == (audit_store.events(other), audit_store.seals(other))


def test_an_export_bundle_verifies_offline_and_detects_tampering(tmp_path: Path) -> None:
    """A directory or .tar.gz bundle verifies alone; editing a file after export is caught."""
    signer = Signer(tmp_path / "key.pem")
    incident = new_id()
    events = closed_chain(incident, 4)
    seals = [signer.seal(events[-1], reason="closed")]
    for out in (tmp_path / "bundle", tmp_path / "bundle.tar.gz"):
        write_bundle(
            out,
            incident_id=incident,
            events=events,
            seals=seals,
            public_key=signer.public_key,
            history=None,
        )
        bundle = read_bundle(out)
        assert check(bundle.incident_id, bundle.events, bundle.seals, bundle.public_key).ok
    rows = json.loads((tmp_path / "bundle" / "events.json").read_text())
    rows[1]["actor"] = "mallory"
    (tmp_path / "bundle" / "events.json").write_text(json.dumps(rows))
    with pytest.raises(BundleError, match=r"events\.json does not match the manifest"):
        read_bundle(tmp_path / "bundle")


def test_rows_after_the_close_are_named_as_added_not_as_missing(tmp_path: Path) -> None:
    """A row chained onto a closed, sealed trail passes the chain; the seals hold; but nothing
    is recorded after a close, so the check names the rows that follow it."""
    signer = Signer(tmp_path / "key.pem")
    incident = new_id()
    events = closed_chain(incident, 4)
    seals = [signer.seal(events[-1], reason="closed")]
    extra = make_event(
        incident_id=incident,
        seq=5,
        kind="note.added",
        at="2026-11-28T12:00:00+00:00",
        prev_hash=events[-1].hash,
        actor="mallory",
        data={"text": "all fine"},
    )
    result = check(incident, [*events, extra], seals, signer.public_key)
    assert (True, False) == (result.chain.ok, result.seals.ok)
    assert (
        "row 5 follows the incident's close (row 4): nothing is recorded after it"
        == result.seals.problem
    )


@pytest.mark.parametrize(
    ("order", "problem"),
    [
        ([1, 3, 2, 4], "rows out of order: row 3 comes before row 2"),
        ([1, 2, 2, 3, 4], "row 2 appears again where row 3 belongs"),
        ([1, 2, 4], "row 3 is missing (next row is 4)"),
    ],
)
def test_the_chain_says_how_rows_are_out_of_place(order: list[int], problem: str) -> None:
    events = {e.seq: e for e in closed_chain(new_id(), 4)}
    result = verify_chain("INC-X", [events[seq] for seq in order])
    assert (False, problem) == (result.ok, result.problem)


def test_a_row_numbered_zero_is_named_as_such() -> None:
    events = closed_chain(new_id(), 3)
    zero = events[0].model_copy(update={"seq": 0})
    result = verify_chain("INC-X", [zero, *events[1:]])
    assert "a row numbered 0 where row 1 belongs: rows are numbered from 1" == result.problem


def test_a_seal_written_while_the_trail_is_read_covers_no_missing_row(
    audit_store: AuditStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live incident's writer may append rows, sealed in the same transaction, just after
    verify read the rows: the seals are read first, so none read covers a row not read."""
    signer = Signer(tmp_path / "key.pem")
    incident = new_id()
    events = chain(incident, 8)
    audit_store.append(events[:4])
    read = audit_store.events

    def a_write_lands_after_the_read(incident_id: str) -> list[AuditEvent]:
        rows = read(incident_id)
        seal = signer.seal(events[-1], reason="checkpoint")
        audit_store.append(events[4:], seal=seal)  # once: a second time adds nothing
        return rows

    monkeypatch.setattr(audit_store, "events", a_write_lands_after_the_read)
    integrity, rows = check_store(audit_store, incident, signer.public_key)
    assert 4 == len(rows)
    assert integrity.seals.ok, integrity.as_dict()
    assert [8] == [s.seq for s in audit_store.seals(incident)]  # the seal is there all the same


def test_an_unsealed_trail_past_a_checkpoint_says_its_seal_is_missing(tmp_path: Path) -> None:
    """Without seals a short running trail is just not sealed yet; one long enough that the
    engine sealed a checkpoint says that seal is not there."""
    signer = Signer(tmp_path / "key.pem")
    incident = new_id()
    short = check(incident, chain(incident, 5), [], signer.public_key)
    assert short.summary().startswith("ok: no row sealed yet: rows 1..5 are consistent")
    long = check(incident, chain(incident, 20), [], signer.public_key)
    assert long.summary().startswith(
        "ok: no seal in the store, though the engine seals a checkpoint every 16 rows: "
        "rows 1..20 are consistent"
    ), long.summary()


def test_a_checkpoint_seal_deleted_from_the_store_is_said(
    audit_store: AuditStore, tmp_path: Path
) -> None:
    """Written as the engine writes (a seal over each write that reaches a multiple of 16, and
    over the close): nothing to say. The checkpoint's seal deleted: the closing seal still
    covers every row, so it passes, saying which write lost its seal; not where a later attempt
    superseded rows (its seal may have gone with them)."""
    signer = Signer(tmp_path / "key.pem")
    incident = new_id()
    events = closed_chain(incident, 34)
    audit_store.append(events[:10], task=5)
    audit_store.append(events[10:20], task=6, seal=signer.seal(events[19], reason="checkpoint"))
    audit_store.append(events[20:], task=7, seal=signer.seal(events[-1], reason="closed"))
    whole, _ = check_store(audit_store, incident, signer.public_key)
    assert ("ok", "") == (whole.verdict()["seals"], whole.seals_missing)

    with audit_store.engine.begin() as conn:
        conn.exec_driver_sql(
            "DELETE FROM audit_seals WHERE incident_id = %s AND seq = 20"
            if audit_store.engine.dialect.name == "postgresql"
            else "DELETE FROM audit_seals WHERE incident_id = ? AND seq = 20",
            (incident,),
        )
    lost, _ = check_store(audit_store, incident, signer.public_key)
    said = (
        "the store has lost the checkpoint seal of the write of rows 11..20 (the engine seals "
        "each write that reaches a multiple of 16 rows): deleted"
    )
    assert (True, f"ok, but {said}") == (lost.ok, lost.verdict()["seals"])
    assert lost.summary().endswith(f"; but {said}"), lost.summary()

    # A later attempt rewrote rows from 18 on (kept in audit_superseded): no longer said.
    rewritten = [e.model_copy(update={"at": "2026-11-28T11:00:00+00:00"}) for e in events[17:]]
    rechained = chain_from(events[16], rewritten)
    audit_store.append(rechained, task=99, seal=signer.seal(rechained[-1], reason="closed"))
    after, _ = check_store(audit_store, incident, signer.public_key)
    assert ("", True) == (after.seals_missing, after.ok), after.as_dict()


def chain_from(previous: AuditEvent, events: list[AuditEvent]) -> list[AuditEvent]:
    """`events` chained anew after `previous`."""
    out, last = [], previous
    for event in events:
        body = event.body() | {"prev_hash": last.hash}
        last = make_event(
            **{k: v for k, v in body.items() if k != "prev_hash"}, prev_hash=last.hash
        )
        out.append(last)
    return out
