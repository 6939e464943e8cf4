"""The HTTP API under /v1 (OpenAPI at /docs). Its lifespan connects Temporal and the audit store,
and by default runs a worker in-process so triggers start eagerly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI

from api.errors import document_error_bodies, install_error_handlers
from api.routes import audit, board, health, incidents, playbooks, timeline, tokens
from api.web import routes as console
from core.heap import freeze_startup_heap
from core.settings import Settings, get_settings
from engine.incidents import Incidents
from engine.temporal import connect, running_worker
from store.audit_store import AuditStore
from store.tokens import TokenStore

log = structlog.get_logger(__name__)


def create_app(settings: Settings | None = None, *, freeze_heap: bool = False) -> FastAPI:
    """The API app. `freeze_heap`: the app is the process (`crisis api`), so what it loaded to
    start is put out of the collector's reach once it is ready (core.heap)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            store = AuditStore(settings.resolved_database_url)
            stack.callback(store.dispose)
            client = await connect(settings)
            if settings.api_embedded_worker:
                await stack.enter_async_context(
                    running_worker(client, settings=settings, store=store)
                )
            app.state.settings, app.state.client, app.state.store = settings, client, store
            app.state.tokens = TokenStore(store.engine)  # one pool for audit and tokens
            app.state.incidents = Incidents(client, settings)
            if freeze_heap:
                freeze_startup_heap()
            log.info(
                "api.ready",
                temporal=settings.temporal_address,
                embedded_worker=settings.api_embedded_worker,
            )
            yield

    app = FastAPI(
        title="Crisis response engine",
        version="0.1.0",
        lifespan=lifespan,
        description="Trigger crisis playbooks, follow incidents, stand them down, read audits.",
    )
    v1 = APIRouter(prefix="/v1")
    v1.include_router(health.router)
    v1.include_router(playbooks.router)
    v1.include_router(board.router)
    v1.include_router(incidents.router)
    v1.include_router(timeline.router)
    v1.include_router(audit.router)
    v1.include_router(tokens.router)
    app.include_router(v1)
    app.include_router(console.router)  # the web console: /console, server-rendered
    install_error_handlers(app)
    documented_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_error_bodies(documented_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
