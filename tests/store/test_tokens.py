"""The API token store on SQLite and PostgreSQL: hashed secrets, checking, revoking, listing."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import Session

from store.audit_store import AuditStore
from store.errors import RevokedToken, TokenError, UnknownToken
from store.tokens import LAST_USED_RESOLUTION, TokenRow, TokenStore


@pytest.fixture
def tokens(audit_store: AuditStore) -> TokenStore:
    """A token store sharing the audit store's engine (the way the API builds it)."""
    return TokenStore(audit_store.engine)


def someone() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def raw_rows(tokens: TokenStore, token_id: str) -> str:
    """Every column of the token's row as the database holds it, as one string."""
    with tokens.engine.connect() as connection:
        row = connection.execute(
            text("SELECT * FROM api_tokens WHERE id = :id"), {"id": token_id}
        ).one()
    return " ".join(str(value) for value in row)


def test_a_token_is_issued_once_and_only_its_hash_is_stored(tokens: TokenStore) -> None:
    """The plaintext has the crt_<id>_<secret> form; neither it nor the secret is in the row,
    which holds the secret's SHA-256."""
    name = someone()
    issued = tokens.create(name, ["commander", "policy-lead"])
    prefix, token_id, secret = issued.token.split("_", 2)
    assert ("crt", issued.info.id, 43) == (prefix, token_id, len(secret))
    assert (name, ("commander", "policy-lead"), True) == (
        issued.info.principal,
        issued.info.roles,
        issued.info.active,
    )
    stored = raw_rows(tokens, token_id)
    assert secret not in stored and issued.token not in stored
    with Session(tokens.engine) as session:
        row = session.get(TokenRow, token_id)
        assert row is not None
        assert hashlib.sha256(secret.encode()).hexdigest() == row.secret_hash
    assert issued.token not in repr(issued)


def test_a_valid_token_names_its_principal_and_records_its_use(tokens: TokenStore) -> None:
    """authenticate answers the principal, roles and token id; the time of use is kept, to the
    minute (a second use right after writes nothing)."""
    name = someone()
    issued = tokens.create(name, ["auditor"])
    assert [None] == [t.last_used_at for t in tokens.list(principal=name)]
    found = tokens.authenticate(issued.token)
    assert found is not None
    assert (name, ("auditor",), issued.info.id) == (found.name, found.roles, found.token_id)
    (listed,) = tokens.list(principal=name)
    assert listed.last_used_at is not None
    assert datetime.now(UTC) - listed.last_used_at < LAST_USED_RESOLUTION
    assert tokens.authenticate(issued.token) is not None
    assert [listed.last_used_at] == [t.last_used_at for t in tokens.list(principal=name)]


def test_unknown_malformed_and_wrong_tokens_name_no_one(tokens: TokenStore) -> None:
    """A garbage string, an unknown id, a right id with a wrong secret: None, UnknownToken."""
    issued = tokens.create(someone(), ["engineer"])
    token_id = issued.info.id
    wrong_secret = f"crt_{token_id}_{'A' * 43}"
    for candidate in (
        "",
        "garbage",
        issued.token + "x",
        issued.token + "\n",
        issued.token.replace("crt_", "crx_"),
        f"crt_{'0' * 12}_{'x' * 43}",
        wrong_secret,
        "crt_" + "f" * 12 + "_" + "y" * 5000,
    ):
        assert tokens.authenticate(candidate) is None, candidate
        with pytest.raises(UnknownToken):
            tokens.verify(candidate)
    assert tokens.authenticate(issued.token) is not None


def test_a_revoked_token_no_longer_authenticates(tokens: TokenStore) -> None:
    """Revoking by id stops that token (and only it); revoking it again, or an unknown id, is a
    named error."""
    name = someone()
    first, second = tokens.create(name, ["commander"]), tokens.create(name, ["commander"])
    (revoked,) = tokens.revoke(first.info.id)
    assert (first.info.id, False) == (revoked.id, revoked.active)
    assert tokens.authenticate(first.token) is None
    with pytest.raises(RevokedToken) as caught:
        tokens.verify(first.token)
    assert name == caught.value.principal
    assert tokens.authenticate(second.token) is not None
    with pytest.raises(TokenError, match="already revoked"):
        tokens.revoke(first.info.id)
    with pytest.raises(UnknownToken, match="no token 000000000000"):
        tokens.revoke("000000000000")


def test_revoking_a_principal_revokes_all_its_tokens(tokens: TokenStore) -> None:
    """Every active token of the principal is revoked; other principals keep theirs."""
    name, other = someone(), someone()
    mine = [tokens.create(name, ["auditor"]) for _ in range(2)]
    theirs = tokens.create(other, ["auditor"])
    revoked = tokens.revoke(principal=name)
    assert {t.info.id for t in mine} == {r.id for r in revoked}
    assert [None, None] == [tokens.authenticate(t.token) for t in mine]
    assert tokens.authenticate(theirs.token) is not None
    with pytest.raises(UnknownToken, match=f"no active token for principal {name}"):
        tokens.revoke(principal=name)
    with pytest.raises(TokenError, match="not both"):
        tokens.revoke(theirs.info.id, principal=other)


def test_roles_and_names_are_checked(tokens: TokenStore) -> None:
    """Roles are lowercase identifiers (duplicates dropped), at least one; names are plain."""
    for roles in ([], ["Commander"], ["policy lead"], ["1st"], ["-x"], ["a" * 65], ["admin\n"]):
        with pytest.raises(TokenError):
            tokens.create(someone(), roles)
    for name in ("", "a b", "-x", "x" * 201, "ali\nce", "alice\n"):
        with pytest.raises(TokenError):
            tokens.create(name, ["auditor"])
    issued = tokens.create(someone(), ["legal", "policy-lead", "legal", "t2"])
    assert ("legal", "policy-lead", "t2") == issued.info.roles


def test_a_name_differing_only_in_case_is_refused(tokens: TokenStore) -> None:
    """`Root` beside `root` counted as a second approver of a two-person quorum."""
    name = someone()
    tokens.create(name, ["commander"])
    with pytest.raises(TokenError, match=f"differs only in case from {name!r}"):
        tokens.create(name.upper(), ["policy-lead"])
    assert name == tokens.create(name, ["policy-lead"]).info.principal  # the same name: fine


def test_listing_shows_every_token_but_no_secret(tokens: TokenStore) -> None:
    """list answers each token of a principal, oldest first, revoked ones marked; as a dict it
    holds no secret or hash."""
    name = someone()
    first, second = tokens.create(name, ["admin"]), tokens.create(name, ["commander"])
    tokens.revoke(first.info.id)
    listed = tokens.list(principal=name)
    assert [(first.info.id, False), (second.info.id, True)] == [(t.id, t.active) for t in listed]
    assert {t.id for t in listed} <= {t.id for t in tokens.list()}
    dumped = str([t.as_dict() for t in listed])
    assert first.token.split("_", 2)[2] not in dumped and "hash" not in dumped
    assert tokens.has_tokens()


def test_a_store_from_a_url_migrates_its_own_database(tmp_path: Path) -> None:
    """Built from a URL, the store brings the database to the current schema itself."""
    store = TokenStore(f"sqlite:///{tmp_path / 'tokens.db'}")
    try:
        assert not store.has_tokens()
        issued = store.create("alice", ["commander"])
        assert "alice" == getattr(store.authenticate(issued.token), "name", None)
    finally:
        store.dispose()
