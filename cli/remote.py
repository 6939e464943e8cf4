"""The CLI's commander commands against a remote API (`--api URL`, token in `CRISIS_TOKEN`).

Direct mode talks to Temporal and names the actor itself; remote mode acts as the token's
principal, exactly as the web console does, so the API enforces roles and separation of duties.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel

from cli.output import CliError
from engine.board import BoardPage
from engine.errors import (
    ActionInvalid,
    IncidentBusy,
    IncidentConflict,
    IncidentNotFound,
    require_incident_id,
)
from workflows.incident import IncidentStatus, StepRecord

# Each commander action (a key of engine.incidents.ACTIONS): its route and what it answers.
ROUTES: dict[str, tuple[str, type[BaseModel]]] = {
    "approve": ("approve", StepRecord),
    "reject": ("reject", StepRecord),
    "escalate": ("escalate", IncidentStatus),
    "de-escalate": ("de-escalate", IncidentStatus),
    "renew": ("renew", StepRecord),
    "restore": ("restore", StepRecord),
    "confirm-review": ("confirm-review", IncidentStatus),
    "note": ("notes", IncidentStatus),
    "stand-down": ("stand-down", IncidentStatus),
}
# API error codes the CLI reports as the engine's own errors (same wording, same exit).
_ENGINE_ERRORS: dict[str, type[Exception]] = {
    "incident_not_found": IncidentNotFound,
    "incident_conflict": IncidentConflict,
    "action_invalid": ActionInvalid,
    "incident_busy": IncidentBusy,
}


# The request went out and no answer came back (the connection dropped, or the answer took too
# long): the API may have acted on it.
_SENT = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError)


class RemoteError(CliError):
    """The API refused the request or could not be reached."""


class RemoteApi:
    """Calls to the HTTP API as the token's principal; its refusals become the CLI's errors."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0) -> None:
        if not token:
            raise RemoteError("--api needs a token: set CRISIS_TOKEN (see `crisis tokens create`)")
        self._base = base_url.rstrip("/")
        if not self._base.endswith("/v1"):
            self._base += "/v1"
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = timeout

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """One request under /v1; the decoded JSON answer."""
        return await self._call(method, path, body, params=params)

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        url = self._base + path
        try:
            async with httpx.AsyncClient(
                timeout=timeout or self._timeout, headers=self._headers
            ) as http:
                response = await http.request(method, url, json=body, params=params)
        except _SENT as error:
            said = str(error) or type(error).__name__
            if method == "GET":
                raise RemoteError(f"no answer from the API at {self._base}: {said}") from None
            check = (
                "the board (crisis incidents) before triggering again"
                if path == "/incidents"
                else "the incident's status before sending it again"
            )
            raise RemoteError(
                f"no answer from the API at {self._base} ({said}): it may have carried the request "
                f"out all the same: check {check}"
            ) from None
        except httpx.HTTPError as error:
            raise RemoteError(f"cannot reach the API at {self._base}: {error}") from None
        if response.is_success:
            return response.json()
        try:
            error = response.json()["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            code, message = f"http_{response.status_code}", response.text[:200]
        if code in _ENGINE_ERRORS:
            raise _ENGINE_ERRORS[code](message)
        raise RemoteError(f"API refused ({response.status_code} {code}): {message}")


class RemoteIncidents(RemoteApi):
    """Trigger, read and act on incidents through the HTTP API as the token's principal."""

    async def trigger(
        self,
        playbook: str,
        inputs: dict[str, Any],
        *,
        incident_id: str | None = None,
        level: str | None = None,
    ) -> dict[str, Any]:
        body = {"playbook": playbook, "inputs": inputs, "incident_id": incident_id, "level": level}
        # An empty id is sent as given: the API refuses it, as direct mode does.
        given = {k: v for k, v in body.items() if v is not None and v != {}}
        return await self._call("POST", "/incidents", given)

    async def status(self, incident_id: str) -> IncidentStatus:
        path = _incident_path(incident_id)
        return IncidentStatus.model_validate(await self._call("GET", path))

    async def board(self, filters: dict[str, Any]) -> BoardPage:
        query = {k: v for k, v in filters.items() if v is not None}
        return BoardPage.model_validate(await self._call("GET", "/incidents", params=query))

    async def act(self, incident_id: str, action: str, fields: dict[str, Any]) -> BaseModel:
        route, answer = ROUTES[action]
        body = {k: v for k, v in fields.items() if k != "actor" and v is not None}
        # The API waits for a busy incident to answer (CRISIS_ACTION_TIMEOUT, 60 s by default).
        answered = await self._call(
            "POST", f"{_incident_path(incident_id)}/{route}", body, timeout=max(self._timeout, 90.0)
        )
        return answer.model_validate(answered)


def _incident_path(incident_id: str) -> str:
    """The incident's path under /v1; an id no incident can have is refused here, as in direct
    mode (in a URL it named another route, or none)."""
    require_incident_id(incident_id)
    return f"/incidents/{incident_id}"
