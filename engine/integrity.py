"""An incident's integrity, checked from the live store or from an export bundle offline: the
hash chain, the seals, and (when a history is at hand) the replay.

Chain and seals show rows altered; they cannot show rows cut off after a checkpoint seal. That
takes the replay, a seal over the closing row, the engine's signature over the head at export,
or a record of where the trail ends that the cut did not touch (the store's incident row, a
bundle's manifest)."""

from __future__ import annotations

import base64
import hashlib
import json
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, TypeAdapter, ValidationError
from temporalio.client import Client

from activities.audit import SEAL_EVERY
from core.validation import first_problem
from engine.errors import BundleError, HistoryError, IncidentError, IncidentNotFound
from engine.verification import (
    UNREPLAYED,
    IncidentHistory,
    ReplayReport,
    export_history,
    replay_incident,
)
from store.audit_store import (
    AuditStore,
    Verification,
    projection_problem,
    summary_differs,
    verify_chain,
)
from store.errors import SealError
from store.seals import (
    Seal,
    SealVerification,
    Signer,
    key_id,
    load_public_key,
    public_key_pem,
    verify_seals,
)
from workflows.audit import AuditEvent

BUNDLE_FORMAT = "crisis-audit-bundle/1"
FILES = ("events.json", "seals.json", "public-key.pem")


EXPORT_SEAL_REASON = "export"  # what a bundle's export seal signs: the head when it was written


@dataclass(frozen=True)
class KnownEnd:
    """Where a record beside the trail says it ends: the store's incident row (updated with each
    write), a bundle's manifest (not signed: a mismatch shows a careless cut, agreement proves
    nothing)."""

    source: str
    last_seq: int | None = None
    closed: bool = False
    exact: bool = False  # the trail must end at last_seq (else: at least there)


@dataclass
class Integrity:
    incident_id: str
    chain: Verification
    seals: SealVerification
    replay: ReplayReport | None = None
    key_id: str = ""  # of the trusted key the seals were checked with
    trusted_key: str = ""  # where that key came from, for the auditor
    bundle_key_id: str | None = None  # of the key a bundle carries; None for the live store
    replay_skipped: str = "not asked for"  # why the replay did not run, said when it did not
    # What showed the trail whole without the replay (a seal over its closing row, the engine's
    # signature over the head at export); empty: nothing did.
    complete_by: str = ""
    # The store's incident row (what the board and search show) against its trail, as the
    # verdict says it: "ok", "ok, but ..." or "FAILED: ..."; None: not checked (a bundle has none).
    board: str | None = None
    # The seals' verdict before a record beside the trail (the store's row) said rows are
    # missing: a replay that shows the trail whole puts it back, and blames that record.
    seals_uncut: SealVerification | None = None
    # Seals the engine wrote that the store no longer holds, where those left still hold (the
    # seal over the close covers every row): said, not failed ("ok, but ...").
    seals_missing: str = ""

    @property
    def key_ok(self) -> bool:
        return self.bundle_key_id is None or self.bundle_key_id == self.key_id

    @property
    def ok(self) -> bool:
        return (
            self.key_ok
            and self.chain.ok
            and self.seals.ok
            and (self.replay is None or self.replay.ok)
            and not (self.board or "").startswith("FAILED")
        )

    @property
    def complete(self) -> bool | None:
        """True: every check passed and something showed no row is missing; None: they passed
        but nothing could show that (no replay, a trail that does not end in a closing seal)."""
        if not self.ok:
            return False
        return True if self.replay_shows_complete or self.complete_by else None

    @property
    def replay_shows_complete(self) -> bool:
        """A replay of Temporal's own history shows every row there; a bundle's history is as
        unsigned as its manifest: cut together with the rows, it replays to the rows left."""
        return (
            self.replay is not None
            and self.bundle_key_id is None
            and not self.replay.unreplayed_rows
        )

    def _unreplayed(self) -> str:
        """The rows a workflow task still under way wrote, which no replay checks yet."""
        if self.replay is None or not self.replay.unreplayed_rows:
            return ""
        last = self.replay.rows or self.chain.events
        first = last - self.replay.unreplayed_rows + 1
        rows = f"row {last}" if first == last else f"rows {first}..{last}"
        return f"{rows} {UNREPLAYED}: verify again then"

    def verdict(self) -> dict[str, str]:
        """One word per check, for reports: ok / FAILED: reason / not checked (why)."""
        replay = f"not checked ({self.replay_skipped})"
        if self.replay is not None:
            reason = self.replay.divergence or self.replay.replay_vs_store.first_difference
            replay = "ok" if self.replay.ok else f"FAILED: {reason}"
            if self.replay.ok and (later := self._unreplayed()):
                replay = f"ok, but {later}"
        key: dict[str, str] = {}
        if self.bundle_key_id is not None:  # first: a foreign key explains every later failure
            key["key"] = (
                "ok"
                if self.key_ok
                else f"FAILED: the bundle's public-key.pem is {self.bundle_key_id}, "
                f"not the trusted key {self.key_id}"
            )
        board = {} if self.board is None else {"board": self.board}
        return {
            **key,
            "chain": "ok" if self.chain.ok else f"FAILED: {self.chain.problem}",
            "seals": (
                (f"ok, but {self.seals_missing}" if self.seals_missing else "ok")
                if self.seals.ok
                else f"FAILED: {self.seals.problem}"
            ),
            "replay": replay,
            **board,
        }

    def failure(self) -> str:
        """The first failed check and why, as `check: reason`."""
        return next(
            (
                f"{check}: {said.removeprefix('FAILED: ')}"
                for check, said in self.verdict().items()
                if said.startswith("FAILED")
            ),
            "failed",
        )

    def summary(self) -> str:
        """One line: what was shown. "Complete" only when the replay, the closing seal or the
        export seal showed it."""
        shown = self._shown()
        if self.ok and self.seals_missing:
            return f"{shown}; but {self.seals_missing}"
        return shown

    def _shown(self) -> str:
        if not self.ok:
            return f"FAILED: {self.failure()}"
        if self.replay is not None and self.complete:
            return "ok: record complete and unaltered"
        if self.complete_by:
            return (
                f"ok: record complete and unaltered ({self.complete_by}); "
                f"replay not checked ({self.replay_skipped})"
            )
        rows, sealed = self.chain.events, self.seals.sealed_through
        # Unsealed rows only agree with one another: a chain rewritten after the last seal
        # would too, so only the replay could show them unaltered.
        unsealed = (
            "unaltered only as far as the replay shows"
            if self.replay is not None
            else "but only a replay can show them unaltered"
        )
        if sealed == rows:
            shown = f"chain and seals unaltered through row {rows}"
        elif sealed:
            shown = (
                f"chain and seals unaltered through row {sealed}; rows {sealed + 1}..{rows} "
                f"are not sealed yet: consistent, {unsealed}"
            )
        elif rows >= SEAL_EVERY:  # a checkpoint was due: its seal is gone, or was superseded
            shown = (
                f"no seal in the store, though the engine seals a checkpoint every {SEAL_EVERY} "
                f"rows: rows 1..{rows} are consistent, {unsealed}"
            )
        else:
            shown = f"no row sealed yet: rows 1..{rows} are consistent, {unsealed}"
        if later := self._unreplayed():
            return f"ok: {shown}; {later}"
        if self.replay is not None:  # a bundle's own history, with no seal over its last row
            return (
                f"ok: {shown}; completeness not shown (the bundle's history agrees with its rows "
                "but is not signed, and no seal covers its last row)"
            )
        return f"ok: {shown}; completeness not checked ({self.replay_skipped})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "ok": self.ok,
            "complete": self.complete,
            "summary": self.summary(),
            "key_id": self.key_id,
            "trusted_key": self.trusted_key,
            "bundle_key_id": self.bundle_key_id,
            "chain": self.chain.as_dict(),
            "seals": self.seals.as_dict(),
            "replay": self.replay.as_dict() if self.replay else None,
            "verdict": self.verdict(),
        }


def check(
    incident_id: str,
    events: list[AuditEvent],
    seals: list[Seal],
    public_key: Ed25519PublicKey,
    *,
    known_ends: list[KnownEnd] | None = None,
    export_seal: Seal | None = None,
) -> Integrity:
    """Chain and seals; a trail that ends short of what `known_ends` or the export seal say
    fails the seals (its closing seal, or the signed head, is what went missing)."""
    last = events[-1].seq if events else 0
    ends_closed = bool(events) and events[-1].kind == "incident.closed"
    sealed = verify_seals(events, seals, public_key, closed=ends_closed)
    complete_by = ""
    uncut = None
    if sealed.ok:
        problem = _after_close(events)
        # What signed proof says the trail ends where it does: the seal over its close, or the
        # engine's signature over the head at export.
        proven = f"the trail is sealed closed at row {last}" if ends_closed else None
        if problem is None and export_seal is not None:
            problem = _export_seal_problem(incident_id, events, export_seal, public_key)
            proven = f"the engine signed row {export_seal.seq} as the last at export"
            complete_by = f"{proven}, {export_seal.sealed_at}"
        if problem is None:
            problem = _cut_short(last, ends_closed, known_ends or [], proven=proven)
            uncut = sealed if problem is not None else None
        if problem is not None:
            sealed = SealVerification(False, sealed.seals, sealed.sealed_through, problem)
        elif ends_closed:  # the closing row is sealed (verify_seals): nothing can follow it
            complete_by = f"sealed at close, row {last}"
    elif (rewritten := _rewritten(events, seals, public_key, sealed.sealed_through)) is not None:
        sealed = SealVerification(False, sealed.seals, sealed.sealed_through, rewritten)
    return Integrity(
        incident_id=incident_id,
        chain=verify_chain(incident_id, events),
        seals=sealed,
        key_id=key_id(public_key),
        complete_by=complete_by if sealed.ok else "",
        seals_uncut=uncut,
    )


def _rewritten(
    events: list[AuditEvent], seals: list[Seal], public_key: Ed25519PublicKey, through: int
) -> str | None:
    """Where a chain altered and re-hashed from some row on was changed, as far as the seals
    tell: after the last seal that still holds, up to the first genuine seal that no longer
    does (which row in between, only the replay can say)."""
    later = sorted((s for s in seals if s.seq > through), key=lambda s: s.seq)
    by_seq = {event.seq: event for event in events}
    if not later or (row := by_seq.get(later[0].seq)) is None:
        return None
    seal = later[0]
    try:
        public_key.verify(base64.b64decode(seal.signature), seal.message())
    except (InvalidSignature, ValueError):
        return None
    if row.hash == seal.head_hash:
        return None
    kept = f"row {through} (the last good seal) still matches, " if through else ""
    return (
        f"a row in {through + 1}..{seal.seq} was altered and the chain re-hashed from it: "
        f"{kept}row {seal.seq} is not the row that was sealed"
    )


def _after_close(events: list[AuditEvent]) -> str | None:
    """Nothing is recorded after an incident closes: rows that follow its close were added."""
    closing = next((e.seq for e in events if e.kind == "incident.closed"), None)
    last = events[-1].seq if events else 0
    if closing is None or closing >= last:
        return None
    added = f"row {last} follows" if last == closing + 1 else f"rows {closing + 1}..{last} follow"
    return f"{added} the incident's close (row {closing}): nothing is recorded after it"


def _cut_short(
    last: int, ends_closed: bool, known_ends: list[KnownEnd], *, proven: str | None = None
) -> str | None:
    """A record beside the trail that says it goes on: rows are missing. Where signed proof says
    it ends where it does (`proven`), an exact record that disagrees was edited (the store's row
    is the board's verdict to name)."""
    for known in known_ends:
        if proven is not None and known.exact and known.last_seq not in (None, last):
            return (
                f"{known.source} records {known.last_seq} rows, but {proven}: {known.source} "
                "was edited"
            )
        if known.closed and not ends_closed:
            return (
                f"the trail ends at row {last} but {known.source} says the incident is closed: "
                f"the rows after {last} and the closing seal are missing"
            )
        if known.last_seq is None or known.last_seq == last:
            continue
        if known.last_seq > last:
            if ends_closed:
                continue  # nothing follows a sealed close: that record is wrong, not the trail
            return (
                f"the trail ends at row {last} but {known.source} records rows through "
                f"{known.last_seq}: the rows after {last} are missing"
            )
        if known.exact:
            return f"the trail runs to row {last} but {known.source} records {known.last_seq} rows"
    return None


def _export_seal_problem(
    incident_id: str, events: list[AuditEvent], seal: Seal, public_key: Ed25519PublicKey
) -> str | None:
    """The engine's signature over the head a bundle was written with must name its last row."""
    if seal.key_id != key_id(public_key):
        return f"the export seal was made with another key ({seal.key_id})"
    try:
        public_key.verify(base64.b64decode(seal.signature), seal.message())
    except (InvalidSignature, ValueError):
        return "the export seal has a forged signature"
    if seal.incident_id != incident_id or seal.reason != EXPORT_SEAL_REASON:
        return f"the export seal is not this bundle's ({seal.incident_id}, {seal.reason})"
    last = events[-1].seq if events else 0
    if seal.seq > last:
        return (
            f"the trail ends at row {last} but the engine signed row {seal.seq} as the last at "
            f"export: the rows after {last} are missing"
        )
    if seal.seq < last:
        return (
            f"rows {seal.seq + 1}..{last} were added after export "
            f"(the engine signed row {seal.seq} as the last)"
        )
    if events[-1].hash != seal.head_hash:
        return f"row {last} is not the row the engine signed as the last at export"
    return None


BUNDLE_EVENTS = "bundle's events.json"  # where a bundle's rows are, in replay differences


async def check_with_replay(
    integrity: Integrity,
    events: list[AuditEvent],
    history: IncidentHistory,
    *,
    stored_in: str = "audit table",
    store: AuditStore | None = None,
) -> Integrity:
    """The replay against `events`, or, given the `store` they were read from before the
    history was fetched, against the rows it holds now (`rows_after_history`)."""
    rows, meanwhile = events, 0
    if store is not None:
        rows, meanwhile = rows_after_history(store, integrity.incident_id, events)
    integrity.replay = await replay_incident(
        history, rows, stored_in=stored_in, written_meanwhile=meanwhile
    )
    _attribute(integrity)
    return integrity


def rows_after_history(
    store: AuditStore, incident_id: str, before: list[AuditEvent]
) -> tuple[list[AuditEvent], int]:
    """The incident's rows read again once its history was fetched (after the `before` read),
    and how many were written in between. A live incident's workflow tasks write their rows as
    they complete: one that completed meanwhile is in the history and its rows only in this
    read; one that began after the fetch wrote rows no replay of it can hold yet. A trail that
    changed rather than grew meanwhile (a row superseded) is compared as first read."""
    after = store.events(incident_id)
    if after[: len(before)] != before:
        return before, 0
    return after, len(after) - len(before)


def check_store(
    store: AuditStore, incident_id: str, public_key: Ed25519PublicKey
) -> tuple[Integrity, list[AuditEvent]]:
    """Chain, seals and the incident's row in the store, and the events checked; raises
    IncidentNotFound if the store has no trail for it."""
    # The row and the seals before the events: a live incident's row can then only be behind
    # them, never ahead, and every seal read covers rows written by then (in its transaction).
    row = store.incident(incident_id)
    seals = store.seals(incident_id)
    events = store.events(incident_id)
    if not events and row is None and not seals:  # as store.knows, from what was read here
        raise IncidentNotFound(f"no audit trail for incident {incident_id}")
    # With no rows but its seals or its board row, the trail was there: deleted, not unknown.
    ends = (
        []
        if row is None
        else [KnownEnd("the store's incident row", row.last_seq, row.state == "closed")]
    )
    integrity = check(incident_id, events, seals, public_key, known_ends=ends)
    integrity.board = _board_verdict(store, incident_id, events)
    if unsealed := store.unsealed_writes(incident_id, every=SEAL_EVERY):
        named = ", ".join(f"rows {first}..{head}" for first, head in unsealed)
        integrity.seals_missing = (
            f"the store has lost the checkpoint seal{'s' if len(unsealed) > 1 else ''} of the "
            f"write{'s' if len(unsealed) > 1 else ''} of {named} (the engine seals each write "
            f"that reaches a multiple of {SEAL_EVERY} rows): deleted"
        )
    _attribute(integrity)
    return integrity, events


def _board_verdict(store: AuditStore, incident_id: str, events: list[AuditEvent]) -> str:
    # The row again, after the events: each write moves the row with its events in one
    # transaction, so from here a row behind the events read was not moved with them.
    row = store.incident(incident_id)
    for _ in range(3):
        if row is None or not events or row.last_seq <= events[-1].seq:
            break
        events = store.events(incident_id)  # written meanwhile: the trail as the row knows it
        row = store.incident(incident_id)
    if row is None:  # stores from before the incidents table have none for older incidents
        return (
            "ok, but the incidents table has no row for it: the board and search omit it (a "
            "store older than that table, or the row was deleted)"
        )
    if (problem := projection_problem(row, events)) is not None:
        return f"FAILED: {problem}"
    if summary_differs(row, events):
        return (
            "ok, but its board summary is not what today's version makes of the trail (an "
            "older version wrote it, or it was edited): the board shows the stored one"
        )
    return "ok"


# --- export bundles ---------------------------------------------------------------------------
@dataclass
class Bundle:
    incident_id: str
    events: list[AuditEvent]
    seals: list[Seal]
    public_key: Ed25519PublicKey  # a copy of the engine's key, never trusted by itself
    history: IncidentHistory | None
    manifest_events: int | None = None  # how many rows the manifest says were written
    export_seal: Seal | None = None  # the engine's signature over the head; older bundles: None


def check_bundle(bundle: Bundle, trusted: Ed25519PublicKey, *, trusted_key: str) -> Integrity:
    """Chain and seals of a bundle against a key the auditor trusts: whoever rewrites a bundle
    can re-sign it and ship their own key, so the bundle's key is only compared, never used."""
    integrity = check(
        bundle.incident_id,
        bundle.events,
        bundle.seals,
        trusted,
        known_ends=[KnownEnd("the bundle's manifest", bundle.manifest_events, exact=True)],
        export_seal=bundle.export_seal,
    )
    integrity.trusted_key = trusted_key
    integrity.bundle_key_id = key_id(bundle.public_key)
    integrity.replay_skipped = "the bundle has no history.json"
    return integrity


def write_bundle(
    out: Path,
    *,
    incident_id: str,
    events: list[AuditEvent],
    seals: list[Seal],
    public_key: Ed25519PublicKey,
    history: IncidentHistory | None,
    signer: Signer | None = None,
) -> Path:
    """Write a directory (or a .tar.gz when `out` ends so) an outside auditor can verify alone.
    With the engine's `signer`, the manifest carries its signature over the last row, so a
    bundle cut short shows even without its history."""
    archive = out.name.endswith(".tar.gz")
    # Never into another export: a file it left (another incident's history) would be read
    # with this one's rows and look like tampering.
    if (archive and out.exists()) or (out.is_dir() and any(out.iterdir())):
        raise BundleError(f"{out} exists and is not empty: export into a new path")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / incident_id if archive else out
        directory.mkdir(parents=True, exist_ok=True)
        contents = {
            "events.json": json.dumps([e.model_dump() for e in events], indent=1),
            "seals.json": json.dumps([s.model_dump() for s in seals], indent=1),
            "public-key.pem": public_key_pem(public_key),
        }
        if history is not None:
            contents["history.json"] = history.to_json()
        for name, text in contents.items():
            (directory / name).write_text(text, encoding="utf-8")
        manifest = {
            "format": BUNDLE_FORMAT,
            "incident_id": incident_id,
            "created_at": datetime.now(UTC).isoformat(),
            "key_id": key_id(public_key),
            "events": len(events),
            "seals": len(seals),
            "sha256": {
                name: hashlib.sha256(text.encode()).hexdigest() for name, text in contents.items()
            },
        }
        if signer is not None and events:
            export_seal = signer.seal(events[-1], reason=EXPORT_SEAL_REASON)
            manifest["export_seal"] = export_seal.model_dump()
        (directory / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        if archive:
            out.parent.mkdir(parents=True, exist_ok=True)
            with tarfile.open(out, "w:gz") as tar:
                tar.add(directory, arcname=incident_id)
    return out


def is_bundle(path: Path) -> bool:
    """An export bundle: a directory with a manifest, or a .tar.gz (never a history export)."""
    if path.is_dir():
        return (path / "manifest.json").is_file()
    return path.name.endswith((".tar.gz", ".tgz"))


class _Manifest(BaseModel):
    """What verify reads of manifest.json (it is not signed: the rows and seals are)."""

    format: Any = None
    incident_id: str
    sha256: dict[str, str]
    events: int | None = None
    export_seal: Seal | None = None


_MANIFEST = TypeAdapter(_Manifest)
_EVENTS = TypeAdapter(list[AuditEvent])
_SEALS = TypeAdapter(list[Seal])


def _bundle_json(path: Path, name: str) -> Any:
    try:
        return json.loads((path / name).read_text(encoding="utf-8"))
    except OSError as error:
        raise BundleError(f"{path}: cannot read {name}: {error.strerror}") from None
    except ValueError as error:  # invalid JSON or UTF-8
        raise BundleError(f"{path}: {name} is not valid JSON: {error}") from None


def _bundle_model(path: Path, name: str, adapter: TypeAdapter[Any], data: Any) -> Any:
    """`data`, read from the bundle's file `name`, as `adapter`'s type."""
    try:
        return adapter.validate_python(data)
    except ValidationError as error:
        problem = first_problem(error.errors())
        raise BundleError(f"{path}: {name} is not as an export writes it: {problem}") from None


def read_bundle(path: Path) -> Bundle:
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                with tarfile.open(path, "r:gz") as tar:
                    tar.extractall(tmp, filter="data")
            except (tarfile.TarError, EOFError, OSError) as error:
                raise BundleError(f"{path}: not a readable .tar.gz bundle ({error})") from None
            inner = [p for p in Path(tmp).iterdir() if p.is_dir()]
            if len(inner) != 1:
                raise BundleError(f"{path}: expected one incident directory in the archive")
            try:
                return read_bundle(inner[0])
            except (BundleError, HistoryError) as error:
                # Named as the archive given, not the temporary directory it was unpacked in.
                shown = str(error).replace(str(inner[0]), f"{path} ({inner[0].name}/)")
                raise type(error)(shown) from None
    if path.exists() and not path.is_dir():
        raise BundleError(f"{path}: not an audit bundle (a bundle is a directory or a .tar.gz)")
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle (a directory or .tar.gz)")
    raw = _bundle_json(path, "manifest.json")
    if not isinstance(raw, dict) or raw.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: not an audit bundle ({BUNDLE_FORMAT} expected)")
    manifest: _Manifest = _bundle_model(path, "manifest.json", _MANIFEST, raw)
    listed = manifest.sha256
    for name, digest in listed.items():
        try:
            actual = hashlib.sha256((path / name).read_bytes()).hexdigest()
        except OSError:
            raise BundleError(f"{path}: {name} listed in the manifest is missing") from None
        if actual != digest:
            raise BundleError(f"{path}: {name} does not match the manifest (altered after export)")
    for name in ("events.json", "seals.json", "public-key.pem"):
        if name not in listed:
            raise BundleError(f"{path}: {name} is not listed in the manifest")
    events: list[AuditEvent] = _bundle_model(
        path, "events.json", _EVENTS, _bundle_json(path, "events.json")
    )
    seals: list[Seal] = _bundle_model(path, "seals.json", _SEALS, _bundle_json(path, "seals.json"))
    try:
        public_key = load_public_key((path / "public-key.pem").read_text())
    except (OSError, ValueError, SealError) as error:
        raise BundleError(f"{path}: public-key.pem: {error}") from None
    incident_id = manifest.incident_id
    # The manifest is not signed; the rows and seals are (the seals sign the incident's id).
    for what, items in (("row", events), ("seal", seals)):
        for item in items:
            if item.incident_id != incident_id:
                raise BundleError(
                    f"{path}: {what} {item.seq} is incident {item.incident_id}'s, not "
                    f"{incident_id}'s as the manifest says"
                )
    export_seal = manifest.export_seal
    history_file = path / "history.json"
    if history_file.is_file() and "history.json" not in listed:
        raise BundleError(f"{path}: history.json is not listed in the manifest (not this export's)")
    history = IncidentHistory.from_file(history_file) if history_file.is_file() else None
    return Bundle(
        incident_id,
        events,
        seals,
        public_key,
        history,
        manifest_events=manifest.events,
        export_seal=export_seal,
    )


async def verify_incident(
    client: Client | None,
    store: AuditStore,
    public_key: Ed25519PublicKey,
    incident_id: str,
    *,
    replay: bool = True,
    trusted_key: str = "the engine's signing key",
    skipped_because: str = "not asked for",
) -> Integrity:
    """Chain, seals and the board's row from the store; with a Temporal client, the replay
    comparison too."""
    history = None
    try:
        integrity, events = check_store(store, incident_id, public_key)
    except IncidentNotFound as unknown:
        if not replay or client is None:
            raise
        # Temporal may still hold it: then its trail was deleted, or this is not the store its
        # workers write, and the replay names the rows missing.
        try:
            history = await export_history(client, incident_id)
        except IncidentError:  # not there either, or an id Temporal's query cannot even name
            raise unknown from None
        integrity, events = check(incident_id, [], [], public_key), []
        integrity.board = _board_verdict(store, incident_id, events)
    integrity.trusted_key = trusted_key
    integrity.replay_skipped = skipped_because if not replay else "no Temporal client"
    if replay and client is not None:
        history = history or await export_history(client, incident_id)
        integrity = await check_with_replay(integrity, events, history, store=store)
    return integrity


def _attribute(integrity: Integrity) -> None:
    """Which record a disagreement between the trail and the store's row is the fault of, once
    the checks so far have run."""
    uncut, replay = integrity.seals_uncut, integrity.replay
    if uncut is not None and replay is not None and replay.ok and integrity.replay_shows_complete:
        _blame_the_row(integrity, uncut)
    trail_failed = (
        not integrity.chain.ok
        or (not integrity.seals.ok and integrity.seals_uncut is None)
        or (replay is not None and not replay.ok)
    )
    if trail_failed and (integrity.board or "").startswith("FAILED"):
        # Held against an altered trail, the row disagrees whether or not it was edited.
        integrity.board = (
            "not checked: the trail failed its own checks, so the row cannot be held against it"
        )


def _blame_the_row(integrity: Integrity, uncut: SealVerification) -> None:
    """The store's row said rows are missing, yet Temporal's own history replays to exactly the
    trail: no row is missing, and the row is what was edited."""
    claim = integrity.seals.problem or ""
    integrity.seals, integrity.seals_uncut = uncut, None
    said = claim.split(": the rows after", 1)[0]
    integrity.board = (
        f"FAILED: {said}; Temporal's history replays to exactly those {integrity.chain.events} "
        "rows: the row was edited"
    )
