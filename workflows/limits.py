"""How long the free text of a request may be: one place for the API, the CLI and the workflow.

Everything a commander writes is stored in the workflow's history, the audit trail and every
status answer. Temporal refuses a payload over a few megabytes by failing the workflow task, so
an over-long note once stalled the incident; these limits refuse it before it is sent, and the
workflow's update validators refuse it again for callers that skip the API (the CLI's direct
mode).
"""

from __future__ import annotations

import re

MAX_NOTE_CHARS = 10_000  # an incident note
MAX_TEXT_CHARS = 2_000  # a reason (stand-down, reject, escalate, renew), a comment, a review note
MAX_NAME_CHARS = 200  # a name: who acts, a role, a step id, a level, a duration
MAX_INPUT_CHARS = 4_000  # one trigger input, as JSON (a list input with all its items)
# A playbook's snapshot, which every incident of it carries in its workflow input (with the
# templates and channels it uses): Temporal refuses an input over 2 MB at trigger.
MAX_SNAPSHOT_BYTES = 1_048_576

# Who acts: a token's principal, or the CLI's --actor. One pattern for both, so that "alice" and
# "alice " can never count as two distinct approvers.
PRINCIPAL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,199}$")
PRINCIPAL_RULE = "letters, digits and '_.@-', up to 200 characters"

# A stakeholder: a key of the directory, and the last part of the path its messages are posted
# to (the notify connector's /webhooks/<name>), so nothing in it may leave that path: no '/',
# '?', '#' or '%', and no '.' or '..' of its own.
STAKEHOLDER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
STAKEHOLDER_RULE = (
    "a stakeholder name is a letter or digit, then letters, digits and '_.-', up to 100 characters"
)


def stakeholder_problem(name: str) -> str | None:
    """What is wrong with a stakeholder name, or None."""
    if STAKEHOLDER_PATTERN.fullmatch(name):
        return None
    return f"invalid stakeholder {name[:60]!r}: {STAKEHOLDER_RULE}"


# An incident id (the workflow id): what a trigger accepts, so nothing else names an incident.
# It goes into Temporal's visibility queries and the API's paths: no quote, space, '/' or '%'.
INCIDENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,100}$"
INCIDENT_ID_RULE = "3 to 101 letters, digits, '_', '.' or '-', starting with a letter or digit"


def names_no_incident(incident_id: str) -> str | None:
    """Why `incident_id` cannot name an incident (no trigger accepts it), or None."""
    if re.fullmatch(INCIDENT_ID_PATTERN, incident_id):
        return None
    return f"no incident {incident_id[:120]!r} (an incident id is {INCIDENT_ID_RULE})"
