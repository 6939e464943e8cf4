"""The two ways a worker loads the interpreter. Shipped workers import the workflow package once,
outside the workflow sandbox; strict ones (every other test's) re-import the interpreter module
for each run, so the sandbox refuses a non-deterministic call in it. Both must run an incident
to the same end."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client

from core.settings import Settings
from engine.incidents import Incidents
from engine.temporal import SANDBOX, STRICT_SANDBOX, running_worker, workflow_runner
from store.audit_store import AuditStore
from tests.conftest import Sandbox
from tests.helpers import assert_eventually
from workflows.incident import IncidentStatus


def test_shipped_workers_pass_the_workflow_package_through_and_strict_ones_do_not() -> None:
    """The setting picks the runner; only the strict one re-imports `workflows` per run and
    checks the builtins workflow code calls."""
    assert workflow_runner(Settings(strict_workflow_sandbox=False)) is SANDBOX
    assert workflow_runner(Settings(strict_workflow_sandbox=True)) is STRICT_SANDBOX
    assert "workflows" in SANDBOX.restrictions.passthrough_modules
    assert "workflows" not in STRICT_SANDBOX.restrictions.passthrough_modules
    # The same modules otherwise; only the strict one checks builtins (to do so the sandbox
    # swaps `isinstance` and others in the builtins module while activations run).
    shipped = SANDBOX.restrictions.passthrough_modules - {"workflows"}
    assert shipped == STRICT_SANDBOX.restrictions.passthrough_modules
    assert STRICT_SANDBOX.restrictions.invalid_module_members.child_matcher("__builtins__")
    assert not SANDBOX.restrictions.invalid_module_members.child_matcher("__builtins__")
    others = dict(STRICT_SANDBOX.restrictions.invalid_module_members.children)
    del others["__builtins__"]
    assert others == SANDBOX.restrictions.invalid_module_members.children


async def _run_once(
    client: Client, settings: Settings, store: AuditStore, sandbox: Sandbox
) -> tuple[list[str], dict[str, Any]]:
    async with running_worker(client, settings=settings, store=store):
        incidents = Incidents(client, settings)
        triggered = await incidents.trigger(
            "violent-disorder", {"region": "GB"}, actor="alice", eager=True
        )

        async def all_applied() -> IncidentStatus:
            status = await incidents.status(triggered.incident_id)
            assert {s.state for s in status.steps} == {"applied"}
            return status

        await assert_eventually(all_applied)
        during = await sandbox.state()
        closed = await incidents.stand_down(triggered.incident_id, actor="bob", reason="over")
        assert closed.state == "closed"
        assert store.verify(triggered.incident_id).ok
        kinds = [event.kind for event in store.events(triggered.incident_id)]
        return kinds, during["recommender"]["GB"]


async def test_an_incident_runs_alike_on_the_shipped_and_the_strict_runner(
    client: Client, settings: Settings, sandbox: Sandbox, sqlite_store: AuditStore
) -> None:
    """Same levers applied, same audit trail, everything restored, whichever runner loads it."""
    before = await sandbox.state()
    shipped = settings.model_copy(update={"strict_workflow_sandbox": False})
    strict = settings.model_copy(update={"strict_workflow_sandbox": True})
    shipped_kinds, shipped_policy = await _run_once(client, shipped, sqlite_store, sandbox)
    strict_kinds, strict_policy = await _run_once(client, strict, sqlite_store, sandbox)
    assert shipped_kinds == strict_kinds
    assert "incident.closed" in shipped_kinds
    assert shipped_policy == strict_policy
    assert shipped_policy["incitement_to_violence"]["reach_multiplier"] == 0.25
    after = await sandbox.state()
    assert after["recommender"] == before["recommender"]
