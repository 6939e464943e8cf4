"""For auditors: an incident's Temporal history, its integrity verdict, its post-incident report."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from api.auth import Permission, require
from api.deps import SettingsDep, StoreDep
from api.errors import AUTH_ERRORS, TEMPORAL_ERRORS, documented
from engine.errors import IncidentNotFound
from engine.integrity import verify_incident
from engine.reporting import incident_report
from engine.verification import export_history
from store.seals import engine_public_key

# Everything here is for reading: any valid token (auditors first of all).
router = APIRouter(
    prefix="/incidents",
    tags=["audit"],
    dependencies=[require(Permission.READ)],
    responses={
        **AUTH_ERRORS,
        **documented({404: "No such incident (`incident_not_found`)"}),
        **TEMPORAL_ERRORS,
    },
)


def public_key(request: Request) -> Any:
    """The engine's public key, read once from its signing key (never created here: the worker
    owns it; a missing key is a deployment error, 503)."""
    key = getattr(request.app.state, "public_key", None)
    if key is None:
        path = request.app.state.settings.signing_key_path
        key = request.app.state.public_key = engine_public_key(path)
    return key


@router.get("/{incident_id}/history", summary="The incident's Temporal history, every run")
async def history(incident_id: str, request: Request, store: StoreDep) -> Response:
    # Temporal is asked only about incidents the store knows (its rows may have been deleted).
    if not await asyncio.to_thread(store.knows, incident_id):
        raise IncidentNotFound(f"no incident {incident_id}")
    exported = await export_history(request.app.state.client, incident_id)
    return Response(exported.to_json(), media_type="application/json")


@router.get(
    "/{incident_id}/verify",
    summary="Chain, seals, replay and the board's row: is the record complete?",
)
async def verify(
    incident_id: str,
    request: Request,
    store: StoreDep,
    replay: bool = Query(True, description="Also replay the history and compare audit events"),
) -> JSONResponse:
    integrity = await verify_incident(
        request.app.state.client,
        store,
        public_key(request),
        incident_id,
        replay=replay,
        skipped_because="replay=false",
    )
    return JSONResponse(integrity.as_dict())


@router.get(
    "/{incident_id}/report",
    summary="The post-incident report (md, html or json)",
    responses={
        200: {
            "description": "The report in the format asked for (its chart with `format=svg`)",
            "content": {
                "text/html": {},
                "text/markdown": {},
                "application/json": {},
                "image/svg+xml": {},
            },
        }
    },
)
async def report(
    incident_id: str,
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    format: Literal["md", "html", "json", "svg"] = "html",
) -> Response:
    built = await incident_report(
        request.app.state.client,
        store,
        public_key(request),
        incident_id,
        settings=settings,
        chart_link="report?format=svg",  # relative to this route: the chart below
    )
    if format == "svg":
        return Response(built.svg, media_type="image/svg+xml")
    if format == "json":
        return JSONResponse(json.loads(json.dumps(built.json)))
    if format == "md":
        return PlainTextResponse(built.markdown, media_type="text/markdown")
    return HTMLResponse(built.html)
