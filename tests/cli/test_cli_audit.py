"""`crisis audit verify|export|report`, `crisis history export` and `crisis replay` as real
subprocesses, against incidents run to closed on the real dev server, sandbox and SQLite store."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
import tarfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session
from temporalio.client import Client

from core.settings import Settings
from engine.devserver import free_port
from engine.incidents import Incidents
from engine.verification import IncidentHistory, replay_incident
from store.audit_store import AuditStore, IncidentRow, projected
from store.seals import Seal, Signer, key_id, public_key_pem
from tests.cli.test_cli import USAGE, Run, assert_one_line_error, crisis, refusals
from tests.cli.test_cli import cli_env as cli_env  # the fixture, re-exported for these tests
from tests.helpers import assert_eventually
from workflows.audit import AuditEvent, chain_hash
from workflows.crisis import CrisisWorkflow
from workflows.incident import NoteRequest

pytestmark = pytest.mark.usefixtures("worker", "sandbox")


@pytest.fixture
def env(cli_env: dict[str, str], settings: Settings) -> dict[str, str]:
    """The CLI's environment with the in-process worker's data directory, so both hold one key."""
    return {**cli_env, "CRISIS_DATA_DIR": str(settings.data_dir)}


@pytest.fixture
def offline(env: dict[str, str]) -> dict[str, str]:
    """The CLI's environment with Temporal at a port nobody listens on."""
    return {**env, "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}"}


async def close_an_incident(
    client: Client, settings: Settings, store: AuditStore, *, notes: int = 0
) -> str:
    """Trigger the shipped playbook, let every step apply, add `notes` (enough to make the trail
    cross a checkpoint seal), stand down; wait for the sealed end."""
    incidents = Incidents(client, settings)
    incident_id = (
        await incidents.trigger("violent-disorder", {"region": "GB"}, actor="auditor-test")
    ).incident_id

    # Followed in the audit store, not by status queries: a query during the first workflow task
    # can leave a history that does not replay to the same audit events (see the report).
    async def applied() -> None:
        kinds = [e.kind for e in store.events(incident_id)]
        assert 5 == kinds.count("step.applied"), kinds

    await assert_eventually(applied, timeout=30)
    for number in range(notes):
        note = NoteRequest(actor="auditor-test", text=f"note {number}")
        await incidents.act(incident_id, CrisisWorkflow.add_note, note)
    closed = await incidents.stand_down(incident_id, actor="auditor-test", reason="test over")
    assert "closed" == closed.state

    async def sealed() -> None:
        events = store.events(incident_id)
        assert "incident.closed" == events[-1].kind, [e.kind for e in events]
        assert events[-1].seq == max((s.seq for s in store.seals(incident_id)), default=0)

    await assert_eventually(sealed)
    return incident_id


@pytest.fixture
async def incident(client: Client, settings: Settings, sqlite_store: AuditStore) -> str:
    return await close_an_incident(client, settings, sqlite_store)


@pytest.fixture
async def checkpointed(client: Client, settings: Settings, sqlite_store: AuditStore) -> str:
    """A closed incident whose trail has a checkpoint seal before the closing one."""
    incident_id = await close_an_incident(client, settings, sqlite_store, notes=8)
    assert "checkpoint" == sqlite_store.seals(incident_id)[0].reason
    return incident_id


def ok(run: Run) -> Run:
    assert 0 == run.code, run
    return run


def failed(run: Run) -> Run:
    assert 1 == run.code, run
    return run


def execute(
    sqlite_url: str, sql: str, *params: Any, many: list[tuple[Any, ...]] | None = None
) -> int:
    """Run one statement (or one per row of `many`) on the audit database; rows changed."""
    path = sqlite_url.removeprefix("sqlite:///")
    with closing(sqlite3.connect(path)) as connection, connection:
        cursor = connection.executemany(sql, many) if many else connection.execute(sql, params)
        return cursor.rowcount


def tamper(sqlite_url: str, incident_id: str, seq: int) -> None:
    changed = execute(
        sqlite_url,
        "UPDATE audit_events SET data = ? WHERE incident_id = ? AND seq = ?",
        '{"forged": true}',
        incident_id,
        seq,
    )
    assert 1 == changed


def lines_starting(text: str, prefix: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith(prefix)]


# --- verify -----------------------------------------------------------------------------------
async def test_verify_a_closed_incident(
    env: dict[str, str], incident: str, sqlite_store: AuditStore, settings: Settings
) -> None:
    """A closed incident verifies: chain, seals and replay ok, in text and in --json; exit 0."""
    events = sqlite_store.events(incident)
    seals = sqlite_store.seals(incident)
    text, as_json, no_replay, no_replay_text = await asyncio.gather(
        crisis(env, "audit", "verify", incident),
        crisis(env, "audit", "verify", incident, "--json"),
        crisis(env, "audit", "verify", incident, "--no-replay", "--json"),
        crisis(env, "audit", "verify", incident, "--no-replay"),
    )

    ok(text)
    signer_key = key_id(Signer(settings.signing_key_path).public_key)
    engine_key = f"the engine's signing key {settings.signing_key_path}"
    assert f"{incident}  key {signer_key} (trusted: {engine_key})" == text.stdout.splitlines()[0]
    assert [f"chain   ok  ({len(events)} events)"] == lines_starting(text.stdout, "chain")
    counted = f"{len(seals)} seal{'' if len(seals) == 1 else 's'}"
    assert [f"seals   ok  ({counted}, through row {len(events)})"] == lines_starting(
        text.stdout, "seals"
    )
    assert 1 == len(lines_starting(text.stdout, "replay  ok  (1 run(s), ")), text.stdout
    assert ["board   ok  (the incidents table's row)"] == lines_starting(text.stdout, "board")
    assert "ok: record complete and unaltered" == text.stdout.splitlines()[-1]

    report = ok(as_json).json()
    assert {
        "incident_id",
        "ok",
        "complete",
        "summary",
        "key_id",
        "trusted_key",
        "bundle_key_id",
        "chain",
        "seals",
        "replay",
        "verdict",
    } == set(report)
    assert (incident, True, True, signer_key, engine_key, None) == (
        report["incident_id"],
        report["ok"],
        report["complete"],
        report["key_id"],
        report["trusted_key"],
        report["bundle_key_id"],
    )
    assert {"chain": "ok", "seals": "ok", "replay": "ok", "board": "ok"} == report["verdict"]
    assert {
        "incident_id": incident,
        "ok": True,
        "events": len(events),
        "first_bad_seq": None,
        "problem": None,
    } == report["chain"]
    assert {"ok": True, "seals": len(seals), "sealed_through": len(events), "problem": None} == (
        report["seals"]
    )
    replay = report["replay"]
    assert (True, True, 1) == (replay["ok"], replay["deterministic"], replay["runs"])
    assert (True, len(events)) == (
        replay["replay_vs_store"]["matches"],
        replay["replay_vs_store"]["events"],
    )

    # Without the replay, the seal over the closing row still shows nothing was cut off.
    unreplayed = ok(no_replay).json()
    assert (True, True, None) == (
        unreplayed["ok"],
        unreplayed["complete"],
        unreplayed["replay"],
    )
    assert {
        "chain": "ok",
        "seals": "ok",
        "replay": "not checked (--no-replay)",
        "board": "ok",
    } == unreplayed["verdict"]
    said = (
        f"ok: record complete and unaltered (sealed at close, row {len(events)}); "
        "replay not checked (--no-replay)"
    )
    assert said == unreplayed["summary"]
    replay_line = lines_starting(ok(no_replay_text).stdout, "replay")
    assert ["replay  not checked (--no-replay)"] == replay_line
    assert said == no_replay_text.stdout.splitlines()[-1]


async def test_an_altered_row_fails_the_chain_and_the_replay(
    env: dict[str, str], incident: str, sqlite_url: str
) -> None:
    """Editing row 3 fails the chain check naming row 3, and the replay names the audit table."""
    tamper(sqlite_url, incident, 3)
    text, as_json, replayed, reported = await asyncio.gather(
        crisis(env, "audit", "verify", incident, "--no-replay"),
        crisis(env, "audit", "verify", incident, "--json"),
        crisis(env, "replay", incident),
        crisis(env, "audit", "report", incident),
    )
    # A report of the altered record is still made, but says so first, and fails.
    assert reported.stdout.splitlines()[4].startswith("> **INTEGRITY FAILED"), reported.stdout
    assert_one_line_error(reported, "the report is of a record that does not verify: chain:")

    assert_one_line_error(text, f"{incident}: chain: row 3 (", "was altered")
    (chain,) = lines_starting(text.stdout, "chain")
    assert chain.startswith("chain   FAILED: row 3 ("), chain
    assert not lines_starting(text.stdout, "ok:"), text.stdout

    report = failed(as_json).json()
    assert (False, 3) == (report["ok"], report["chain"]["first_bad_seq"])
    assert "ok" == report["verdict"]["seals"]  # the row's hash, which the seals cover, is intact
    assert (
        "FAILED: seq 3: the audit table row differs from the replay in data"
        == report["verdict"]["replay"]
    )

    failed(replayed)
    assert (
        f"FAILED: {incident}: seq 3: the audit table row differs from the replay in data"
        == replayed.stdout.rstrip("\n")  # the verdict alone: no line left by the progress
    )


@pytest.mark.parametrize(
    ("column", "value", "shown"),
    [
        (
            "triggered_by",
            "mallory",
            "shows triggered_by 'mallory' where its trail says 'auditor-test'",
        ),
        ("state", "running", "shows state 'running' where its trail says 'closed'"),
        # Rewound: the board shows the incident as it stood at row 4.
        ("last_seq", "4", "ends at row 4, the trail at row "),
    ],
)
async def test_an_edited_incident_row_fails_the_board_check(
    env: dict[str, str], incident: str, sqlite_url: str, column: str, value: str, shown: str
) -> None:
    """The incidents table (what the board and search show) is not chained: verify projects it
    again from the trail and names what differs."""
    original = row_value(sqlite_url, incident, column)
    edit = f"UPDATE incidents SET {column} = ? WHERE incident_id = ?"
    assert 1 == execute(sqlite_url, edit, value, incident)
    try:
        text, as_json = await asyncio.gather(
            crisis(env, "audit", "verify", incident, "--no-replay"),
            crisis(env, "audit", "verify", incident, "--json"),
        )
    finally:  # the store is shared: the board of other tests must not show the edit
        assert 1 == execute(sqlite_url, edit, original, incident)
    said = f"the incidents table's row {shown}"
    assert_one_line_error(text, f"{incident}: board: {said}")
    (line,) = lines_starting(text.stdout, "board")
    assert line.startswith(f"board   FAILED: {said}"), line
    report = failed(as_json).json()
    assert (False, False) == (report["ok"], report["complete"])
    assert report["verdict"]["board"].startswith(f"FAILED: {said}")
    assert {"chain": "ok", "seals": "ok", "replay": "ok"} == {
        k: v for k, v in report["verdict"].items() if k != "board"
    }


async def test_a_board_summary_unlike_todays_or_a_missing_row_is_said_but_passes(
    env: dict[str, str], incident: str, sqlite_url: str
) -> None:
    """The board's summary follows rules that change between versions (an older one wrote
    another), and stores older than the incidents table have no row for older incidents:
    verify says so, and still passes on the chain, seals and replay."""
    original = row_value(sqlite_url, incident, "summary")
    edit = "UPDATE incidents SET summary = ? WHERE incident_id = ?"
    assert 1 == execute(sqlite_url, edit, '{"pending_approvals": {}, "measures": {}}', incident)
    try:
        differs = ok(await crisis(env, "audit", "verify", incident, "--json")).json()
    finally:
        assert 1 == execute(sqlite_url, edit, original, incident)
    assert differs["verdict"]["board"].startswith("ok, but its board summary is not what today")
    assert (True, True) == (differs["ok"], differs["complete"])

    with closing(sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))) as connection:
        connection.row_factory = sqlite3.Row
        (row,) = connection.execute("SELECT * FROM incidents WHERE incident_id = ?", (incident,))
        saved = dict(row)
    assert 1 == execute(sqlite_url, "DELETE FROM incidents WHERE incident_id = ?", incident)
    try:
        text = ok(await crisis(env, "audit", "verify", incident))
    finally:
        names = ", ".join(saved)
        marks = ", ".join("?" for _ in saved)
        insert = f"INSERT INTO incidents ({names}) VALUES ({marks})"
        assert 1 == execute(sqlite_url, insert, *saved.values())
    (line,) = lines_starting(text.stdout, "board")
    assert "ok, but the incidents table has no row for it" in line, line


def row_value(sqlite_url: str, incident_id: str, column: str) -> Any:
    with closing(sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))) as connection:
        query = f"SELECT {column} FROM incidents WHERE incident_id = ?"
        return connection.execute(query, (incident_id,)).fetchone()[0]


def rehash_from(sqlite_url: str, store: AuditStore, incident_id: str, seq: int) -> None:
    """Change row `seq`'s actor and recompute every hash from it on: the chain links again."""
    rewritten, prev = [], None
    for event in store.events(incident_id):
        prev = prev or event.prev_hash
        body = {**event.body(), "prev_hash": prev}
        if event.seq == seq:
            body["actor"] = "mallory"
        prev = chain_hash(prev, body)
        rewritten.append((body["actor"], body["prev_hash"], prev, incident_id, event.seq))
    changed = execute(
        sqlite_url,
        "UPDATE audit_events SET actor = ?, prev_hash = ?, hash = ? "
        "WHERE incident_id = ? AND seq = ?",
        many=rewritten,
    )
    assert len(rewritten) == changed


async def test_a_consistently_rewritten_chain_fails_the_seals(
    env: dict[str, str], incident: str, sqlite_url: str, sqlite_store: AuditStore
) -> None:
    """Recomputing every hash after changing an actor passes the chain but not the seals."""
    rehash_from(sqlite_url, sqlite_store, incident, 1)
    first_seal = min(s.seq for s in sqlite_store.seals(incident))

    text, as_json = await asyncio.gather(
        crisis(env, "audit", "verify", incident, "--no-replay"),
        crisis(env, "audit", "verify", incident, "--json"),
    )
    said = (
        f"a row in 1..{first_seal} was altered and the chain re-hashed from it: "
        f"row {first_seal} is not the row that was sealed"
    )
    assert_one_line_error(text, f"{incident}: seals: {said}")
    assert 1 == len(lines_starting(text.stdout, "chain   ok  (")), text.stdout
    assert [f"seals   FAILED: {said}"] == [
        line.split("  (")[0] for line in lines_starting(text.stdout, "seals")
    ]

    report = failed(as_json).json()
    assert (True, False) == (report["chain"]["ok"], report["seals"]["ok"])
    assert (
        "FAILED: seq 1: the audit table row differs from the replay in actor, hash"
        == (report["verdict"]["replay"])
    )


async def test_a_chain_rewritten_after_a_good_seal_names_where_the_damage_starts(
    env: dict[str, str], checkpointed: str, sqlite_url: str, sqlite_store: AuditStore
) -> None:
    """A row after the checkpoint seal altered and every hash after it recomputed: the error
    says the damage lies after that seal and before the closing one, no more."""
    checkpoint, closing = (s.seq for s in sqlite_store.seals(checkpointed))
    altered = checkpoint + 2
    rehash_from(sqlite_url, sqlite_store, checkpointed, altered)

    text, as_json = await asyncio.gather(
        crisis(env, "audit", "verify", checkpointed, "--no-replay"),
        crisis(env, "audit", "verify", checkpointed, "--json"),
    )
    assert_one_line_error(
        text,
        f"{checkpointed}: seals: a row in {checkpoint + 1}..{closing} was altered and the chain "
        f"re-hashed from it: row {checkpoint} (the last good seal) still matches, "
        f"row {closing} is not the row that was sealed",
    )
    report = failed(as_json).json()
    assert checkpoint == report["seals"]["sealed_through"]
    assert report["verdict"]["replay"].startswith(f"FAILED: seq {altered}: "), report["verdict"]


async def test_a_deleted_last_row_fails_the_seals(
    env: dict[str, str], incident: str, sqlite_url: str, sqlite_store: AuditStore
) -> None:
    """Deleting the closing row leaves a sealed row missing: seals fail although the chain holds."""
    last = sqlite_store.events(incident)[-1].seq
    deleted = execute(
        sqlite_url, "DELETE FROM audit_events WHERE incident_id = ? AND seq = ?", incident, last
    )
    assert 1 == deleted

    report = failed(await crisis(env, "audit", "verify", incident, "--no-replay", "--json")).json()
    assert (True, last - 1) == (report["chain"]["ok"], report["chain"]["events"])
    assert False is report["seals"]["ok"]
    assert report["seals"]["problem"].startswith(f"row {last} "), report["seals"]


async def test_a_deleted_closing_row_and_its_seal_are_caught_by_the_replay(
    env: dict[str, str], incident: str, sqlite_url: str, sqlite_store: AuditStore
) -> None:
    """Removing the closing row with its seal leaves a plausible open trail; the replay sees it."""
    last = sqlite_store.events(incident)[-1].seq
    assert 1 == execute(
        sqlite_url, "DELETE FROM audit_events WHERE incident_id = ? AND seq = ?", incident, last
    )
    assert 1 == execute(
        sqlite_url, "DELETE FROM audit_seals WHERE incident_id = ? AND seq = ?", incident, last
    )

    report = failed(await crisis(env, "audit", "verify", incident, "--json")).json()
    assert (
        f"FAILED: seq {last} (incident.closed) is missing from the audit table"
        == (report["verdict"]["replay"])
    )


async def test_a_board_row_claiming_rows_after_the_sealed_close_is_the_board_failing(
    env: dict[str, str], incident: str, sqlite_url: str, sqlite_store: AuditStore
) -> None:
    """Nothing follows a sealed close: a board row that records more rows was edited, and says
    so, while chain and seals hold."""
    last = sqlite_store.events(incident)[-1].seq
    assert 1 == execute(
        sqlite_url, "UPDATE incidents SET last_seq = ? WHERE incident_id = ?", last + 2, incident
    )
    report = failed(await crisis(env, "audit", "verify", incident, "--no-replay", "--json")).json()
    assert (True, True) == (report["chain"]["ok"], report["seals"]["ok"]), report["seals"]
    assert report["verdict"]["board"] == (
        f"FAILED: the incidents table's row ends at row {last + 2}, the trail at row {last}: "
        "no row follows the trail's close: the row was edited"
    )


async def test_a_running_incidents_board_row_claiming_its_close_is_blamed_once_replayed(
    client: Client,
    settings: Settings,
    env: dict[str, str],
    sqlite_url: str,
    sqlite_store: AuditStore,
) -> None:
    """The row of a running incident edited to say it closed: without the replay the rows after
    the trail's end may be missing, and the seals say so; with it, Temporal's history shows the
    trail whole, so the board row is what failed and the seals hold."""
    incidents = Incidents(client, settings)
    incident_id = (
        await incidents.trigger("violent-disorder", {"region": "GB"}, actor="auditor-test")
    ).incident_id

    async def applied() -> None:  # then it runs until stood down
        kinds = [e.kind for e in sqlite_store.events(incident_id)]
        assert 5 == kinds.count("step.applied"), kinds

    await assert_eventually(applied, timeout=30)
    status = await incidents.status(incident_id)
    assert "running" == status.state
    try:
        last = sqlite_store.events(incident_id)[-1].seq
        closed = (
            "UPDATE incidents SET state = 'closed', closed_at = updated_at WHERE incident_id = ?"
        )
        assert 1 == execute(sqlite_url, closed, incident_id)
        offline, replayed = await asyncio.gather(
            crisis(env, "audit", "verify", incident_id, "--no-replay", "--json"),
            crisis(env, "audit", "verify", incident_id, "--json"),
        )
        cut = failed(offline).json()
        assert cut["verdict"]["seals"].startswith(
            f"FAILED: the trail ends at row {last} but the store's incident row says the "
            "incident is closed"
        ), cut["verdict"]
        blamed = failed(replayed).json()
        assert ("ok", "ok", "ok") == tuple(
            blamed["verdict"][k] for k in ("chain", "seals", "replay")
        )
        assert blamed["verdict"]["board"] == (
            f"FAILED: the trail ends at row {last} but the store's incident row says the incident "
            f"is closed; Temporal's history replays to exactly those {last} rows: the row was "
            "edited"
        )
        assert blamed["summary"].startswith("FAILED: board: "), blamed["summary"]
    finally:
        await incidents.stand_down(incident_id, actor="auditor-test", reason="test over")


async def test_an_altered_trail_leaves_the_board_row_unjudged(
    env: dict[str, str], incident: str, sqlite_url: str
) -> None:
    """The trail's first row edited (its actor): the row that still says who triggered it is
    not called edited; the chain names the row that was."""
    edit = "UPDATE audit_events SET actor = 'mallory' WHERE incident_id = ? AND seq = 1"
    assert 1 == execute(sqlite_url, edit, incident)
    report = failed(await crisis(env, "audit", "verify", incident, "--json")).json()
    assert report["verdict"]["chain"].startswith("FAILED: row 1 ("), report["verdict"]
    assert report["verdict"]["board"] == (
        "not checked: the trail failed its own checks, so the row cannot be held against it"
    )


async def test_a_deleted_trail_is_named_missing_not_an_unknown_incident(
    env: dict[str, str], incident: str, sqlite_url: str
) -> None:
    """Every row of the trail deleted: its seals and board row still name it, so without the
    replay verify fails the seals; with it, the replay names the first row missing. Seals and
    board row deleted too: Temporal still holds the incident, and the replay says the same."""
    assert execute(sqlite_url, "DELETE FROM audit_events WHERE incident_id = ?", incident) > 0
    offline = failed(await crisis(env, "audit", "verify", incident, "--no-replay", "--json")).json()
    assert (True, False) == (offline["chain"]["ok"], offline["seals"]["ok"])
    # Held against no trail at all, the row proves nothing either way: the seals name it.
    assert offline["verdict"]["board"].startswith("not checked: the trail failed"), offline
    missing = "FAILED: seq 1 (incident.triggered) is missing from the audit table"
    assert (
        missing
        == failed(await crisis(env, "audit", "verify", incident, "--json")).json()["verdict"][
            "replay"
        ]
    )

    for table in ("audit_seals", "incidents"):
        assert 0 < execute(sqlite_url, f"DELETE FROM {table} WHERE incident_id = ?", incident)
    assert (
        missing
        == failed(await crisis(env, "audit", "verify", incident, "--json")).json()["verdict"][
            "replay"
        ]
    )
    unknown = await crisis(env, "audit", "verify", incident, "--no-replay")
    assert_one_line_error(unknown, f"no audit trail for incident {incident}")


async def test_a_trail_cut_at_a_checkpoint_seal_is_never_called_complete(
    env: dict[str, str], checkpointed: str, sqlite_url: str, sqlite_store: AuditStore
) -> None:
    """Rows and seals cut after the first checkpoint seal keep chain and seals whole. Without
    the replay, verify fails where the store's incident row says more (closed, or later rows);
    with that row rewritten to agree it passes, saying completeness was not checked."""
    last = sqlite_store.events(checkpointed)[-1].seq
    cut = min(s.seq for s in sqlite_store.seals(checkpointed))
    for table in ("audit_events", "audit_seals"):
        deleted = execute(
            sqlite_url, f"DELETE FROM {table} WHERE incident_id = ? AND seq > ?", checkpointed, cut
        )
        assert 0 < deleted
    closed = await crisis(env, "audit", "verify", checkpointed, "--no-replay")
    assert_one_line_error(
        closed,
        f"{checkpointed}: seals: the trail ends at row {cut} but the store's incident row says "
        f"the incident is closed: the rows after {cut} and the closing seal are missing",
    )
    assert not lines_starting(closed.stdout, "ok:"), closed.stdout

    reopened = "UPDATE incidents SET state = 'running', closed_at = NULL WHERE incident_id = ?"
    assert 1 == execute(sqlite_url, reopened, checkpointed)
    longer = await crisis(env, "audit", "verify", checkpointed, "--no-replay")
    assert_one_line_error(
        longer,
        f"the trail ends at row {cut} but the store's incident row records rows through {last}",
    )

    # The row rewritten to what the cut trail makes of it: nothing left to tell.
    with Session(sqlite_store.engine) as session:
        row = session.get(IncidentRow, checkpointed)
        for name, value in (projected(sqlite_store.events(checkpointed)) or {}).items():
            setattr(row, name, value)
        session.add(row)
        session.commit()
    text, as_json = await asyncio.gather(
        crisis(env, "audit", "verify", checkpointed, "--no-replay"),
        crisis(env, "audit", "verify", checkpointed, "--no-replay", "--json"),
    )
    said = (
        f"ok: chain and seals unaltered through row {cut}; completeness not checked (--no-replay)"
    )
    assert ["replay  not checked (--no-replay)"] == lines_starting(ok(text).stdout, "replay")
    assert said == text.stdout.splitlines()[-1]
    assert "complete" not in said.removeprefix("ok: ").split(";")[0]
    report = ok(as_json).json()
    assert (True, None, said) == (report["ok"], report["complete"], report["summary"])


# --- export bundles ---------------------------------------------------------------------------
async def test_export_bundles_verify_offline(
    env: dict[str, str],
    offline: dict[str, str],
    incident: str,
    sqlite_store: AuditStore,
    tmp_path: Path,
) -> None:
    """Directory and .tar.gz bundles verify with Temporal unreachable, the replay included when
    the bundle holds the history."""
    directory, archive = tmp_path / "bundle", tmp_path / "bundle.tar.gz"
    no_history = tmp_path / "no-history"
    exported = await asyncio.gather(
        crisis(env, "audit", "export", incident, "-o", str(directory)),
        crisis(env, "audit", "export", incident, "-o", str(archive)),
        crisis(env, "audit", "export", incident, "-o", str(no_history), "--no-history"),
    )
    assert [
        f"exported {incident} to {directory}",
        f"exported {incident} to {archive}",
        f"exported {incident} to {no_history}",
    ] == [ok(run).stdout.strip() for run in exported]
    assert {
        "events.json",
        "seals.json",
        "public-key.pem",
        "history.json",
        "manifest.json",
    } == {p.name for p in directory.iterdir()}
    assert not (no_history / "history.json").exists()
    with tarfile.open(archive) as tar:
        assert f"{incident}/manifest.json" in tar.getnames()

    events = len(sqlite_store.events(incident))
    from_dir, from_archive, without_history = await asyncio.gather(
        crisis(offline, "audit", "verify", "--bundle", str(directory), "--json"),
        crisis(offline, "audit", "verify", "--bundle", str(archive), "--json"),
        crisis(offline, "audit", "verify", "--bundle", str(no_history), "--json"),
    )
    for run in (from_dir, from_archive):
        report = ok(run).json()
        assert (incident, True) == (report["incident_id"], report["ok"])
        assert {"key": "ok", "chain": "ok", "seals": "ok", "replay": "ok"} == report["verdict"]
        assert events == report["replay"]["replay_vs_store"]["events"]
    report = ok(without_history).json()
    assert {
        "key": "ok",
        "chain": "ok",
        "seals": "ok",
        "replay": "not checked (the bundle has no history.json)",
    } == report["verdict"]
    assert True is report["complete"]  # its last row is the sealed closing row


async def test_an_edited_bundle_fails(
    env: dict[str, str], offline: dict[str, str], incident: str, tmp_path: Path
) -> None:
    """Editing events.json breaks the manifest (one error line); fixing the manifest too breaks
    the chain; a different trusted key fails the seals."""
    original = tmp_path / "original"
    ok(await crisis(env, "audit", "export", incident, "-o", str(original)))
    refreshed, clean = tmp_path / "refreshed", tmp_path / "clean"
    shutil.copytree(original, refreshed)
    shutil.copytree(original, clean)

    events_file = original / "events.json"
    events = json.loads(events_file.read_text())
    events[1]["actor"] = "mallory"
    events_file.write_text(json.dumps(events, indent=1))
    altered = await crisis(offline, "audit", "verify", "--bundle", str(original))
    assert_one_line_error(altered, "events.json does not match the manifest")
    assert "" == altered.stdout

    # A careful forger also updates the manifest's digest: the chain still shows the edit.
    forged = json.loads((refreshed / "events.json").read_text())
    forged[1]["actor"] = "mallory"
    (refreshed / "events.json").write_text(json.dumps(forged, indent=1))
    manifest = json.loads((refreshed / "manifest.json").read_text())
    manifest["sha256"]["events.json"] = hashlib.sha256(
        (refreshed / "events.json").read_bytes()
    ).hexdigest()
    (refreshed / "manifest.json").write_text(json.dumps(manifest))
    report = failed(
        await crisis(offline, "audit", "verify", "--bundle", str(refreshed), "--json")
    ).json()
    assert (False, 2) == (report["chain"]["ok"], report["chain"]["first_bad_seq"])

    # The manifest's row count is not signed; the export seal and the closing seal are.
    recounted = tmp_path / "recounted"
    shutil.copytree(clean, recounted)
    manifest = json.loads((recounted / "manifest.json").read_text())
    rows = manifest["events"]
    (recounted / "manifest.json").write_text(json.dumps(manifest | {"events": rows + 8}))
    assert_one_line_error(
        await crisis(offline, "audit", "verify", "--bundle", str(recounted)),
        f"seals: the bundle's manifest records {rows + 8} rows, but the engine signed row {rows} "
        "as the last at export: the bundle's manifest was edited",
    )

    other = Signer(tmp_path / "other-key.pem")
    (tmp_path / "other.pub.pem").write_text(public_key_pem(other.public_key))
    wrong_key = failed(
        await crisis(
            offline,
            *["audit", "verify", "--bundle", str(clean), "--no-replay", "--json"],
            *["--public-key", str(tmp_path / "other.pub.pem")],
        )
    ).json()
    assert (other.key_id, True, False) == (
        wrong_key["key_id"],
        wrong_key["chain"]["ok"],
        wrong_key["seals"]["ok"],
    )
    assert "made with another key" in wrong_key["seals"]["problem"], wrong_key["seals"]
    assert f"--public-key {tmp_path / 'other.pub.pem'}" == wrong_key["trusted_key"]
    assert wrong_key["verdict"]["key"].startswith("FAILED: the bundle's public-key.pem is ")


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda m: [], "not an audit bundle"),
        (lambda m: m | {"sha256": None}, "manifest.json is not as an export writes it: sha256:"),
        (
            lambda m: m | {"export_seal": {"seq": 38}},
            "manifest.json is not as an export writes it: export_seal.incident_id:",
        ),
    ],
)
async def test_a_bundle_whose_manifest_is_damaged_is_one_error_line(
    env: dict[str, str],
    offline: dict[str, str],
    incident: str,
    tmp_path: Path,
    damage: Callable[[dict[str, Any]], Any],
    said: str,
) -> None:
    bundle = tmp_path / "bundle"
    ok(await crisis(env, "audit", "export", incident, "-o", str(bundle)))
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps(damage(manifest)))
    run = await crisis(offline, "audit", "verify", "--bundle", str(bundle))
    assert_one_line_error(run, said)


async def test_a_bundle_file_that_is_not_json_is_named(
    env: dict[str, str], offline: dict[str, str], incident: str, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    ok(await crisis(env, "audit", "export", incident, "-o", str(bundle)))
    (bundle / "events.json").write_text("{'not': json}")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["sha256"]["events.json"] = hashlib.sha256(b"{'not': json}").hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    run = await crisis(offline, "audit", "verify", "--bundle", str(bundle))
    assert_one_line_error(run, "events.json is not valid JSON: ")
    archive = tmp_path / "bundle.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bundle, arcname=incident)
    run = await crisis(offline, "audit", "verify", "--bundle", str(archive))
    # Named as the archive given, not the directory it was unpacked in (gone by then).
    assert_one_line_error(run, f"error: {archive} ({incident}/): events.json is not valid JSON")


async def test_a_bundle_relabelled_or_mixed_with_another_export_fails(
    client: Client,
    settings: Settings,
    sqlite_store: AuditStore,
    env: dict[str, str],
    offline: dict[str, str],
    incident: str,
    tmp_path: Path,
) -> None:
    """The manifest is not signed: a bundle whose manifest names another incident than its rows
    and seals fails, as does a history.json the manifest does not list; and no export writes
    over another (its files would be read with the new rows)."""
    other = await close_an_incident(client, settings, sqlite_store)
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    ok(await crisis(env, "audit", "export", incident, "-o", str(mine)))
    ok(await crisis(env, "audit", "export", other, "-o", str(theirs), "--no-history"))

    manifest = read_json(theirs / "manifest.json")
    manifest["incident_id"] = incident
    manifest.pop("export_seal")
    (theirs / "manifest.json").write_text(json.dumps(manifest))
    relabelled = await crisis(offline, "audit", "verify", "--bundle", str(theirs))
    assert_one_line_error(relabelled, f"row 1 is incident {other}'s, not {incident}'s")

    again = await crisis(env, "audit", "export", other, "-o", str(mine), "--no-history")
    assert_one_line_error(again, f"{mine} exists and is not empty")
    mixed = tmp_path / "mixed"
    ok(await crisis(env, "audit", "export", other, "-o", str(mixed), "--no-history"))
    shutil.copy(mine / "history.json", mixed / "history.json")
    stale = await crisis(offline, "audit", "verify", "--bundle", str(mixed))
    assert_one_line_error(stale, "history.json is not listed in the manifest")


def cut_bundle(
    bundle: Path, *, through: int, recount: bool, unsign: bool = False, history: bool = False
) -> None:
    """Cut a bundle's rows and seals after row `through` and drop its history (unless `history`:
    cut already), refreshing the manifest's digests (and its row count, and dropping its export
    seal, when asked): what a careful forger does."""
    events = read_json(bundle / "events.json")
    (bundle / "events.json").write_text(json.dumps(events[:through]))
    seals = [s for s in read_json(bundle / "seals.json") if s["seq"] <= through]
    (bundle / "seals.json").write_text(json.dumps(seals))
    manifest = read_json(bundle / "manifest.json")
    if not history:
        (bundle / "history.json").unlink(missing_ok=True)
        manifest["sha256"].pop("history.json", None)
    for name in manifest["sha256"]:
        manifest["sha256"][name] = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
    if recount:
        manifest["events"], manifest["seals"] = through, len(seals)
    if unsign:
        manifest.pop("export_seal")
    (bundle / "manifest.json").write_text(json.dumps(manifest))


async def test_a_bundle_cut_at_a_checkpoint_seal_is_never_called_complete(
    env: dict[str, str],
    offline: dict[str, str],
    checkpointed: str,
    sqlite_store: AuditStore,
    tmp_path: Path,
) -> None:
    """A bundle cut after its first checkpoint seal, with no history left to replay: the
    engine's signature over the head at export names the rows missing, and so does a manifest
    whose row count was left; a bundle with neither (as written before export seals) passes
    but says completeness was not checked."""
    last = sqlite_store.events(checkpointed)[-1].seq
    cut = min(s.seq for s in sqlite_store.seals(checkpointed))
    exported = tmp_path / "exported"
    ok(await crisis(env, "audit", "export", checkpointed, "-o", str(exported)))
    assert "export" == read_json(exported / "manifest.json")["export_seal"]["reason"]
    signed, counted, unsigned = (tmp_path / n for n in ("signed", "counted", "unsigned"))
    for bundle in (signed, counted, unsigned):
        shutil.copytree(exported, bundle)
    cut_bundle(signed, through=cut, recount=True)
    cut_bundle(counted, through=cut, recount=False, unsign=True)
    cut_bundle(unsigned, through=cut, recount=True, unsign=True)

    by_signature, by_count, text, as_json = await asyncio.gather(
        *(crisis(offline, "audit", "verify", "--bundle", str(b)) for b in (signed, counted)),
        crisis(offline, "audit", "verify", "--bundle", str(unsigned)),
        crisis(offline, "audit", "verify", "--bundle", str(unsigned), "--json"),
    )
    assert_one_line_error(
        by_signature,
        f"seals: the trail ends at row {cut} but the engine signed row {last} as the last at "
        f"export: the rows after {cut} are missing",
    )
    assert_one_line_error(
        by_count,
        f"seals: the trail ends at row {cut} but the bundle's manifest records rows through "
        f"{last}: the rows after {cut} are missing",
    )
    said = (
        f"ok: chain and seals unaltered through row {cut}; "
        "completeness not checked (the bundle has no history.json)"
    )
    assert ["replay  not checked (the bundle has no history.json)"] == lines_starting(
        ok(text).stdout, "replay"
    )
    assert said == text.stdout.splitlines()[-1]
    report = ok(as_json).json()
    assert (True, None, said) == (report["ok"], report["complete"], report["summary"])


async def test_a_bundle_cut_with_its_history_is_never_called_complete(
    env: dict[str, str], offline: dict[str, str], checkpointed: str, tmp_path: Path
) -> None:
    """A forger cuts the end (the stand-down, the close) from the rows and from the history
    alike, drops the seals after the cut and the export seal: the cut history replays to the rows
    left, but it is no more signed than the manifest, so nothing shows the record complete."""
    bundle = tmp_path / "bundle"
    ok(await crisis(env, "audit", "export", checkpointed, "-o", str(bundle)))
    history = read_json(bundle / "history.json")
    recorded = history["runs"][0]["events"]
    stand_down = max(
        at for at, e in enumerate(recorded) if e["eventType"].endswith("UPDATE_ACCEPTED")
    )
    task_done = max(
        at
        for at, e in enumerate(recorded[:stand_down])
        if e["eventType"] == "EVENT_TYPE_WORKFLOW_TASK_COMPLETED"
    )
    history["runs"][0]["events"] = recorded[: task_done + 1]
    (bundle / "history.json").write_text(json.dumps(history))
    events = [AuditEvent.model_validate(e) for e in read_json(bundle / "events.json")]
    cut = IncidentHistory.from_file(bundle / "history.json")
    # The rows the cut history replays to: the forger keeps exactly those.
    kept = max([k for k in range(1, len(events)) if (await replay_incident(cut, events[:k])).ok])
    assert "incident.closed" not in [e.kind for e in events[:kept]]
    assert any(s["seq"] <= kept for s in read_json(bundle / "seals.json"))
    cut_bundle(bundle, through=kept, recount=True, unsign=True, history=True)

    text, as_json = await asyncio.gather(
        crisis(offline, "audit", "verify", "--bundle", str(bundle)),
        crisis(offline, "audit", "verify", "--bundle", str(bundle), "--json"),
    )
    assert ["replay  ok"] == [line[:10] for line in lines_starting(ok(text).stdout, "replay")]
    said = text.stdout.splitlines()[-1]
    assert said.endswith(
        "completeness not shown (the bundle's history agrees with its rows but is not signed, "
        "and no seal covers its last row)"
    ), said
    report = ok(as_json).json()
    assert (True, None, said) == (report["ok"], report["complete"], report["summary"])


async def test_a_re_signed_bundle_is_not_trusted_for_its_own_key(
    env: dict[str, str],
    offline: dict[str, str],
    incident: str,
    settings: Settings,
    tmp_path: Path,
) -> None:
    """A forger who re-signs the seals and ships their key in the bundle fails against the
    engine's key; with no engine key on this machine, verify asks for --public-key instead of
    trusting the bundle."""
    bundle = tmp_path / "bundle"
    ok(await crisis(env, "audit", "export", incident, "-o", str(bundle), "--no-history"))
    forger = Signer(tmp_path / "forger-key.pem")
    events = {e["seq"]: AuditEvent.model_validate(e) for e in read_json(bundle / "events.json")}
    seals = [Seal.model_validate(s) for s in read_json(bundle / "seals.json")]
    (bundle / "seals.json").write_text(
        json.dumps([forger.seal(events[s.seq], reason=s.reason).model_dump() for s in seals])
    )
    (bundle / "public-key.pem").write_text(public_key_pem(forger.public_key))
    manifest = read_json(bundle / "manifest.json")
    last = events[max(events)]
    manifest["export_seal"] = forger.seal(last, reason="export").model_dump()
    for name in ("seals.json", "public-key.pem"):
        manifest["sha256"][name] = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))

    engine_key = key_id(Signer(settings.signing_key_path).public_key)
    text, as_json = await asyncio.gather(
        crisis(offline, "audit", "verify", "--bundle", str(bundle)),
        crisis(offline, "audit", "verify", "--bundle", str(bundle), "--json"),
    )
    assert_one_line_error(
        text,
        f"key: the bundle's public-key.pem is {forger.key_id}, not the trusted key {engine_key}",
    )
    assert "ok: record complete" not in text.stdout
    report = failed(as_json).json()
    assert (False, engine_key, forger.key_id) == (
        report["ok"],
        report["key_id"],
        report["bundle_key_id"],
    )
    assert f"the engine's signing key {settings.signing_key_path}" == report["trusted_key"]

    keyless = {**offline, "CRISIS_DATA_DIR": str(tmp_path / "no-key-here")}
    refused = await crisis(keyless, "audit", "verify", "--bundle", str(bundle))
    assert_one_line_error(refused, "no engine signing key on this machine", "--public-key")
    assert not (tmp_path / "no-key-here" / "signing-key.pem").exists()
    (tmp_path / "forger.pub.pem").write_text(public_key_pem(forger.public_key))
    trusting_the_forger = await crisis(
        keyless,
        "audit",
        "verify",
        "--bundle",
        str(bundle),
        "--public-key",
        str(tmp_path / "forger.pub.pem"),
    )
    assert (
        ok(trusting_the_forger)
        .stdout.splitlines()[-1]
        .startswith("ok: record complete and unaltered")
    )


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


# --- histories and replay ---------------------------------------------------------------------
async def test_history_export_and_replay(
    env: dict[str, str],
    incident: str,
    client: Client,
    settings: Settings,
    sqlite_store: AuditStore,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    """Exported histories replay to the audit table, one file or a directory of them; a replay
    of an incident whose row was altered fails naming the audit table."""
    second = await close_an_incident(client, settings, sqlite_store)
    histories = tmp_path / "histories"  # made by the export
    first_file, second_file = histories / "first.json", histories / "second.json"
    exported = await asyncio.gather(
        crisis(env, "history", "export", incident, "-o", str(first_file)),
        crisis(env, "history", "export", second, "-o", str(second_file)),
    )
    for run, path in zip(exported, (first_file, second_file), strict=True):
        assert ok(run).stdout.startswith("exported 1 run(s), "), run
        assert ok(run).stdout.strip().endswith(f" events to {path}"), run
    assert incident == json.loads(first_file.read_text())["incident_id"]

    counts = {i: len(sqlite_store.events(i)) for i in (incident, second)}
    one_file, by_id, directory = await asyncio.gather(
        crisis(env, "replay", "--history", str(first_file)),
        crisis(env, "replay", incident),
        crisis(env, "replay", "--history", str(histories)),
    )
    expected = f"ok: {incident}: deterministic, {counts[incident]} events match"
    assert expected == ok(one_file).stdout.strip()
    assert expected == ok(by_id).stdout.strip()
    assert [
        expected,
        f"ok: {second}: deterministic, {counts[second]} events match",
        "2 of 2 histories ok",
    ] == ok(directory).stdout.strip().splitlines()

    tamper(sqlite_url, second, 3)
    after = failed(await crisis(env, "replay", "--history", str(histories), "--json")).json()
    assert False is after["ok"]
    assert [(incident, True), (second, False)] == [
        (r["incident_id"], r["ok"]) for r in after["incidents"]
    ]
    assert (
        "the audit table row differs"
        in after["incidents"][1]["replay_vs_store"]["first_difference"]
    )


async def test_replay_of_an_export_bundle(
    env: dict[str, str],
    offline: dict[str, str],
    incident: str,
    sqlite_store: AuditStore,
    tmp_path: Path,
) -> None:
    """`replay --history` given a bundle (directory or .tar.gz) replays its history.json against
    its events.json, with no store or Temporal at hand; a bundle without history is one line."""
    directory, archive = tmp_path / "bundle", tmp_path / "bundle.tar.gz"
    no_history = tmp_path / "no-history"
    await asyncio.gather(
        crisis(env, "audit", "export", incident, "-o", str(directory)),
        crisis(env, "audit", "export", incident, "-o", str(archive)),
        crisis(env, "audit", "export", incident, "-o", str(no_history), "--no-history"),
    )
    nowhere = {**offline, "CRISIS_DATA_DIR": str(tmp_path / "no-store-here")}
    from_dir, from_archive, without = await asyncio.gather(
        crisis(nowhere, "replay", "--history", str(directory)),
        crisis(nowhere, "replay", "--history", str(archive)),
        crisis(nowhere, "replay", "--history", str(no_history)),
    )
    expected = f"ok: {incident}: deterministic, {len(sqlite_store.events(incident))} events match"
    assert expected == ok(from_dir).stdout.strip()
    assert expected == ok(from_archive).stdout.strip()
    assert_one_line_error(without, f"{no_history}: the bundle has no history.json")

    events = read_json(directory / "events.json")
    events[2]["data"] = {"forged": True}
    (directory / "events.json").write_text(json.dumps(events))
    manifest = read_json(directory / "manifest.json")
    digest = hashlib.sha256((directory / "events.json").read_bytes()).hexdigest()
    manifest["sha256"]["events.json"] = digest
    (directory / "manifest.json").write_text(json.dumps(manifest))
    edited = failed(await crisis(nowhere, "replay", "--history", str(directory)))
    assert (
        f"FAILED: {incident}: seq 3: the bundle's events.json row differs from the replay in data"
    ) == edited.stdout.strip()


# --- reports ----------------------------------------------------------------------------------
async def test_report_in_every_format(env: dict[str, str], incident: str, tmp_path: Path) -> None:
    """Markdown is written with its SVG chart beside it (into a directory made for it, as
    bundles are); on stdout it links no chart; HTML embeds the chart; JSON has figures. Without
    --format the format follows -o's suffix (report.html is HTML), else Markdown."""
    markdown, page = tmp_path / "new" / "out" / "report.md", tmp_path / "report.html"
    by_suffix = tmp_path / "by-suffix.json"
    md, html, as_json, on_stdout, suffixed = await asyncio.gather(
        crisis(env, "audit", "report", incident, "--format", "md", "-o", str(markdown)),
        crisis(env, "audit", "report", incident, "-o", str(page)),  # HTML from the suffix
        crisis(env, "audit", "report", incident, "-f", "json"),
        crisis(env, "audit", "report", incident),
        crisis(env, "audit", "report", incident, "-o", str(by_suffix)),
    )
    assert f"wrote {by_suffix}" == ok(suffixed).stdout.strip()
    written = json.loads(by_suffix.read_text())  # the same report, built a moment apart
    assert written["facts"] == ok(as_json).json()["facts"]

    chart = markdown.parent / f"report-{incident}.svg"
    assert f"wrote {markdown} and {chart}" == ok(md).stdout.strip()
    assert f"report-{incident}.svg" in markdown.read_text()
    assert incident in markdown.read_text()
    assert "<svg" in chart.read_text()
    assert f"# Post-incident report: {incident}" in ok(on_stdout).stdout
    assert ".svg" not in on_stdout.stdout

    assert f"wrote {page}" == ok(html).stdout.strip()
    assert "<svg" in page.read_text()
    assert not (tmp_path / f"report-{incident}.svg").exists()

    report = ok(as_json).json()
    assert (incident, "violent-disorder", "closed") == (
        report["facts"]["incident_id"],
        report["facts"]["playbook"],
        report["facts"]["state"],
    )
    figures = report["key_figures"]
    assert (0, False) == (figures["step_failures"], figures["incident_failed"])
    assert figures["to_first_lever"] is not None and figures["to_stand_down"] is not None
    assert {"chain": "ok", "seals": "ok", "replay": "ok", "board": "ok"} == report["integrity"]


# --- errors -----------------------------------------------------------------------------------
async def test_errors_are_one_line(env: dict[str, str], tmp_path: Path) -> None:
    """Unknown incidents, missing bundles, bad keys and bad history files: one `error:` line."""
    none = "INC-NO-SUCH-INCIDENT"
    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json")
    binary = tmp_path / "binary.json"
    binary.write_bytes(bytes(range(128, 256)))
    # The SDK's replayer waited forever on a history that does not start as a workflow does.
    not_started = tmp_path / "not-started.json"
    scheduled = {"eventId": "1", "eventType": "EVENT_TYPE_WORKFLOW_TASK_SCHEDULED"}
    not_started.write_text(json.dumps({"events": [scheduled]}))
    no_runs = tmp_path / "no-runs.json"
    no_runs.write_text(json.dumps({"format": "crisis-history/1", "incident_id": none}))
    not_a_store = tmp_path / "not-a-store.db"
    not_a_store.write_text("not a database")
    cases = {
        "verify": (["audit", "verify", none], [f"no audit trail for incident {none}"]),
        "export": (
            ["audit", "export", none, "-o", str(tmp_path / "x")],
            [f"no audit trail for incident {none}"],
        ),
        "report": (["audit", "report", none], [f"no audit trail for incident {none}"]),
        "missing bundle": (
            ["audit", "verify", "--bundle", str(tmp_path / "nope")],
            ["no such bundle"],
        ),
        "a file that is no bundle": (
            ["audit", "verify", "--bundle", str(not_a_store)],
            [f"{not_a_store}: not an audit bundle (a bundle is a directory or a .tar.gz)"],
        ),
        "bad public key": (
            ["audit", "verify", "--bundle", str(tmp_path), "--public-key", str(garbage)],
            [f"--public-key {garbage}", "not a PEM public key"],
        ),
        "unreadable history": (["replay", "--history", str(garbage)], ["not a readable history"]),
        "binary history": (["replay", "--history", str(binary)], ["not a readable history"]),
        "history not started": (
            ["replay", "--history", str(not_started)],
            ["not a Temporal workflow history: its first event is not the workflow's start"],
        ),
        "export without runs": (
            ["replay", "--history", str(no_runs)],
            ["a history export names its incident and holds its runs"],
        ),
        "replay of nothing": (["replay"], [USAGE, "give an incident id or --history"]),
        "replay of both": (
            ["replay", none, "--history", str(garbage)],
            [USAGE, "give an incident id or --history FILE|DIR, not both"],
        ),
    }
    await refusals(env, cases)
    elsewhere = {**env, "CRISIS_DATABASE_URL": f"sqlite:///{not_a_store}"}
    no_store = {
        "store that is no database": (
            ["audit", "verify", none],
            [f"cannot open the audit store sqlite:///{not_a_store}: file is not a database"],
        ),
        "board from no database": (["incidents"], ["cannot open the audit store"]),
        # Before the server starts: a failed app start printed its traceback.
        "api on no database": (["api", "--port", "1"], ["cannot open the audit store"]),
    }
    await refusals(elsewhere, no_store)
    no_file = {**env, "CRISIS_DATABASE_URL": f"sqlite:///{tmp_path / 'none.db'}"}
    named = [f"no audit store at sqlite:///{tmp_path / 'none.db'} (CRISIS_DATABASE_URL names no"]
    await refusals(no_file, {"store URL naming no file": (["audit", "verify", none], named)})


async def test_output_paths_that_cannot_be_written_are_one_error_line(
    env: dict[str, str], incident: str, tmp_path: Path
) -> None:
    """Reports, histories and bundles under a file, onto a directory or onto a file, and a
    bundle that is no archive, or named as another kind of archive: one `error:` line naming
    the path, exit 1."""
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_text("not an archive")
    cases = {
        "report under a file": (
            ["audit", "report", incident, "-o", str(a_file / "report.md")],
            [f"cannot write {a_file / 'report.md'}: Not a directory"],
        ),
        "report onto a directory": (
            ["audit", "report", incident, "-o", str(tmp_path)],
            [f"cannot write {tmp_path}: Is a directory"],
        ),
        "history onto a directory": (
            ["history", "export", incident, "-o", str(tmp_path)],
            [f"cannot write {tmp_path}: Is a directory"],
        ),
        "bundle onto a file": (
            ["audit", "export", incident, "-o", str(a_file)],
            [f"cannot write {a_file}: it is a file"],
        ),
        "bundle as another archive": (
            ["audit", "export", incident, "-o", str(tmp_path / "bundle.zip")],
            [f"cannot write {tmp_path / 'bundle.zip'}: a bundle is a directory or FILE.tar.gz"],
        ),
        "garbage bundle": (
            ["audit", "verify", "--bundle", str(garbage)],
            [f"{garbage}: not a readable .tar.gz bundle"],
        ),
    }
    await refusals(env, cases)
    assert "keep me" == a_file.read_text()
    assert not (tmp_path / "bundle.zip").exists()


async def test_unknown_incident_history_is_one_error_line(env: dict[str, str]) -> None:
    """History export and replay of an incident Temporal never saw: one `error:` line, exit 1."""
    none = "INC-NO-SUCH-INCIDENT"
    exported, replayed = await asyncio.gather(
        crisis(env, "history", "export", none), crisis(env, "replay", none)
    )
    for run in (exported, replayed):
        assert "" == run.stdout, run
        assert_one_line_error(run, f"no incident {none}")


async def test_readers_never_create_a_signing_key(
    offline: dict[str, str], incident: str, tmp_path: Path
) -> None:
    """Verify, export and report with the engine's key missing: one error line each and no key
    made (a stray key would fail every seal, and the engine would then sign with it)."""
    missing = tmp_path / "elsewhere" / "signing-key.pem"
    keyless = {**offline, "CRISIS_SIGNING_KEY": str(missing)}
    said = f"no engine signing key at {missing}: set CRISIS_SIGNING_KEY"
    cases = {
        "verify": (["audit", "verify", incident, "--no-replay"], [said, "--public-key"]),
        "export": (["audit", "export", incident, "-o", str(tmp_path / "b")], [said]),
        "report": (["audit", "report", incident], [said]),
    }
    await refusals(keyless, cases)
    assert not missing.exists()
