"""API tokens: who may call the HTTP API, and in which roles.

A token is `crt_<id>_<secret>`. Only the SHA-256 of the secret is stored, so a copy of the
database does not let anyone call the API; the plaintext is handed out once, when issued.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import JSON, Column, DateTime
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, func, select

from core.timestamps import as_utc
from store.audit_store import make_engine
from store.errors import RevokedToken, TokenError, UnknownToken
from store.migrate import upgrade
from workflows.limits import PRINCIPAL_PATTERN, PRINCIPAL_RULE
from workflows.playbook import ROLE_PATTERN  # the roles playbooks may ask approvals of

log = structlog.get_logger(__name__)

TOKEN_PREFIX = "crt_"
_TOKEN_PATTERN = re.compile(r"^crt_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
# Recording every use would make each API read a database write; a minute's precision will do.
LAST_USED_RESOLUTION = timedelta(seconds=60)
# Compared against when the token id is unknown, so both failures take the same time.
_NO_HASH = "0" * 64


class TokenRow(SQLModel, table=True):
    __tablename__ = "api_tokens"

    id: str = Field(primary_key=True, max_length=32)
    principal: str = Field(index=True, max_length=200)
    roles: list[str] = Field(sa_column=Column(JSON, nullable=False))
    secret_hash: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    last_used_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed: everything but its secret."""

    id: str
    principal: str
    roles: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenInfo:
        """A token as `as_dict` (and the API) writes it."""

        def moment(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        created = moment(data["created_at"])
        assert created is not None
        return cls(
            id=data["id"],
            principal=data["principal"],
            roles=tuple(data["roles"]),
            created_at=created,
            revoked_at=moment(data["revoked_at"]),
            last_used_at=moment(data["last_used_at"]),
        )

    def as_dict(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment else None

        return {
            "id": self.id,
            "principal": self.principal,
            "roles": list(self.roles),
            "active": self.active,
            "created_at": iso(self.created_at),
            "revoked_at": iso(self.revoked_at),
            "last_used_at": iso(self.last_used_at),
        }


@dataclass(frozen=True)
class IssuedToken:
    """A new token: `token` is the only copy of the plaintext there will ever be."""

    info: TokenInfo
    token: str = field(repr=False)


@dataclass(frozen=True)
class TokenPrincipal:
    """Who a valid token speaks for."""

    name: str
    roles: tuple[str, ...]
    token_id: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _aware(moment: datetime | None) -> datetime | None:
    return as_utc(moment) if moment is not None else None


def _info(row: TokenRow) -> TokenInfo:
    created = _aware(row.created_at)
    assert created is not None
    return TokenInfo(
        id=row.id,
        principal=row.principal,
        roles=tuple(row.roles),
        created_at=created,
        revoked_at=_aware(row.revoked_at),
        last_used_at=_aware(row.last_used_at),
    )


def check_roles(roles: list[str]) -> list[str]:
    """The roles, deduplicated in order; a TokenError names the first bad one."""
    if not roles:
        raise TokenError("a token needs at least one role")
    for role in roles:
        if not ROLE_PATTERN.fullmatch(role):
            raise TokenError(
                f"invalid role {role!r}: use lowercase letters, digits and '-', "
                "starting with a letter (e.g. commander, policy-lead)"
            )
    return list(dict.fromkeys(roles))


def check_principal(name: str) -> str:
    if not PRINCIPAL_PATTERN.fullmatch(name):
        raise TokenError(f"invalid principal name {name!r}: {PRINCIPAL_RULE}")
    return name


class TokenStore:
    """Issue, check, revoke and list API tokens.

    Built from a database URL (its own engine, migrated here) or from an engine already
    migrated, e.g. `TokenStore(audit_store.engine)`, so a process keeps one connection pool.
    """

    def __init__(self, source: str | Engine) -> None:
        if isinstance(source, str):
            self.engine = make_engine(source)
            upgrade(self.engine)
            self._owns_engine = True
        else:
            self.engine = source
            self._owns_engine = False

    def create(self, principal: str, roles: builtins.list[str]) -> IssuedToken:
        """Issue a token for `principal` in `roles`; the plaintext is in the answer only."""
        check_principal(principal)
        roles = check_roles(roles)
        self._refuse_another_spelling(principal)
        for attempt in range(3):
            token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
            row = TokenRow(
                id=token_id,
                principal=principal,
                roles=roles,
                secret_hash=_hash(secret),
                created_at=datetime.now(UTC),
            )
            try:
                with Session(self.engine) as session:
                    session.add(row)
                    session.commit()
                    session.refresh(row)
                    info = _info(row)
            except IntegrityError:
                if attempt == 2:  # three id collisions in a row: not chance
                    raise
                continue
            log.info("tokens.created", token_id=token_id, principal=principal, roles=roles)
            return IssuedToken(info=info, token=f"{TOKEN_PREFIX}{token_id}_{secret}")
        raise AssertionError("unreachable")

    def _refuse_another_spelling(self, principal: str) -> None:
        """A name that differs from a principal's only in case would be a second person to a
        quorum of distinct approvers (`root` and `ROOT`): one person, one name."""
        query = select(TokenRow.principal).where(
            func.lower(TokenRow.principal) == principal.lower(), TokenRow.principal != principal
        )
        with Session(self.engine) as session:
            known = session.exec(query).first()
        if known is not None:
            raise TokenError(
                f"principal {principal!r} differs only in case from {known!r}, who has tokens: "
                f"approvals count people by name, so issue this one to {known!r}"
            )

    def verify(self, token: str) -> TokenPrincipal:
        """Who `token` speaks for; UnknownToken or RevokedToken says why it speaks for no one."""
        match = _TOKEN_PATTERN.fullmatch(token)
        if match is None:
            raise UnknownToken("not a token issued by this engine")
        token_id, secret = match.groups()
        with Session(self.engine) as session:
            row = session.get(TokenRow, token_id)
            held = row.secret_hash if row is not None else _NO_HASH
            if not hmac.compare_digest(held, _hash(secret)) or row is None:
                raise UnknownToken("unknown token")
            if row.revoked_at is not None:
                raise RevokedToken(
                    f"token {token_id} was revoked", principal=row.principal, token_id=token_id
                )
            found = TokenPrincipal(name=row.principal, roles=tuple(row.roles), token_id=row.id)
            self._note_use(session, row)
        return found

    def authenticate(self, token: str) -> TokenPrincipal | None:
        """Who `token` speaks for, or None if it is unknown, malformed or revoked."""
        try:
            return self.verify(token)
        except TokenError:
            return None

    def _note_use(self, session: Session, row: TokenRow) -> None:
        now = datetime.now(UTC)
        last = _aware(row.last_used_at)
        if last is not None and now - last < LAST_USED_RESOLUTION:
            return
        row.last_used_at = now
        session.add(row)
        try:
            session.commit()
        except SQLAlchemyError as error:
            # A busy database must not turn a valid token away: the time is informational.
            session.rollback()
            log.warning("tokens.last_used_not_recorded", token_id=row.id, error=str(error))

    def revoke(
        self, token_id: str | None = None, *, principal: str | None = None
    ) -> builtins.list[TokenInfo]:
        """Revoke one token by id, or every active token of `principal`; answer those revoked."""
        if (token_id is None) == (principal is None):
            raise TokenError("revoke needs a token id or a principal, not both")
        now = datetime.now(UTC)
        with Session(self.engine) as session:
            if token_id is not None:
                row = session.get(TokenRow, token_id)
                if row is None:
                    raise UnknownToken(f"no token {token_id}")
                if row.revoked_at is not None:
                    raise TokenError(
                        f"token {token_id} was already revoked at {_aware(row.revoked_at)}"
                    )
                rows = [row]
            else:
                rows = list(
                    session.exec(
                        select(TokenRow).where(
                            TokenRow.principal == principal,
                            TokenRow.revoked_at.is_(None),  # type: ignore[union-attr]
                        )
                    ).all()
                )
                if not rows:
                    raise UnknownToken(f"no active token for principal {principal}")
            for row in rows:
                row.revoked_at = now
                session.add(row)
            session.commit()
            revoked = [_info(row) for row in rows]
        for info in revoked:
            log.info("tokens.revoked", token_id=info.id, principal=info.principal)
        return revoked

    def has_tokens(self, *, active_only: bool = False) -> bool:
        """Whether any token was issued (and, with `active_only`, is not revoked)."""
        query = select(TokenRow.id)
        if active_only:
            query = query.where(TokenRow.revoked_at.is_(None))  # type: ignore[union-attr]
        with Session(self.engine) as session:
            return session.exec(query.limit(1)).first() is not None

    def list(self, *, principal: str | None = None) -> builtins.list[TokenInfo]:
        """Every token (revoked ones included), oldest first; never a secret."""
        query = select(TokenRow)
        if principal is not None:
            query = query.where(TokenRow.principal == principal)
        query = query.order_by(TokenRow.created_at, TokenRow.id)  # type: ignore[arg-type]
        with Session(self.engine) as session:
            return [_info(row) for row in session.exec(query).all()]

    def dispose(self) -> None:
        """Close the connection pool if this store opened it (a shared engine is left alone)."""
        if self._owns_engine:
            self.engine.dispose()
