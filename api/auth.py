"""Who is calling, and what they may do.

Every route but `/v1/health` authenticates its caller from an API token (`store/tokens.py`),
sent as `Authorization: Bearer <token>` or in the `crisis_token` cookie the web console sets.
A route then asks for a permission:

    @router.post("/things")
    async def make(principal: Commander) -> ...:   # 401 without a valid token, 403 without role
        ... principal.name is the actor; never a name the client typed ...

or `dependencies=[require(Permission.READ)]` where the principal itself is not needed.
Failures are `AuthError`s, answered as 401/403 JSON (and logged) by `api/errors.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from enum import StrEnum
from functools import cache
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict

from api.deps import known_query
from store.errors import RevokedToken, TokenError
from store.tokens import TokenStore

COOKIE_NAME = "crisis_token"
# Methods a cross-site page may not send with the console's cookie (see `same_site`).
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Permission(StrEnum):
    READ = "read"  # every valid token: incidents, audit trails, reports
    AUTHOR = "author"  # validate and plan playbooks
    COMMAND = "command"  # trigger, stand down, escalate, de-escalate, renew, review, note
    ADMIN = "admin"  # manage tokens


# The roles that grant each permission; READ needs none.
GRANTED_BY: dict[Permission, frozenset[str]] = {
    Permission.READ: frozenset(),
    Permission.AUTHOR: frozenset({"engineer", "commander", "admin"}),
    Permission.COMMAND: frozenset({"commander", "admin"}),
    Permission.ADMIN: frozenset({"admin"}),
}
_DOING = {
    Permission.READ: "read",
    Permission.AUTHOR: "author playbooks",
    Permission.COMMAND: "command incidents",
    Permission.ADMIN: "administer tokens",
}


class Principal(BaseModel):
    """The authenticated caller: the actor of whatever it does."""

    model_config = ConfigDict(frozen=True)

    name: str
    roles: list[str]
    token_id: str

    def has(self, role: str) -> bool:
        """Holds `role` itself (an admin is not thereby a `policy-lead`)."""
        return role in self.roles

    def require(self, permission: Permission) -> None:
        """Forbidden (403) unless this principal has `permission`."""
        if not self.can(permission):
            needed = " or ".join(sorted(GRANTED_BY[permission]))
            raise Forbidden(
                f"{self.name} (roles: {', '.join(self.roles)}) may not "
                f"{_DOING[permission]}: that needs the role {needed}",
                reason=f"lacks permission {permission}",
                principal=self.name,
            )

    def can(self, permission: Permission) -> bool:
        granted = GRANTED_BY[Permission(permission)]
        return not granted or any(role in granted for role in self.roles)


class AuthError(Exception):
    """A request turned away; `reason` is for the log, the message for the client."""

    status_code: ClassVar[int] = 401
    code: ClassVar[str] = "unauthenticated"

    def __init__(self, message: str, *, reason: str, principal: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.principal = principal


class Unauthenticated(AuthError):
    """No token, or one that is unknown or revoked: 401."""


class Forbidden(AuthError):
    """A valid token whose roles do not allow this: 403."""

    status_code: ClassVar[int] = 403
    code: ClassVar[str] = "forbidden"


# Declared for the OpenAPI document (the /docs "Authorize" button); `identify` reads the
# request itself, so it can also be called directly.
_bearer = HTTPBearer(
    auto_error=False,
    description="An API token: `crisis tokens create NAME --role ROLE` issues one.",
)
_cookie = APIKeyCookie(
    name=COOKIE_NAME, auto_error=False, description="The web console's sign-in cookie."
)


def _presented_token(request: Request) -> tuple[str, str] | None:
    """(token, "header" | "cookie"); the header wins when both are sent."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(
                "the Authorization header must be 'Bearer <token>'", reason="malformed header"
            )
        return token.strip(), "header"
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie:
        return cookie, "cookie"
    return None


def same_site(request: Request) -> bool:
    """A browser sends Origin with every POST; another site's page must not act with our cookie."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def authenticate(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
    cookie: Annotated[str | None, Security(_cookie)] = None,
) -> Principal:
    """The API's dependency (its parameters declare the token's places for the OpenAPI
    document): `identify`."""
    return await identify(request)


async def identify(request: Request) -> Principal:
    """The principal behind the request's token; Unauthenticated (401) if there is none."""
    presented = _presented_token(request)
    if presented is None:
        raise Unauthenticated(
            "authentication required: send 'Authorization: Bearer <token>'", reason="no token"
        )
    token, source = presented
    tokens: TokenStore = request.app.state.tokens
    try:
        found = await asyncio.to_thread(tokens.verify, token)
    except RevokedToken as error:
        raise Unauthenticated(
            "the token was revoked", reason="revoked token", principal=error.principal
        ) from None
    except TokenError:
        raise Unauthenticated("unknown token", reason="unknown token") from None
    principal = Principal(name=found.name, roles=list(found.roles), token_id=found.token_id)
    if source == "cookie" and request.method in _UNSAFE_METHODS and not same_site(request):
        raise Forbidden(
            "cross-site request refused: the sign-in cookie only works from this site",
            reason="cross-site cookie",
            principal=principal.name,
        )
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]


@cache
def _requirement(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    # One function per permission, so FastAPI resolves each once per request.
    async def check(request: Request, principal: CurrentPrincipal) -> Principal:
        principal.require(permission)
        # Once the caller may call the route: a stranger learns nothing of its parameters.
        known_query(request)
        return principal

    check.__name__ = f"require_{permission}"
    return check


def require(permission: Permission) -> Any:
    """A dependency answering the principal if it has `permission`, else Forbidden (403)."""
    return Depends(_requirement(Permission(permission)))


Reader = Annotated[Principal, require(Permission.READ)]
Author = Annotated[Principal, require(Permission.AUTHOR)]
Commander = Annotated[Principal, require(Permission.COMMAND)]
Admin = Annotated[Principal, require(Permission.ADMIN)]
