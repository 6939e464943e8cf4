"""The console's flash message rides in a cookie: a long one keeps its start and its end."""

from __future__ import annotations

from http.cookies import SimpleCookie

from starlette.requests import Request
from starlette.responses import Response

from api.web.session import FLASH_COOKIE, read_flash, set_flash


def _request(cookie: str = "") -> Request:
    headers = [(b"cookie", cookie.encode())] if cookie else []
    return Request({"type": "http", "scheme": "http", "path": "/console", "headers": headers})


def test_a_long_refusal_keeps_what_to_do() -> None:
    """A refusal too long for the cookie is cut in the middle: its end (stand them down first,
    or force it) is what the commander needs."""
    text = "standing INC-1 down now would lift " + "x" * 5000 + ": or force the stand-down"
    response = Response()
    set_flash(response, _request(), "error", text)
    cookie = SimpleCookie(response.headers["set-cookie"])[FLASH_COOKIE].value
    assert len(cookie) < 4000
    flash = read_flash(_request(f"{FLASH_COOKIE}={cookie}"))
    assert flash is not None
    assert flash.text.startswith("standing INC-1 down now would lift ")
    assert flash.text.endswith(": or force the stand-down")
    assert " … " in flash.text


def test_a_message_that_fits_is_kept_whole() -> None:
    text = "stand INC-2 then INC-1 down first (newest first), or force the stand-down " * 8
    response = Response()
    set_flash(response, _request(), "error", text)
    cookie = SimpleCookie(response.headers["set-cookie"])[FLASH_COOKIE].value
    flash = read_flash(_request(f"{FLASH_COOKIE}={cookie}"))
    assert flash is not None and text == flash.text
