"""API tests call as real principals: tokens issued by the token store the API itself reads."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from store.audit_store import AuditStore
from store.tokens import TokenStore

# The cast of the API tests, by role.
PRINCIPALS: dict[str, list[str]] = {
    "alice": ["commander"],
    "bob": ["policy-lead"],
    "carol": ["auditor"],
    "erin": ["engineer"],
    "admin": ["admin"],
}


@dataclass
class Tokens:
    """Tokens in the test database, one per principal, and headers that send them."""

    store: TokenStore
    issued: dict[str, str] = field(default_factory=dict)

    def issue(self, name: str, *roles: str) -> str:
        """A fresh token for `name` in `roles` (e.g. to revoke it)."""
        return self.store.create(name, list(roles)).token

    def token(self, name: str) -> str:
        return self.issued[name]

    def headers(self, name: str) -> dict[str, str]:
        return bearer(self.issued[name])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
def tokens(sqlite_store: AuditStore) -> Tokens:
    """One token per principal of PRINCIPALS, in the SQLite database the test apps use."""
    found = Tokens(TokenStore(sqlite_store.engine))
    for name, roles in PRINCIPALS.items():
        found.issued[name] = found.issue(name, *roles)
    return found
