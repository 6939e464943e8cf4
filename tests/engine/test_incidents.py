"""Checks every trigger path makes before an incident starts (`engine.incidents`)."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import pytest

from api.routes.incidents import TriggerBody
from engine.incidents import INCIDENT_ID_PATTERN, prepare_incident
from engine.playbook_files import load_playbook
from tests.conftest import ENGINE_PLAYBOOKS
from workflows.playbook import InputError

PLAYBOOK = load_playbook(ENGINE_PLAYBOOKS / "violent-disorder.yaml", ENGINE_PLAYBOOKS)


@pytest.mark.parametrize(
    "incident_id", ["bad id/with slash", "a/b/c", "-leading-dash", "ab", "INC-1\n", "x" * 102]
)
def test_an_incident_id_the_api_would_refuse_is_refused(incident_id: str) -> None:
    """An id the API's URLs cannot carry is an InputError here, whatever the caller."""
    with pytest.raises(InputError, match="incident id"):
        prepare_incident(PLAYBOOK, {}, actor="alice", incident_id=incident_id)


def test_a_good_incident_id_is_kept() -> None:
    """Letters, digits, '_', '.' and '-' pass, and become the incident's id."""
    prepared = prepare_incident(PLAYBOOK, {}, actor="alice", incident_id="INC-2024.drill_1")
    assert "INC-2024.drill_1" == prepared.incident_id


def test_the_api_refuses_ids_by_the_same_rule() -> None:
    """The API's trigger body holds the one pattern, not a copy."""
    metadata = TriggerBody.model_fields["incident_id"].metadata
    assert [INCIDENT_ID_PATTERN] == [m.pattern for m in metadata if hasattr(m, "pattern")]
