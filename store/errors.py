"""The stores' named errors, importable without loading SQLAlchemy (see engine/errors.py)."""

from __future__ import annotations


class AuditStoreError(RuntimeError):
    """Base of the audit store's errors."""


class AuditStoreUnavailable(AuditStoreError):
    """The database cannot be opened as an audit store: unreachable, refused, or no database."""


class SchemaTooNew(AuditStoreUnavailable):
    """The database was migrated by a newer version of the engine than this one."""


class AuditConflict(AuditStoreError):
    """A different event already holds this incident's sequence number."""


class AuditGap(AuditStoreError):
    """An event arrived before the one it chains to."""


class AuditRowUnreadable(AuditStoreError):
    """A stored row is no event at all (its data is not JSON, its number not a number): the
    store was edited by hand or damaged."""


class SealError(RuntimeError):
    """A key that cannot be read or a seal that cannot be made."""


class TokenError(ValueError):
    """Base of the token store's errors (a bad role or name, an unknown token)."""


class UnknownToken(TokenError):
    """No such token (or a malformed one, or a wrong secret)."""


class RevokedToken(TokenError):
    """The token exists but was revoked."""

    def __init__(self, message: str, *, principal: str, token_id: str) -> None:
        super().__init__(message)
        self.principal = principal
        self.token_id = token_id
