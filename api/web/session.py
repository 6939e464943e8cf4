"""The console's session: who is signed in (the `crisis_token` cookie), the per-session CSRF
token its forms carry, the one-shot flash message a redirect hands to the next page, and reading
the url-encoded forms browsers send."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl

from fastapi import Request, Response

from api.auth import COOKIE_NAME, Forbidden, Principal, Unauthenticated, identify

FLASH_COOKIE = "crisis_flash"
CSRF_FIELD = "csrf"
CONSOLE = "/console"
# A commander's form is a few short fields; anything larger is not one of ours.
MAX_FORM_BYTES = 64 * 1024
MAX_FORM_FIELDS = 64


class SignInRequired(Exception):
    """No valid sign-in: the page sends the browser to the sign-in form, saying why."""

    def __init__(self, message: str, *, next_path: str, stale_cookie: bool) -> None:
        super().__init__(message)
        self.next_path = next_path
        self.stale_cookie = stale_cookie


class BadForm(ValueError):
    """A POST body that is not a console form."""


FlashKind = Literal["ok", "warning", "error"]


@dataclass(frozen=True)
class Flash:
    kind: FlashKind
    text: str


async def signed_in(request: Request) -> Principal:
    """The principal behind the request's token (header or cookie). SignInRequired without one;
    Forbidden (from `identify`) for a cross-site POST carrying the cookie."""
    try:
        return await identify(request)
    except Unauthenticated as error:
        stale = COOKIE_NAME in request.cookies
        message = f"signed out: {error}" if stale else "sign in to continue"
        raise SignInRequired(message, next_path=_return_path(request), stale_cookie=stale) from None


def _return_path(request: Request) -> str:
    if request.method != "GET":
        return CONSOLE
    query = f"?{request.url.query}" if request.url.query else ""
    return safe_next(f"{request.url.path}{query}")


def safe_next(path: str | None) -> str:
    """Where to go after signing in: a console page of this site, never another site."""
    if not path or not path.startswith(CONSOLE) or path.startswith("//") or "\\" in path:
        return CONSOLE
    return path


def csrf_token(session_token: str) -> str:
    """Derived from the secret sign-in token: a page of another site can neither read nor guess
    it, and it needs no server-side state."""
    return hmac.new(session_token.encode(), b"crisis-console/csrf", hashlib.sha256).hexdigest()


def session_csrf(request: Request) -> str:
    token = request.cookies.get(COOKIE_NAME)
    return csrf_token(token) if token else ""


def check_csrf(request: Request, form: dict[str, str], principal: Principal) -> None:
    """A cookie-signed POST must carry the session's CSRF token (the cookie's SameSite=Strict and
    the Origin check in `identify` come first; this covers browsers that send neither)."""
    if "authorization" in request.headers:
        return  # a bearer token is never sent by a browser on another site's behalf
    expected = session_csrf(request)
    if not expected or not hmac.compare_digest(form.get(CSRF_FIELD, ""), expected):
        raise Forbidden(
            "the form is out of date or came from another page: reload the page and try again",
            reason="bad csrf token",
            principal=principal.name,
        )


async def read_form(request: Request) -> dict[str, str]:
    """The url-encoded form of a POST (the first value of each field)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise BadForm("send the form as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadForm(f"the form is larger than {MAX_FORM_BYTES // 1024} KiB")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError) as error:
        raise BadForm(f"unreadable form: {error}") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form


def set_session(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        COOKIE_NAME,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def clear_session(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE_NAME,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


# A cookie holds about 4 KB; the flash is base64 of its JSON.
FLASH_BYTES = 2800


def set_flash(response: Response, request: Request, kind: FlashKind, text: str) -> None:
    payload = json.dumps({"kind": kind, "text": text}).encode()
    keep = len(text)
    while len(payload) > FLASH_BYTES:
        # Too long for the cookie: keep its start and its end, where refusals say what to do.
        keep = keep * 3 // 4
        shortened = f"{text[: keep // 2]} … {text[-(keep // 2) :]}"
        payload = json.dumps({"kind": kind, "text": shortened}).encode()
    response.set_cookie(
        FLASH_COOKIE,
        base64.urlsafe_b64encode(payload).decode(),
        max_age=60,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=CONSOLE,
    )


def read_flash(request: Request) -> Flash | None:
    """The message the last redirect left (`forget_flash` clears it once shown)."""
    raw = request.cookies.get(FLASH_COOKIE)
    if raw is None:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw.encode()))
        kind = data.get("kind")
        return Flash(kind=kind if kind in ("ok", "warning") else "error", text=str(data["text"]))
    except (binascii.Error, ValueError, KeyError, TypeError, AttributeError):
        return None


def forget_flash(response: Response) -> None:
    response.delete_cookie(FLASH_COOKIE, path=CONSOLE, samesite="strict", httponly=True)
