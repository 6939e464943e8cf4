"""The committed JSON Schema of the playbook language is the one the models generate."""

from __future__ import annotations

import json
from pathlib import Path

from workflows.playbook import Playbook

SCHEMA = Path(__file__).resolve().parents[2] / "playbooks" / "playbook.schema.json"


def test_committed_schema_matches_the_models() -> None:
    """When this fails: `crisis playbook schema -o playbooks/playbook.schema.json`."""
    assert Playbook.model_json_schema(by_alias=True) == json.loads(SCHEMA.read_text())
