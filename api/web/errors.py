"""How console pages fail: as pages, not JSON. A missing sign-in sends the browser to the sign-in
form; a refusal or a missing incident is a page with one line saying what is wrong."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

import structlog
from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from api.auth import AuthError
from api.web.render import render
from api.web.session import BadForm, SignInRequired, clear_session, set_flash
from engine.errors import (
    ActionInvalid,
    IncidentBusy,
    IncidentConflict,
    IncidentError,
    IncidentNotFound,
    PlaybookInvalid,
    PlaybookNotFound,
)

log = structlog.get_logger(__name__)

# Named engine errors → (HTTP status, page title); as api/errors.py, for people.
PAGE_ERRORS: list[tuple[type[Exception], int, str]] = [
    (BadForm, 400, "Not a console form"),
    (IncidentNotFound, 404, "No such incident"),
    (PlaybookNotFound, 404, "No such playbook"),
    (PlaybookInvalid, 422, "The playbook file is invalid"),
    (ActionInvalid, 422, "Refused by the incident"),
    (IncidentConflict, 409, "Refused by the incident"),
    (IncidentBusy, 504, "The incident did not answer in time"),
    (IncidentError, 502, "Temporal did not answer"),
]


def sign_in_redirect(request: Request, error: SignInRequired) -> Response:
    response = RedirectResponse(
        f"/console/sign-in?next={quote(error.next_path, safe='/')}", status_code=303
    )
    if error.stale_cookie:  # unknown or revoked: drop it, say why on the sign-in form
        clear_session(response, request)
        set_flash(response, request, "error", str(error))
    return response


def error_page(request: Request, status_code: int, title: str, message: str) -> Response:
    return render(request, "error.html.j2", status_code=status_code, title=title, message=message)


class ConsoleRoute(APIRoute):
    """A route whose failures (from the handler or its dependencies) answer as pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired as error:
                return sign_in_redirect(request, error)
            except AuthError as error:
                log.warning(
                    "console.denied",
                    principal=error.principal,
                    route=f"{request.method} {self.path}",
                    reason=error.reason,
                    status=error.status_code,
                )
                title = "Not allowed" if error.status_code == 403 else "Not signed in"
                return error_page(request, error.status_code, title, str(error))
            except Exception as error:
                for kind, status_code, title in PAGE_ERRORS:
                    if isinstance(error, kind):
                        return error_page(request, status_code, title, str(error))
                raise

        return handle
