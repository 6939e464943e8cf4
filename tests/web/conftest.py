"""The web console served by the real API app (real Temporal, sandbox, SQLite) over loopback, with
a playbook library of its own, and signed-in console sessions as the API tests' principals."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.main import create_app
from core.settings import Settings
from tests.api.conftest import Tokens
from tests.api.conftest import tokens as tokens  # the fixture, shared with the API tests
from tests.conftest import Sandbox
from tests.helpers import assert_eventually, serve_app

# Levels, reviews, an expiring measure, a notification told through two channels (the slack one
# names a variable nobody sets, so that delivery fails, visibly), and a measure two distinct
# people must approve: a policy lead and legal, never a commander.
DRILL_PLAYBOOK = """\
playbook: console-drill
version: 1
title: Console drill
description: For tests of the web console.
inputs:
  region: {type: string, default: GB, description: Region code where the crisis is}
  categories: {type: list, items: string, default: [spam, scam], description: Categories cut}
  reach: {type: number, default: 0.5, description: Share of normal reach kept}
levels: [elevated, severe]
reviews: {every: 1h, grace: 30m, on_missed: record}
steps:
  - id: surge
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 3}
    expires_after: 1h
  - id: tell-regulator
    do: notify.send
    with: {to: regulator, template: drill-opened, severity: critical}
    retry: {max_attempts: 1}
  - id: throttle
    do: recommender.throttle
    with:
      region: ${inputs.region}
      categories: ${inputs.categories}
      reach_multiplier: ${inputs.reach}
    expires_after: 2h
    approval: {roles: [policy-lead, legal], quorum: 2, timeout: 1h, on_timeout: skip}
"""
TEMPLATES = """\
drill-opened:
  subject: "Drill {{ incident.id }} opened"
  body: "The console drill {{ incident.id }} is running in {{ inputs.region }}."
"""
STAKEHOLDERS = """\
regulator:
  name: Regulator
  kind: external
  channels:
    - type: webhook
    - type: slack
      url_env: CONSOLE_DRILL_SLACK_URL_NOT_SET
"""
CSRF = re.compile(r'name="csrf" value="([0-9a-f]*)"')


@dataclass
class Page:
    response: httpx.Response

    @property
    def html(self) -> str:
        return self.response.text

    @property
    def csrf(self) -> str:
        found = CSRF.search(self.html)
        assert found is not None, "no CSRF field on the page"
        return found.group(1)


class ConsoleSession:
    """A browser-like client: a cookie jar, same-origin form posts with the page's CSRF token."""

    def __init__(self, http: httpx.AsyncClient, name: str) -> None:
        self.http = http
        self.name = name
        self.csrf = ""

    @property
    def origin(self) -> str:
        return str(self.http.base_url).rstrip("/")

    async def get(self, path: str) -> Page:
        page = Page(await self.http.get(path))
        if page.response.status_code == 200 and 'name="csrf"' in page.html:
            self.csrf = page.csrf
        return page

    async def post(
        self, path: str, data: dict[str, str], *, origin: str | None = None, csrf: bool = True
    ) -> httpx.Response:
        form = {"csrf": self.csrf, **data} if csrf else data
        return await self.http.post(path, data=form, headers={"Origin": origin or self.origin})

    async def incident(self, incident_id: str) -> Page:
        page = await self.get(f"/console/incidents/{incident_id}")
        assert 200 == page.response.status_code, page.html
        return page


@dataclass
class Console:
    url: str
    tokens: Tokens
    settings: Settings

    @asynccontextmanager
    async def session(self, name: str, token: str | None = None) -> AsyncIterator[ConsoleSession]:
        """Signed in as `name` (their token from the API tests' cast, or `token`)."""
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            session = ConsoleSession(http, name)
            signed = await http.post(
                "/console/sign-in",
                data={"token": token or self.tokens.token(name)},
                headers={"Origin": self.url},
            )
            assert 303 == signed.status_code, signed.text
            await session.get("/console")
            yield session

    def api(self) -> httpx.AsyncClient:
        """The JSON API as alice, to check what the console did."""
        return httpx.AsyncClient(
            base_url=self.url, timeout=30, headers=self.tokens.headers("alice")
        )

    async def status_when(
        self, incident_id: str, check: Callable[[dict[str, str]], bool]
    ) -> dict[str, Any]:
        """The incident's status (JSON API) once `check(state of each step)` holds."""
        async with self.api() as api:

            async def reached() -> dict[str, Any]:
                response = await api.get(f"/v1/incidents/{incident_id}")
                assert 200 == response.status_code, response.text
                status = response.json()
                states = {s["id"]: s["state"] for s in status["steps"]}
                assert check(states), states
                return status

            return await assert_eventually(reached, timeout=30)

    async def audit_events(self, incident_id: str) -> list[dict[str, Any]]:
        async with self.api() as api:
            response = await api.get(f"/v1/incidents/{incident_id}/audit")
            assert 200 == response.status_code, response.text
            return response.json()["events"]


def write_library(directory: Path) -> Path:
    directory.mkdir()
    (directory / "console-drill.yaml").write_text(DRILL_PLAYBOOK)
    (directory / "templates.yaml").write_text(TEMPLATES)
    (directory / "stakeholders.yaml").write_text(STAKEHOLDERS)
    return directory


@pytest.fixture
async def console(
    settings: Settings, tmp_path: Path, tokens: Tokens, sandbox: Sandbox
) -> AsyncIterator[Console]:
    """The API app (with its console and embedded worker) over real HTTP."""
    served = settings.model_copy(update={"playbooks_dir": write_library(tmp_path / "library")})
    with serve_app(create_app(served)) as url:
        yield Console(url=url, tokens=tokens, settings=served)
