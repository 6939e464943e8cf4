"""Rendering console pages: the Jinja2 environment (autoescaped), its filters for times, and the
headers every page carries."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from api.auth import Permission, Principal
from api.web.session import (
    CSRF_FIELD,
    FLASH_COOKIE,
    Flash,
    forget_flash,
    read_flash,
    session_csrf,
)
from core.timestamps import as_utc, parse_utc

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
STATIC_FILES = {"console.css": "text/css", "console.js": "text/javascript"}
# Everything the pages use is served by this site: no inline script or style, no other origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
# Sent by console.js when it refreshes a page in place: the flash stays for the real page view.
REFRESH_HEADER = "x-console-refresh"
# A measure or a review this close to its time is highlighted.
SOON_S = 3600.0


def parse_moment(value: datetime | str | None) -> datetime | None:
    if value is None or value == "":
        return None
    return as_utc(value) if isinstance(value, datetime) else parse_utc(value)


def moment_text(value: datetime | str | None) -> str:
    """2024-08-01 14:03:12 UTC: what a page shows without JavaScript."""
    moment = parse_moment(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def moment_iso(value: datetime | str | None) -> str:
    moment = parse_moment(value)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else ""


def span_text(seconds: float | None) -> str:
    """3h 12m: a duration as people say it, to the two largest units."""
    if seconds is None:
        return "—"
    left = int(abs(seconds))
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
    return " ".join(parts[:2])


def seconds_until(value: datetime | str | None, now: datetime) -> float | None:
    moment = parse_moment(value)
    return (moment - now).total_seconds() if moment else None


def is_soon(moment: datetime | str | None, now: datetime) -> bool:
    """Within the hour (or past): what a commander should look at first."""
    left = seconds_until(moment, now)
    return left is not None and left < SOON_S


@cache
def static_url(name: str) -> str:
    """The file's URL with its content hash, so a changed file is never served stale."""
    digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    return f"/console/static/{name}?v={digest}"


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,  # the templates are *.html.j2, which select_autoescape would miss
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(moment=moment_text, iso=moment_iso, span=span_text)
    env.globals.update(static=static_url, csrf_field_name=CSRF_FIELD, is_soon=is_soon)
    return env


def render(
    request: Request,
    template: str,
    *,
    status_code: int = 200,
    flash: Flash | None = None,
    **context: Any,
) -> HTMLResponse:
    """A page, with the signed-in principal (if any), the session's CSRF token and the flash (the
    one the last redirect left, unless the page says its own)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    refreshing = REFRESH_HEADER in request.headers
    if flash is None and not refreshing:
        flash = read_flash(request)
    html = (
        environment()
        .get_template(template)
        .render(
            principal=principal,
            can_command=principal is not None and principal.can(Permission.COMMAND),
            csrf=session_csrf(request),
            flash=flash,
            now=datetime.now(UTC),
            **context,
        )
    )
    response = HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
    if not refreshing and FLASH_COOKIE in request.cookies:
        forget_flash(response)
    return response
