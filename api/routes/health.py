"""Liveness and readiness: Temporal reachable, a worker polling, audit store answering."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlmodel import Session

from api.deps import known_query
from engine.workers import temporal_problem, worker_presence

router = APIRouter(tags=["health"], dependencies=[Depends(known_query)])


_HEALTH = {
    "content": {
        "application/json": {
            "example": {
                "status": "ok",
                "checks": {"temporal": "ok", "workers": "ok", "audit_store": "ok"},
            }
        }
    }
}


@router.get(
    "/health",
    responses={
        200: {"description": "Every check is ok", **_HEALTH},
        503: {"description": "`degraded`: a check is not ok, and says why", **_HEALTH},
    },
)
async def health(request: Request) -> JSONResponse:
    checks: dict[str, str] = {}
    if (problem := await temporal_problem(request.app.state.client)) is not None:
        checks["temporal"] = f"unavailable: {problem}"
        checks["workers"] = "unknown: Temporal did not answer"
    else:
        checks["temporal"] = "ok"
        # Triggers are accepted without a worker, and then nothing happens on the platform.
        try:
            presence = await asyncio.wait_for(
                worker_presence(request.app.state.client, request.app.state.settings.task_queue),
                timeout=3,
            )
            checks["workers"] = presence.problem() or "ok"
        except Exception as error:
            checks["workers"] = f"unknown: {_said(error)}"

    def ping_store() -> None:
        with Session(request.app.state.store.engine) as session:
            session.exec(text("SELECT 1"))

    try:
        await asyncio.to_thread(ping_store)
        checks["audit_store"] = "ok"
    except Exception as error:
        checks["audit_store"] = f"unavailable: {_said(error)}"
    healthy = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ok" if healthy else "degraded", "checks": checks},
        status_code=200 if healthy else 503,
    )


def _said(error: Exception) -> str:
    # A timeout says nothing of itself (its message is empty): name it.
    return str(error) or (
        "no answer within 3 s" if isinstance(error, TimeoutError) else type(error).__name__
    )
