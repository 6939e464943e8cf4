"""Incidents carry search attributes, so the Temporal UI and visibility queries can filter them."""

from __future__ import annotations

import pytest
from temporalio.client import Client

from core.settings import Settings
from engine.incidents import Incidents
from tests.helpers import assert_eventually
from workflows.incident import SEARCH_LEVEL, SEARCH_PLAYBOOK, SEARCH_STATE

pytestmark = pytest.mark.usefixtures("worker")


async def test_state_is_searchable_while_running_and_after_closing(
    client: Client, settings: Settings
) -> None:
    """A visibility query by playbook and state finds the incident, then finds it closed."""
    settings.search_attributes = True
    incidents = Incidents(client, settings)
    triggered = await incidents.trigger("violent-disorder", {}, actor="alice", eager=True)
    query = f"WorkflowId = '{triggered.incident_id}' AND CrisisPlaybook = 'violent-disorder'"

    async def state_is(expected: str) -> None:
        found = [w async for w in client.list_workflows(f"{query} AND CrisisState = '{expected}'")]
        assert 1 == len(found)

    await assert_eventually(lambda: state_is("running"))
    await incidents.stand_down(triggered.incident_id, actor="bob", reason="over")
    await assert_eventually(lambda: state_is("closed"))
    description = await client.get_workflow_handle(triggered.incident_id).describe()
    attributes = description.typed_search_attributes
    assert ("violent-disorder", "closed", "") == (
        attributes.get(SEARCH_PLAYBOOK),
        attributes.get(SEARCH_STATE),
        attributes.get(SEARCH_LEVEL),
    )
