"""Tokens, for admins: issue, list and revoke the API tokens, on the database the API reads.

So a token is managed where it is checked: `crisis --api URL tokens ...` reaches these routes,
instead of writing to whatever database the operator's own machine is configured with.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field, model_validator

from api.auth import Admin
from api.bodies import RequestBody
from api.deps import TokensDep
from api.errors import AUTH_ERRORS, ErrorOut
from store.tokens import TokenInfo

router = APIRouter(prefix="/tokens", tags=["tokens"], responses=AUTH_ERRORS)


class TokenOut(BaseModel):
    """A token as listed: everything but its secret."""

    id: str
    principal: str
    roles: list[str]
    active: bool
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, info: TokenInfo) -> TokenOut:
        return cls.model_validate(info.as_dict())


class IssuedOut(TokenOut):
    token: str = Field(description="The secret, shown this once: only its hash is kept")


class CreateBody(RequestBody):
    principal: str = Field(description="Who the token speaks for", max_length=200)
    roles: list[str] = Field(min_length=1, max_length=20)


class RevokeBody(RequestBody):
    """One token by id, or every active token of a principal."""

    token_id: str | None = Field(None, max_length=100)
    principal: str | None = Field(None, max_length=200)

    @model_validator(mode="after")
    def _one_of_them(self) -> RevokeBody:
        if (self.token_id is None) == (self.principal is None):
            raise ValueError("give token_id or principal (one of them)")
        return self


# Plain `def`s: FastAPI runs them in its thread pool, so the store never blocks the event loop.
@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=IssuedOut,
    responses={422: {"model": ErrorOut, "description": "A bad principal name or role"}},
)
def create_token(body: CreateBody, _: Admin, tokens: TokensDep) -> IssuedOut:
    """Issue a token. Its secret is in this answer only."""
    issued = tokens.create(body.principal, body.roles)
    return IssuedOut(**TokenOut.of(issued.info).model_dump(), token=issued.token)


@router.get("", response_model=list[TokenOut])
def list_tokens(
    _: Admin,
    tokens: TokensDep,
    principal: str | None = Query(None, max_length=200, description="Only this principal's"),
) -> list[TokenOut]:
    """Every token, oldest first, with its principal, roles and use (never a secret)."""
    return [TokenOut.of(info) for info in tokens.list(principal=principal)]


@router.post(
    "/revoke",
    response_model=list[TokenOut],
    responses={404: {"model": ErrorOut, "description": "No such token, or no active one"}},
)
def revoke_tokens(body: RevokeBody, _: Admin, tokens: TokensDep) -> list[TokenOut]:
    """Revoke a token, or all of a principal's: the API refuses them from the next request on."""
    revoked = tokens.revoke(body.token_id, principal=body.principal)
    return [TokenOut.of(info) for info in revoked]
