"""Dependencies shared by the routes: the running services live on `app.state`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from core.settings import Settings
from engine.incidents import Incidents
from store.audit_store import AuditStore


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_incidents(request: Request) -> Incidents:
    return request.app.state.incidents


def get_store(request: Request) -> AuditStore:
    return request.app.state.store


SettingsDep = Annotated[Settings, Depends(get_settings)]
IncidentsDep = Annotated[Incidents, Depends(get_incidents)]
StoreDep = Annotated[AuditStore, Depends(get_store)]
