"""The platform sandbox: the control API of docs/platform-api.md over real in-memory state.

Routes are thin: they parse the request, then run one pure `PlatformState` operation under an
asyncio lock (so idempotency checks and applies are atomic). Fault injection is a middleware so
it hits every platform path, known or not, before any work is done.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.settings import get_settings
from core.signing import SignatureInvalid, verify
from sandbox.state import (
    AdHoldRestore,
    ExcludeUnreviewedRestore,
    FaultSpec,
    HashBlockRestore,
    HashShareRestore,
    LivestreamRestore,
    MatchSanctionRestore,
    PlatformError,
    PlatformState,
    SuppressionRestore,
    SurgeRestore,
    ThresholdRestore,
    ThrottleRestore,
    Trace,
    WarningRestore,
    fingerprint,
)
from workflows.levers import (
    ExcludeUnreviewedArgs,
    HashBlockArgs,
    HashShareArgs,
    HoldNewAdvertisersArgs,
    LivestreamArgs,
    SanctionOnMatchArgs,
    ShowWarningArgs,
    SuppressSuggestionsArgs,
    SurgeArgs,
    ThresholdArgs,
    ThrottleArgs,
)

log = structlog.get_logger("sandbox")

# Sandbox-only endpoints: never faulted, never counted as platform requests.
SANDBOX_PATHS = frozenset({"/state", "/faults", "/reset", "/health"})


@dataclass
class Sandbox:
    """The app's mutable core: the state, the lock guarding it, the webhook secret."""

    webhook_secret: str
    state: PlatformState = field(default_factory=PlatformState)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _describe(exc: ValidationError | RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {err['msg']}" if loc else str(err["msg"]))
    return "; ".join(parts) or "invalid request"


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlatformError(400, f"body is not valid JSON: {exc}") from exc


def _signature_ok(secret: str, raw: bytes, headers: Mapping[str, str]) -> bool:
    """Whether the body carries a valid, fresh signature (core.signing's scheme)."""
    try:
        verify(secret, headers, raw)
    except SignatureInvalid:
        return False
    return True


# An operation on the state given the parsed body; pydantic errors in it are answered as 422.
Apply = Callable[[PlatformState, Any], dict[str, Any]]


async def _mutate(sandbox: Sandbox, request: Request, apply: Apply) -> JSONResponse:
    """Run one mutation with the idempotency contract: key required, replay, mismatch = 422."""
    key = request.headers.get("idempotency-key", "").strip()
    if not key:
        raise PlatformError(400, "missing Idempotency-Key header")
    path = request.url.path
    body = _parse_json(await request.body())
    print_ = fingerprint(request.method, path, body)
    trace = Trace(
        request.headers.get("x-incident-id"),
        request.headers.get("x-step-id"),
        request.headers.get("x-operation"),
    )
    async with sandbox.lock:
        # Read under the lock: /reset swaps the state object.
        state = sandbox.state
        if getattr(request.state, "platform", state) is not state:
            # Admitted by the platform that /reset replaced (a delayed request, say): applying it
            # now would leak the old platform's traffic into the fresh one.
            raise PlatformError(409, "the sandbox was reset while this request was in flight")
        hit = state.cached(key, print_)
        if hit is not None:
            state.stats.replayed += 1
            log.info("sandbox.replayed", key=key, path=path)
            return JSONResponse(
                hit.body, status_code=hit.status, headers={"Idempotent-Replayed": "true"}
            )
        # A refused apply raises here, so nothing is cached and a corrected retry can succeed.
        response = apply(state, body)
        duplicate = state.record_application(
            key=key, print_=print_, trace=trace, path=path, response=response, at=_now_iso()
        )
    log.info("sandbox.applied", key=key, path=path, duplicate=duplicate)
    return JSONResponse(response)


def _install_error_handlers(app: FastAPI) -> None:
    """Answer every refusal as `{"error": "..."}`."""

    @app.exception_handler(PlatformError)
    async def platform_error(_: Request, exc: PlatformError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(ValidationError)
    async def validation_error(_: Request, exc: ValidationError) -> JSONResponse:
        return _error(422, _describe(exc))

    @app.exception_handler(RequestValidationError)
    async def request_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _describe(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))


def _install_fault_middleware(app: FastAPI, sandbox: Sandbox) -> None:
    """Count platform requests and apply the fault rules before any route runs."""

    @app.middleware("http")
    async def faults(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        if path in SANDBOX_PATHS:
            return await call_next(request)
        async with sandbox.lock:
            admitted = sandbox.state
            admitted.stats.requests += 1
            operation = request.headers.get("x-operation", "")
            decision = admitted.match_faults(path, time.monotonic(), operation)
        request.state.platform = admitted
        if decision.fired:
            log.info(
                "sandbox.fault",
                key=request.headers.get("idempotency-key"),
                path=path,
                status=decision.status,
                latency_ms=decision.latency_ms,
            )
        if decision.latency_ms:
            # Take the whole request first: a platform that has it applies it even if the caller
            # hangs up while it works (the lost answer that idempotency keys exist for).
            await request.body()
            # Sleep outside the lock: a slow request must not stall the others.
            await asyncio.sleep(decision.latency_ms / 1000)
        if decision.status:
            return _error(decision.status, f"injected fault on {path}")
        return await call_next(request)


# Each reversible lever: its path, how to apply it and how to restore what it replaced.
LEVER_ROUTES: tuple[tuple[str, str, type[BaseModel], str, type[BaseModel]], ...] = (
    ("/recommender/throttle", "apply_throttle", ThrottleArgs, "restore_throttle", ThrottleRestore),
    (
        "/detection/threshold",
        "apply_threshold",
        ThresholdArgs,
        "restore_threshold",
        ThresholdRestore,
    ),
    ("/moderation/surge", "apply_surge", SurgeArgs, "restore_surge", SurgeRestore),
    (
        "/recommender/exclude-unreviewed",
        "apply_exclude_unreviewed",
        ExcludeUnreviewedArgs,
        "restore_exclude_unreviewed",
        ExcludeUnreviewedRestore,
    ),
    (
        "/livestream/restrict",
        "apply_livestream",
        LivestreamArgs,
        "restore_livestream",
        LivestreamRestore,
    ),
    (
        "/hashes/lists/block",
        "apply_hash_block",
        HashBlockArgs,
        "restore_hash_block",
        HashBlockRestore,
    ),
    (
        "/ads/hold-new-advertisers",
        "apply_ad_hold",
        HoldNewAdvertisersArgs,
        "restore_ad_hold",
        AdHoldRestore,
    ),
    (
        "/accounts/sanction-on-match",
        "apply_match_sanction",
        SanctionOnMatchArgs,
        "restore_match_sanction",
        MatchSanctionRestore,
    ),
    (
        "/search/suppress-suggestions",
        "apply_suppress_suggestions",
        SuppressSuggestionsArgs,
        "restore_suppress_suggestions",
        SuppressionRestore,
    ),
    (
        "/hashes/lists/share",
        "apply_hash_share",
        HashShareArgs,
        "restore_hash_share",
        HashShareRestore,
    ),
    ("/warnings/show", "apply_warning", ShowWarningArgs, "restore_warning", WarningRestore),
)


def _mutation_route(
    app: FastAPI, sandbox: Sandbox, path: str, method: str, model: type[BaseModel]
) -> None:
    async def route(request: Request) -> JSONResponse:
        return await _mutate(
            sandbox, request, lambda s, b: getattr(s, method)(model.model_validate(b))
        )

    app.add_api_route(path, route, methods=["POST"], name=method)


def _install_lever_routes(app: FastAPI, sandbox: Sandbox) -> None:
    for path, apply, args, restore, previous in LEVER_ROUTES:
        _mutation_route(app, sandbox, path, apply, args)
        _mutation_route(app, sandbox, f"{path}/restore", restore, previous)

    @app.post("/notify/webhooks/{stakeholder}")
    async def webhook(stakeholder: str, request: Request) -> JSONResponse:
        raw = await request.body()
        signature = request.headers.get("x-crisis-signature")
        # The HMAC covers the raw bytes, so verify before parsing; a bad one is stored, not refused.
        valid = _signature_ok(sandbox.webhook_secret, raw, request.headers)
        key = request.headers.get("idempotency-key", "").strip()
        return await _mutate(
            sandbox,
            request,
            lambda s, b: s.receive_notification(
                stakeholder=stakeholder,
                body=b,
                signature=signature,
                signature_valid=valid,
                received_at=_now_iso(),
                idempotency_key=key,
            ),
        )


def _install_sandbox_routes(app: FastAPI, sandbox: Sandbox) -> None:
    @app.get("/state")
    async def get_state() -> dict[str, Any]:
        async with sandbox.lock:
            return sandbox.state.snapshot(time.monotonic())

    @app.post("/faults")
    async def add_fault(spec: FaultSpec) -> dict[str, Any]:
        now = time.monotonic()
        async with sandbox.lock:
            sandbox.state.add_fault(spec, now)
            return {"faults": [r.as_dict(now) for r in sandbox.state.faults if r.active(now)]}

    @app.delete("/faults")
    async def clear_faults() -> dict[str, int]:
        async with sandbox.lock:
            return {"cleared": sandbox.state.clear_faults()}

    @app.post("/reset")
    async def reset() -> dict[str, bool]:
        async with sandbox.lock:
            sandbox.state = PlatformState()
        log.info("sandbox.reset")
        return {"reset": True}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}


def create_app(*, webhook_secret: str | None = None) -> FastAPI:
    """Build the sandbox app with fresh initial state.

    Args:
        webhook_secret: Secret webhook signatures are verified against; defaults to the
            `CRISIS_WEBHOOK_SECRET` setting.

    Returns:
        The FastAPI application.
    """
    secret = webhook_secret if webhook_secret is not None else get_settings().webhook_secret
    sandbox = Sandbox(webhook_secret=secret)
    app = FastAPI(title="Crisis platform sandbox", docs_url=None, redoc_url=None)
    app.state.sandbox = sandbox
    _install_error_handlers(app)
    _install_fault_middleware(app, sandbox)
    _install_lever_routes(app, sandbox)
    _install_sandbox_routes(app, sandbox)
    return app
