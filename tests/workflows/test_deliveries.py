"""notify.send through the interpreter: one delivery activity per channel of the stakeholder,
each recorded with its message id; a channel that fails is recorded and shown, never silent, and
only a stakeholder nobody could reach fails the step."""

from __future__ import annotations

import asyncio
import email
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.client import Client

from core.net import free_port
from core.settings import Settings
from engine.board import board_page
from engine.incidents import Incidents
from engine.temporal import running_worker
from store.audit_store import AuditStore
from tests.activities.receivers import Inbox, WebhookReceiver, serving_on, smtp_server
from tests.helpers import assert_eventually, serve_app
from workflows.incident import IncidentStatus, StepRecord

SECRET_ENV = "TEST_REGULATOR_HOOK_SECRET"
TEMPLATES = """\
crisis-opened:
  subject: "Crisis protocol activated: {{ playbook.title }}"
  body: "Incident {{ incident.id }} opened by {{ incident.triggered_by }} in {{ inputs.region }}."
"""
PLAYBOOK = """\
playbook: tell-regulator
version: 1
title: Tell the regulator
description: For tests.
inputs:
  region: {type: string, default: GB}
steps:
  - id: tell
    do: notify.send
    with: {to: regulator, template: crisis-opened, severity: critical}
    retry: {max_attempts: ATTEMPTS, initial_interval: 100ms, max_interval: 200ms}
    timeout: 5s
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 2}
"""


@dataclass
class Directory:
    """A playbook library of its own: the playbook, templates, and a regulator with channels."""

    path: Path

    def write(self, channels: str, *, attempts: int = 2) -> Path:
        (self.path / "templates.yaml").write_text(TEMPLATES)
        (self.path / "stakeholders.yaml").write_text(
            "regulator:\n  name: Regulator\n  kind: external\n  channels:\n" + channels
        )
        playbook = self.path / "tell-regulator.yaml"
        playbook.write_text(PLAYBOOK.replace("ATTEMPTS", str(attempts)))
        return playbook


@pytest.fixture
def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Directory:
    monkeypatch.setenv(SECRET_ENV, "regulator-hook-secret")
    return Directory(tmp_path)


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    box = Inbox()
    with smtp_server(box) as port:
        yield box, port


def mail_settings(settings: Settings, port: int) -> Settings:
    return settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_starttls": False,
            "smtp_from": "crisis@platform.example",
        }
    )


async def settled(incidents: Incidents, incident_id: str, step_id: str) -> StepRecord:
    async def done() -> StepRecord:
        status: IncidentStatus = await incidents.status(incident_id)
        record = next(s for s in status.steps if s.id == step_id)
        assert record.state in ("applied", "kept", "failed"), record.state
        return record

    return await assert_eventually(done, timeout=30)


async def test_every_channel_gets_its_own_delivery_and_a_dead_one_is_shown(
    client: Client,
    settings: Settings,
    sqlite_store: AuditStore,
    directory: Directory,
    inbox: tuple[Inbox, int],
) -> None:
    box, smtp_port = inbox
    receiver = WebhookReceiver(secret="regulator-hook-secret", answer_id="reg-7")
    dead = f"http://127.0.0.1:{free_port()}/hook"
    with serve_app(receiver.app()) as hook_url:
        playbook = directory.write(
            f"    - {{type: webhook, url: '{hook_url}/regulator', secret_env: {SECRET_ENV}}}\n"
            "    - {type: email, to: [crisis@regulator.example]}\n"
            f"    - {{type: webhook, url: '{dead}'}}\n"
        )
        configured = mail_settings(settings, smtp_port)
        async with running_worker(client, settings=configured, store=sqlite_store):
            incidents = Incidents(client, configured)
            triggered = await incidents.trigger(str(playbook), {}, actor="alice")
            record = await settled(incidents, triggered.incident_id, "tell")
            await settled(incidents, triggered.incident_id, "surge")  # the playbook went on

    assert "applied" == record.state, record
    by_target = {d.target: d for d in record.deliveries}
    webhook = by_target[f"webhook:{hook_url}/regulator"]
    mail = by_target["email:crisis@regulator.example"]
    failed = by_target[f"webhook:{dead}"]
    assert ("delivered", "reg-7") == (webhook.state, webhook.message_id)
    assert "delivered" == mail.state and mail.message_id
    assert "failed" == failed.state and failed.error and failed.message_id is None
    # Each is stamped when it was delivered (or given up on after its retries), not all of them
    # when the last one ended.
    assert max(webhook.at, mail.at) < failed.at

    # What arrived is the rendered message, signed with the stakeholder's own secret.
    (arrived,) = receiver.accepted
    assert "Crisis protocol activated: Tell the regulator" == arrived.json["subject"]
    # The logical operation, as a lever call names it, with the channel's place among the three.
    assert "apply-1/0" == arrived.headers["x-operation"]
    (envelope,) = box.messages
    message = email.message_from_bytes(envelope.original_content)
    assert mail.message_id == message["Message-ID"]
    assert "opened by alice in GB" in message.get_payload(decode=True).decode()

    # The audit trail and the board both say which channel failed.
    async def audited() -> list[str]:
        kinds = [e.kind for e in sqlite_store.events(triggered.incident_id)]
        assert 2 == kinds.count("notification.delivered") and "notification.failed" in kinds
        return kinds

    await assert_eventually(audited)
    stamps = [e.at for e in sqlite_store.events(triggered.incident_id)]
    assert sorted(stamps) == stamps  # the trail never goes back in time
    entry = next(
        i
        for i in board_page(sqlite_store, limit=200).items
        if i.incident_id == triggered.incident_id
    )
    assert [("tell", f"webhook:{dead}")] == [(f.step_id, f.target) for f in entry.failed_deliveries]


async def test_a_stakeholder_nobody_could_reach_fails_the_step(
    client: Client, settings: Settings, sqlite_store: AuditStore, directory: Directory
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"
    playbook = directory.write(f"    - {{type: webhook, url: '{dead}'}}\n")
    async with running_worker(client, settings=settings, store=sqlite_store):
        incidents = Incidents(client, settings)
        triggered = await incidents.trigger(str(playbook), {}, actor="alice")
        record = await settled(incidents, triggered.incident_id, "tell")
    assert "failed" == record.state
    assert record.error and "no channel reached regulator" in record.error
    assert ["failed"] == [d.state for d in record.deliveries]


async def test_a_receiver_down_for_a_while_gets_the_message_once_it_is_back(
    client: Client, settings: Settings, sqlite_store: AuditStore, directory: Directory
) -> None:
    port = free_port()
    receiver = WebhookReceiver(secret="regulator-hook-secret", answer_id="late-1")
    playbook = directory.write(
        f"    - {{type: webhook, url: 'http://127.0.0.1:{port}/r', secret_env: {SECRET_ENV}}}\n",
        attempts=60,
    )
    async with running_worker(client, settings=settings, store=sqlite_store):
        incidents = Incidents(client, settings)
        triggered = await incidents.trigger(str(playbook), {}, actor="alice")
        await asyncio.sleep(1.0)  # nobody listens: attempts fail and are retried
        status = await incidents.status(triggered.incident_id)
        assert "running" == next(s for s in status.steps if s.id == "tell").state
        with serving_on(receiver.app(), port):
            record = await settled(incidents, triggered.incident_id, "tell")
    assert [("delivered", "late-1")] == [(d.state, d.message_id) for d in record.deliveries]
    assert 1 == len(receiver.accepted)
