"""The post-incident report for one incident: the audit trail, the playbook snapshot from the
history, and the integrity verdict, rendered as Markdown (+ SVG chart), HTML or JSON."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from core.settings import Settings
from engine.integrity import check_store, check_with_replay
from engine.report import (
    IncidentReport,
    TimelineEntry,
    build_report,
    render_chart_svg,
    render_html,
    render_json,
    render_markdown,
)
from engine.verification import IncidentHistory, export_history
from store.audit_store import AuditStore
from workflows.incident import IncidentInput
from workflows.playbook import Playbook


@dataclass
class BuiltReport:
    incident_id: str
    markdown: str
    html: str
    json: dict[str, Any]
    svg: str
    chart_name: str
    report: IncidentReport  # to render again (Markdown without its chart, for stdout)


async def timeline_entries(store: AuditStore, incident_id: str) -> list[TimelineEntry]:
    """The incident's timeline so far, one sentence per audit event; empty while a just-triggered
    incident's first events are being written."""
    events = await asyncio.to_thread(store.events, incident_id)
    return build_report(events).timeline if events else []


async def playbook_from_history(history: IncidentHistory) -> Playbook | None:
    """The exact playbook snapshot the incident ran, decoded from its first workflow input."""
    started = history.runs[0].events[0].workflow_execution_started_event_attributes
    if not started.input.payloads:
        return None
    (incident,) = await pydantic_data_converter.decode(started.input.payloads, [IncidentInput])
    return incident.playbook


async def incident_report(
    client: Client | None,
    store: AuditStore,
    public_key: Ed25519PublicKey,
    incident_id: str,
    *,
    settings: Settings,
    now: datetime | None = None,
    chart_link: str | None = None,
) -> BuiltReport:
    """Build every rendering; Markdown links its chart as `chart_link` (default: the SVG file
    name the CLI writes beside it)."""
    integrity, events = check_store(store, incident_id, public_key)
    integrity.replay_skipped = "no Temporal client"
    playbook = None
    if client is not None:
        history = await export_history(client, incident_id)
        integrity = await check_with_replay(integrity, events, history, store=store)
        playbook = await playbook_from_history(history)
    report = build_report(
        events, playbook=playbook, integrity=integrity.verdict(), now=now or datetime.now(UTC)
    )
    chart_name = f"report-{incident_id}.svg"
    return BuiltReport(
        incident_id=incident_id,
        markdown=render_markdown(report, chart_link or chart_name),
        html=render_html(report),
        json=render_json(report),
        svg=render_chart_svg(report),
        chart_name=chart_name,
        report=report,
    )
