"""The web console for incident commanders: server-rendered pages under /console, served by the
API process and calling the engine directly as the signed-in principal.

Every POST is a form that redirects back (POST/redirect/GET) with a one-line flash, or, refused,
shows its page again with the reason and what was typed; the actor is always the principal,
never a form field. Cross-site POSTs are refused three times over: the
cookie is SameSite=Strict, `identify` checks the Origin, and each form carries a CSRF token
derived from the session.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from api.approvers import approver_role
from api.auth import Forbidden, Permission, Principal, same_site
from api.deps import get_incidents, get_settings, get_store
from api.routes.audit import public_key
from api.web.errors import ConsoleRoute, error_page
from api.web.forms import (
    ACTION_FORMS,
    ActionRefused,
    action_fields,
    build_request,
    input_fields,
    inputs_from_form,
)
from api.web.render import STATIC_DIR, STATIC_FILES, moment_text, render
from api.web.session import (
    CONSOLE,
    CSRF_FIELD,
    Flash,
    check_csrf,
    clear_session,
    read_form,
    safe_next,
    set_flash,
    set_session,
    signed_in,
)
from api.web.views import Typed, incident_view
from core.settings import Settings
from engine.board import board_page
from engine.errors import IncidentConflict, LibraryError, PlaybookError
from engine.incidents import ACTIONS, not_restored, undelivered
from engine.integrity import verify_incident
from engine.overlap import refuse_if_later_overlaps, refuse_restore_if_later_overlaps
from engine.playbook_files import library_playbook, load_playbook, playbook_files
from engine.reporting import timeline_entries
from store.errors import RevokedToken, TokenError
from store.tokens import TokenStore
from workflows.incident import IncidentStatus, StepRecord
from workflows.playbook import InputError, Playbook

log = structlog.get_logger(__name__)

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
SignedIn = Annotated[Principal, Depends(signed_in)]

BOARD_STATES = {"open": "Open", "all": "All", "closed": "Closed"}
BOARD_PAGE_SIZE = 25
MAX_OFFSET = 1_000_000


def refuse_cross_site(request: Request) -> None:
    """For the form posted before there is a session (sign-in); the others have `signed_in`."""
    if not same_site(request):
        raise Forbidden(
            "cross-site request refused: sign in from this site's own page",
            reason="cross-site sign-in",
        )


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


# --- the playbook library ---------------------------------------------------------------------
@dataclass(frozen=True)
class Library:
    playbooks: list[Playbook]
    problems: list[str]  # files that could not be read, one line each


def read_library(settings: Settings) -> Library:
    playbooks, problems = [], []
    for path in playbook_files(settings.playbooks_dir):
        try:
            playbooks.append(load_playbook(path, settings.playbooks_dir))
        except PlaybookError as error:
            problems.append(str(error))
    return Library(sorted(playbooks, key=lambda p: p.playbook), problems)


def named_playbook(name: str, settings: Settings) -> Playbook:
    library = settings.playbooks_dir
    return load_playbook(library_playbook(name, library), library)


# --- pages ------------------------------------------------------------------------------------
@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse(CONSOLE, status_code=307)


@router.get("/console/static/{name}")
async def static(name: str, request: Request) -> Response:
    if name not in STATIC_FILES:
        return error_page(request, 404, "Not found", f"no file {name!r} in the console")
    return FileResponse(
        STATIC_DIR / name,
        media_type=STATIC_FILES[name],
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/console/sign-in")
async def sign_in_page(request: Request, next: str = CONSOLE) -> Response:
    return render(request, "sign_in.html.j2", next_path=safe_next(next), error=None)


@router.post("/console/sign-in")
async def sign_in(request: Request) -> Response:
    refuse_cross_site(request)
    form = await read_form(request)
    token, next_path = form.get("token", "").strip(), safe_next(form.get("next"))
    tokens: TokenStore = request.app.state.tokens
    error = "paste your API token to sign in"
    if token:
        try:
            found = await asyncio.to_thread(tokens.verify, token)
        except RevokedToken as revoked:
            error = "that token was revoked: ask an admin for a new one"
            log.warning("console.sign_in_refused", principal=revoked.principal, reason="revoked")
        except TokenError:
            error = "unknown token: check that you pasted all of it"
            log.warning("console.sign_in_refused", reason="unknown token")
        else:
            log.info("console.signed_in", principal=found.name, roles=list(found.roles))
            response = redirect(next_path)
            set_session(response, request, token)
            return response
    return render(request, "sign_in.html.j2", status_code=401, next_path=next_path, error=error)


@router.post("/console/sign-out")
async def sign_out(request: Request, principal: SignedIn) -> Response:
    # A forged sign-out would be only a nuisance, but it is refused as every other form is.
    form = await read_form(request)
    check_csrf(request, form, principal)
    response = redirect("/console/sign-in")
    clear_session(response, request)
    set_flash(response, request, "ok", "signed out")
    return response


@router.get("/console")
async def board(
    request: Request,
    principal: SignedIn,
    state: str = "open",
    playbook: str = "",
    offset: str = "0",
) -> Response:
    """Every incident at a glance; the page refreshes itself (console.js) every few seconds."""
    state = state if state in BOARD_STATES else "open"
    # isdecimal alone takes other scripts' digits, which int() refuses ("²" isdigit, too).
    start = min(int(offset), MAX_OFFSET) if offset.isascii() and offset.isdecimal() else 0
    playbook = playbook[:64]  # playbook names are at most 64 characters
    settings, store = get_settings(request), get_store(request)
    page = await asyncio.to_thread(
        board_page,
        store,
        state=state,  # type: ignore[arg-type]
        playbook=playbook or None,
        limit=BOARD_PAGE_SIZE,
        offset=start,
    )
    library = await asyncio.to_thread(read_library, settings)
    return render(
        request,
        "board.html.j2",
        page=page,
        state=state,
        states=BOARD_STATES,
        playbook=playbook,
        playbook_names=[p.playbook for p in library.playbooks],
        previous_offset=max(start - BOARD_PAGE_SIZE, 0) if start else None,
    )


@router.get("/console/trigger")
async def playbook_picker(request: Request, principal: SignedIn) -> Response:
    # Everyone may read the library; only those who command see its trigger buttons.
    library = await asyncio.to_thread(read_library, get_settings(request))
    return render(request, "playbooks.html.j2", library=library)


@router.get("/console/trigger/{name}")
async def trigger_form(name: str, request: Request, principal: SignedIn) -> Response:
    principal.require(Permission.COMMAND)
    playbook = await asyncio.to_thread(named_playbook, name, get_settings(request))
    return _trigger_page(request, playbook, posted=None, error=None)


def _trigger_page(
    request: Request,
    playbook: Playbook,
    *,
    posted: dict[str, str] | None,
    error: str | None,
    status_code: int = 200,
) -> Response:
    level = (posted or {}).get("level") or (playbook.levels[0] if playbook.levels else "")
    return render(
        request,
        "trigger.html.j2",
        status_code=status_code,
        playbook=playbook,
        fields=input_fields(playbook, posted),
        level=level,
        error=error,
    )


@router.post("/console/trigger/{name}")
async def trigger(name: str, request: Request, principal: SignedIn) -> Response:
    principal.require(Permission.COMMAND)
    form = await read_form(request)
    check_csrf(request, form, principal)
    settings = get_settings(request)
    playbook = await asyncio.to_thread(named_playbook, name, settings)
    try:
        triggered = await get_incidents(request).trigger(
            playbook.playbook,
            inputs_from_form(playbook, form),
            actor=principal.name,
            level=form.get("level") or None,
            eager=settings.api_embedded_worker,
        )
    except InputError as error:
        return _trigger_page(request, playbook, posted=form, error=str(error), status_code=422)
    except LibraryError as error:  # the deployment's templates or directory, not the form
        return _trigger_page(request, playbook, posted=form, error=str(error), status_code=503)
    log.info(
        "console.triggered",
        incident_id=triggered.incident_id,
        playbook=triggered.playbook,
        principal=principal.name,
    )
    response = redirect(f"/console/incidents/{triggered.incident_id}")
    done = f"triggered {triggered.playbook} v{triggered.version} as {triggered.incident_id}"
    if triggered.warnings:
        set_flash(response, request, "warning", f"{done}, but {'; '.join(triggered.warnings)}")
    else:
        set_flash(response, request, "ok", done)
    return response


@router.get("/console/incidents/{incident_id}")
async def incident_page(incident_id: str, request: Request, principal: SignedIn) -> Response:
    return await _incident_page(request, incident_id, principal)


async def _incident_page(
    request: Request,
    incident_id: str,
    principal: Principal,
    *,
    refused: tuple[int, str, Typed] | None = None,
) -> Response:
    """The incident page; `refused`: an action was refused (its status code, why, and what was
    typed into its form, shown again)."""
    status, roles, timeline = await asyncio.gather(
        get_incidents(request).status(incident_id),
        get_incidents(request).approval_roles(incident_id),
        timeline_entries(get_store(request), incident_id),
    )
    code, flash, typed = (
        (refused[0], Flash(kind="error", text=refused[1]), refused[2])
        if refused
        else (200, None, None)
    )
    view = incident_view(
        status, principal, approval_roles=roles or {}, timeline=timeline, typed=typed
    )
    return render(request, "incident.html.j2", status_code=code, flash=flash, view=view, s=status)


@router.post("/console/incidents/{incident_id}/{action}")
async def act(incident_id: str, action: str, request: Request, principal: SignedIn) -> Response:
    """One commander action, as the principal; back to the incident with what happened."""
    if action not in ACTION_FORMS:
        return error_page(request, 404, "Not found", f"no action {action!r} in the console")
    if action not in ("approve", "reject"):  # approvers need a role the step accepts instead
        principal.require(Permission.COMMAND)
    form = await read_form(request)
    check_csrf(request, form, principal)
    response = redirect(f"/console/incidents/{incident_id}")
    try:
        fields = action_fields(action, form)
        if action in ("approve", "reject"):
            fields["role"] = await approver_role(
                get_incidents(request),
                incident_id,
                fields["step_id"],
                principal,
                role=form.get("role") or None,
                verb="approve" if action == "approve" else "reject",
            )
        if action == "stand-down" and form.get("confirm") != "yes":
            raise ActionRefused("stand-down: tick the box to confirm that every measure is undone")
        if action == "restore":  # which button: retry the undo, or record a restore by hand
            fields["by_hand"] = form.get("by_hand") == "yes"
            await refuse_restore_if_later_overlaps(
                get_store(request),
                get_incidents(request),
                incident_id,
                fields["step_id"],
                by_hand=fields["by_hand"],
            )
        if action == "stand-down":
            fields["force"] = form.get("force") == "yes"
            if not fields["force"]:
                await refuse_if_later_overlaps(get_store(request), incident_id)
        update, model = ACTIONS[action]
        result = await get_incidents(request).act(
            incident_id, update, build_request(model, fields, actor=principal.name)
        )
    except (ActionRefused, IncidentConflict) as error:
        log.info(
            "console.action_refused",
            incident_id=incident_id,
            action=action,
            principal=principal.name,
            reason=str(error),
        )
        # The page again, not a redirect: the form keeps what was typed into it.
        typed = Typed(action, {k: v for k, v in form.items() if k != CSRF_FIELD})
        # As the API answers: 409 for what the incident cannot take now, 422 for the form.
        code = 409 if type(error) is IncidentConflict else 422
        return await _incident_page(
            request, incident_id, principal, refused=(code, str(error), typed)
        )
    log.info("console.action", incident_id=incident_id, action=action, principal=principal.name)
    left = not_restored(result) if action == "stand-down" else None
    unsent = undelivered(result) if action == "stand-down" else None
    if left is not None:  # a stand-down that could not put everything back
        now = "standing down" if result.state == "standing_down" else "stood down"
        also = f"; and {unsent}" if unsent else ""
        set_flash(response, request, "warning", f"{now}, but {left}{also}")
    elif unsent is not None:
        set_flash(response, request, "warning", f"stood down, but {unsent}")
    elif isinstance(result, StepRecord) and result.state == "undo_failed":  # a retried undo
        why = result.error or "no reason given"
        set_flash(response, request, "warning", f"the undo of {result.id} failed again: {why}")
    else:
        set_flash(response, request, "ok", _done(action, fields, result))
    return response


def _done(action: str, fields: dict[str, Any], result: Any) -> str:
    """One line saying what the action did, from the workflow's answer."""
    if isinstance(result, StepRecord):
        if action == "approve":
            given, quorum = len(result.approvals), result.quorum or 1
            reached = ": quorum reached, it runs now" if given >= quorum else ""
            return f"approved {result.id}: {given} of {quorum}{reached}"
        if action == "reject":
            return f"rejected {result.id}: it is skipped"
        if action == "restore":
            how = "taken back on the platform"
            if fields["by_hand"]:
                how = "recorded as restored by hand"
            return f"{result.id} {how} (now {result.state})"
        return f"renewed {result.id} for {fields['duration']} from now"
    status: IncidentStatus = result
    match action:
        case "escalate" | "de-escalate":
            return f"{action}d to {status.level}"
        case "confirm-review":
            return f"review confirmed: the next is due {moment_text(status.next_review_due)}"
        case "note":
            return "note added"
        case _ if status.state == "closed":
            return "stood down: every measure is undone and the incident is closed"
        case _:
            return "standing down: the measures are being undone"


@router.get("/console/incidents/{incident_id}/audit")
async def audit_page(incident_id: str, request: Request, principal: SignedIn) -> Response:
    """The integrity verdict (chain, seals, replay, the board's row) and the way to the
    post-incident report."""
    integrity = await verify_incident(
        request.app.state.client, get_store(request), public_key(request), incident_id
    )
    return render(
        request,
        "audit.html.j2",
        incident_id=incident_id,
        integrity=integrity,
        verdict=integrity.verdict(),
    )
