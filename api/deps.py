"""Dependencies shared by the routes: the running services live on `app.state`."""

from __future__ import annotations

from typing import Annotated, Any, NoReturn, get_args, get_origin

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError

from core.settings import Settings
from engine.incidents import Incidents
from store.audit_store import AuditStore
from store.tokens import TokenStore


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_incidents(request: Request) -> Incidents:
    return request.app.state.incidents


def get_store(request: Request) -> AuditStore:
    return request.app.state.store


def get_tokens(request: Request) -> TokenStore:
    return request.app.state.tokens


SettingsDep = Annotated[Settings, Depends(get_settings)]
IncidentsDep = Annotated[Incidents, Depends(get_incidents)]
StoreDep = Annotated[AuditStore, Depends(get_store)]
TokensDep = Annotated[TokenStore, Depends(get_tokens)]


def known_query(request: Request) -> None:
    """Refuse a query parameter the route does not take, or one given twice that takes one
    value: a misspelt filter (`?stat=failed`) would otherwise be ignored, and a repeated one
    (`?state=all&state=failed`) answered for its last value, each answer looking like what was
    asked for."""
    route = request.scope.get("route")
    dependant: Dependant | None = getattr(route, "dependant", None)
    if dependant is None:
        return
    taken: dict[str, bool] | None = getattr(route, "query_taken", None)
    if taken is None:
        taken = _query_names(dependant)
        route.query_taken = taken  # type: ignore[union-attr]  # read once per route
    for name in request.query_params:
        if name not in taken:
            shown = ", ".join(sorted(taken)) or "none"
            _refuse(request, name, f"not a parameter of this route (it takes: {shown})")
        if not taken[name] and len(given := request.query_params.getlist(name)) > 1:
            _refuse(request, name, f"given {len(given)} times; it takes one value")


def _refuse(request: Request, name: str, why: str) -> NoReturn:
    raise RequestValidationError(
        [
            {
                "type": "extra_forbidden",
                "loc": ("query", name),
                "msg": why,
                "input": request.query_params[name],
            }
        ]
    )


def _query_names(dependant: Dependant) -> dict[str, bool]:
    """The query parameters a route takes, its dependencies' included: whether each takes
    several values."""
    names = {field.alias: _many(field.field_info.annotation) for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _many(annotation: Any) -> bool:
    """Whether a parameter's type is a sequence (`list[str]`, `list[str] | None`, ...)."""
    origin = get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    return any(_many(arg) for arg in get_args(annotation)) if origin is not None else False
