"""Dependencies shared by the routes: the running services live on `app.state`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

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
