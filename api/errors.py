"""JSON errors with stable codes: every 4xx/5xx body is {"error": {"code", "message"}}."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError

from api.auth import AuthError
from core.validation import first_problem
from engine.errors import (
    ActionInvalid,
    IncidentBusy,
    IncidentConflict,
    IncidentError,
    IncidentNotFound,
    LibraryError,
    PlaybookInvalid,
    PlaybookNotFound,
)
from store.errors import SealError, TokenError, UnknownToken
from workflows.playbook import InputError

log = structlog.get_logger(__name__)

# Named engine errors → (HTTP status, stable code).
ERROR_CODES: dict[type[Exception], tuple[int, str]] = {
    PlaybookNotFound: (404, "playbook_not_found"),
    PlaybookInvalid: (422, "playbook_invalid"),
    InputError: (422, "invalid_input"),
    IncidentNotFound: (404, "incident_not_found"),
    IncidentConflict: (409, "incident_conflict"),
    ActionInvalid: (422, "action_invalid"),  # before its base class IncidentConflict
    IncidentBusy: (504, "incident_busy"),
    IncidentError: (502, "temporal_error"),
    # The deployment's templates or stakeholder directory are broken: nothing the client can fix.
    LibraryError: (503, "library_invalid"),
    # The engine's signing key is missing or unreadable where this process looks for it.
    SealError: (503, "signing_key_unavailable"),
    UnknownToken: (404, "token_not_found"),
    TokenError: (422, "invalid_request"),
}


# What routing answers by itself, before any route runs.
HTTP_CODES: dict[int, str] = {404: "not_found", 405: "method_not_allowed"}
NOT_JSON = "body: not valid JSON"


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    """The shape of every error response (for the OpenAPI document)."""

    error: ErrorDetail


# For routers behind `api.auth`: the denials every authenticated route may answer.
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No token, or an unknown or revoked one"},
    403: {"model": ErrorOut, "description": "The token's roles do not allow this"},
}


def documented(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """Error responses for the OpenAPI document, each an ErrorOut with its description."""
    return {
        status: {"model": ErrorOut, "description": description}
        for status, description in descriptions.items()
    }


# What any route reaching an incident's workflow may answer besides its own errors.
TEMPORAL_ERRORS = documented(
    {
        502: "Temporal did not answer (`temporal_error`)",
        504: "The incident's worker did not answer in time (`incident_busy`)",
    }
)


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def document_error_bodies(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents its own 422 body (`{"detail": [...]}`); this API answers every error as
    ErrorOut: say so, and drop the unused schemas."""
    error_out = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            invalid = operation.get("responses", {}).get("422")
            if invalid is not None:
                invalid["content"] = error_out
                if invalid.get("description") == "Validation Error":
                    invalid["description"] = "The request is invalid (`invalid_request`)"
    components = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def install_error_handlers(app: FastAPI) -> None:
    for exc_type, (status, code) in ERROR_CODES.items():
        app.add_exception_handler(exc_type, _handler(status, code))

    @app.exception_handler(AuthError)
    async def _denied(request: Request, error: AuthError) -> JSONResponse:
        log.warning(
            "auth.denied",
            principal=error.principal,
            route=f"{request.method} {_route_template(request)}",
            reason=error.reason,
            status=error.status_code,
        )
        headers = {"WWW-Authenticate": "Bearer"} if error.status_code == 401 else None
        return JSONResponse(
            error_body(error.code, str(error)), status_code=error.status_code, headers=headers
        )

    @app.exception_handler(RPCError)
    async def _temporal(request: Request, error: RPCError) -> JSONResponse:
        # A route that reached Temporal without an answer of its own (the engine names most).
        route = f"{request.method} {_route_template(request)}"
        log.warning("temporal.error", route=route, status=error.status.name, error=error.message)
        message = f"Temporal did not answer ({error.message or error.status.name})"
        return JSONResponse(error_body("temporal_error", message), status_code=502)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        if first["type"] == "json_invalid":  # FastAPI's JSONDecodeError, at a character offset
            message = f"{NOT_JSON} ({first['ctx']['error']} at character {first['loc'][-1]})"
        else:
            message = first_problem(error.errors())
        return JSONResponse(error_body("invalid_request", message), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400:
            # FastAPI's one 400 here: json.loads failed other than by JSONDecodeError (nesting
            # too deep for it, bytes that are no text), so the body is as invalid as bad JSON.
            return JSONResponse(error_body("invalid_request", NOT_JSON), status_code=422)
        code = HTTP_CODES.get(error.status_code, f"http_{error.status_code}")
        message = str(error.detail)
        # The router's own words ("Not Found") do not say what was not found.
        if message == "Not Found" and error.status_code == 404:
            message = f"nothing is served at {request.url.path} (the routes are listed at /docs)"
        elif message == "Method Not Allowed" and error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse(error_body(code, message), status_code=error.status_code)


def _route_template(request: Request) -> str:
    """The matched route as declared, with its router prefixes: /v1/incidents/{incident_id}."""
    path = request.url.path
    route = request.scope.get("route")
    template, pattern = getattr(route, "path", None), getattr(route, "path_regex", None)
    if template is None or pattern is None:
        return path
    # The route knows only its own part of the path; what precedes it is the prefixes.
    for index, char in enumerate(path):
        if char == "/" and pattern.match(path[index:]):
            return path[:index] + template
    return template


def _handler(status: int, code: str):
    async def handle(_: Request, error: Exception) -> JSONResponse:
        return JSONResponse(error_body(code, str(error)), status_code=status)

    return handle
