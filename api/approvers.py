"""Who may approve or reject a step: the roles its approval lists (`Incidents.approval_roles`, from
the playbook snapshot the incident runs) against the principal's. Used by the approve/reject
routes and the web console."""

from __future__ import annotations

from typing import Literal

from api.auth import Forbidden, Principal
from engine.incidents import Incidents


async def approver_role(
    incidents: Incidents,
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
    accepted = (await incidents.approval_roles(incident_id) or {}).get(step_id)
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
