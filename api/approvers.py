"""Who may approve or reject a step: the roles its approval lists, read from the playbook snapshot
the incident runs. Shared by the approve/reject routes and the web console (which shows the
buttons only to those who may press them)."""

from __future__ import annotations

from typing import Literal

from temporalio.client import Client
from temporalio.service import RPCError

from api.auth import Forbidden, Principal
from workflows.incident import IncidentInput


async def approval_roles(client: Client, incident_id: str) -> dict[str, list[str]] | None:
    """Each step needing approval → the roles that may give it, from the playbook snapshot in the
    current run's input; None when there is no such incident, so the workflow answers itself."""
    handle = client.get_workflow_handle(incident_id)
    try:
        async for event in handle.fetch_history_events(page_size=1):
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            (incident,) = await client.data_converter.decode(payloads, [IncidentInput])
            break
        else:
            return None
    except RPCError:
        return None
    return {
        step.id: list(step.approval.roles)
        for step in incident.playbook.lever_steps()
        if step.approval is not None
    }


async def approver_role(
    client: Client,
    incident_id: str,
    step_id: str,
    principal: Principal,
    *,
    role: str | None,
    verb: Literal["approve", "reject"],
) -> str:
    """The role `principal` approves or rejects `step_id` in (`role` if they name one); Forbidden
    if they hold none that may."""
    if role is not None and not principal.has(role):
        raise Forbidden(
            f"{principal.name} does not hold the role {role!r} "
            f"(roles: {', '.join(principal.roles)})",
            reason=f"lacks role {role}",
            principal=principal.name,
        )
    accepted = (await approval_roles(client, incident_id) or {}).get(step_id)
    if accepted is None:
        return role or principal.roles[0]
    held = [mine for mine in principal.roles if mine in accepted]
    if not held:
        raise Forbidden(
            f"{principal.name} (roles: {', '.join(principal.roles)}) holds no role that may "
            f"{verb} {step_id} (roles: {', '.join(accepted)})",
            reason=f"no role to {verb} {step_id}",
            principal=principal.name,
        )
    # A named role the step does not accept is left to the workflow, which says so (409).
    return role or held[0]
