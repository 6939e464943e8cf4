"""The engine's named errors: what a user can cause, each said as one line by the interfaces.

They live apart from the code that raises them so that an interface can name them without
importing the Temporal client, the audit store or the YAML reader (a CLI command loads only
what it uses).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workflows.limits import names_no_incident


class PlaybookError(Exception):
    """Base of playbook file errors."""


class PlaybookNotFound(PlaybookError):
    """No playbook file by that name or path."""


@dataclass(frozen=True)
class FileProblem:
    file: Path
    line: int  # 1-based
    column: int  # 1-based
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class PlaybookInvalid(PlaybookError):
    """The file is not a valid playbook; `problems` says every place that is wrong."""

    def __init__(self, problems: list[FileProblem]) -> None:
        super().__init__(str(problems[0]) if problems else "invalid playbook")
        self.problems = problems


class LibraryError(ValueError):
    """Library files unreadable or invalid; `problems` says where, each in its file (`problem`:
    the first, which is the error's one line)."""

    def __init__(self, problems: FileProblem | list[FileProblem]) -> None:
        self.problems = problems if isinstance(problems, list) else [problems]
        self.problem = self.problems[0]
        more = len(self.problems) - 1
        super().__init__(str(self.problem) + (f" (and {more} more)" if more else ""))


class IncidentError(Exception):
    """Base of incident operation errors."""


class IncidentNotFound(IncidentError):
    pass


def require_incident_id(incident_id: str) -> None:
    """Raise IncidentNotFound for an id no incident can have, before anyone is asked: Temporal
    answered an empty one with a traceback, an id goes into its visibility queries, and into the
    API's URLs, where an odd one names another route."""
    if (problem := names_no_incident(incident_id)) is not None:
        raise IncidentNotFound(problem)


class IncidentConflict(IncidentError):
    """The incident exists but cannot do that now (already closed, already standing down)."""


class ActionInvalid(IncidentConflict):
    """The incident can never take the request as asked: it names a level, step or role the
    incident does not have (a conflict too, for callers that only ask whether it was refused)."""


class IncidentBusy(IncidentError):
    """The incident did not answer a commander action in time (its worker is down or busy)."""


class ScenarioError(ValueError):
    """The scenario file is not valid."""


class BundleError(ValueError):
    """An export bundle that is incomplete, altered or unreadable."""


class HistoryError(ValueError):
    """An export file that cannot be read, or an incident without history."""
