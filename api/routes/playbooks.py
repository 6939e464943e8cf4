"""Playbooks: the library as the API sees it; validate and plan before a crisis, not during one."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.auth import Author, Reader
from api.bodies import RequestBody
from api.deps import SettingsDep
from api.errors import AUTH_ERRORS, ErrorOut, documented
from engine.errors import FileProblem, LibraryError, PlaybookInvalid
from engine.incidents import prepare_incident
from engine.plan import make_plan
from engine.playbook_files import (
    check_file,
    library_playbook,
    load_playbook,
    playbook_files,
)
from engine.protocol import levers_used
from workflows.playbook import Playbook

router = APIRouter(prefix="/playbooks", tags=["playbooks"], responses=AUTH_ERRORS)
_NAMED = documented(
    {
        404: "No such playbook (`playbook_not_found`)",
        422: "The playbook or an input is invalid (`playbook_invalid`, `invalid_input`)",
        503: "The playbook library is broken (`library_invalid`)",
    }
)


class PlaybookSummary(BaseModel):
    name: str
    version: int
    title: str
    owner: str
    levels: list[str]
    levers: list[str]
    playbook_hash: str
    inputs: dict[str, Any] = Field(description="Each input's type, default and description")


class PlaybookOut(PlaybookSummary):
    description: str
    playbook: dict[str, Any] = Field(description="The whole playbook, as the engine runs it")


class Problem(BaseModel):
    line: int
    column: int
    message: str
    file: str | None = Field(
        None,
        description="The library file the problem is in (templates.yaml, stakeholders.yaml); "
        "absent when it is in the submitted text",
    )


class ValidateBody(RequestBody):
    # Beyond the 1 MiB a playbook may carry (workflows.limits), so validation says that instead.
    text: str = Field(min_length=1, max_length=4_000_000, description="The playbook file (YAML)")


class ValidationOut(BaseModel):
    valid: bool
    problems: list[Problem]
    warnings: list[Problem]


class PlanBody(RequestBody):
    inputs: dict[str, Any] = Field(default_factory=dict)
    level: str | None = None


def _summary(playbook: Playbook) -> dict[str, Any]:
    return {
        "name": playbook.playbook,
        "version": playbook.version,
        "title": playbook.title,
        "owner": playbook.owner,
        "levels": playbook.levels,
        "levers": sorted(levers_used(playbook)),
        "playbook_hash": playbook.content_hash,
        "inputs": {
            name: spec.model_dump(mode="json", exclude_none=True)
            for name, spec in playbook.inputs.items()
        },
    }


def _load(name: str, library: Path) -> Playbook:
    return load_playbook(library_playbook(name, library), library)


def _problems(found: list[FileProblem], submitted: Path) -> list[Problem]:
    # A library file by its name only: the deployment's paths are no business of a client.
    return [
        Problem(
            line=p.line,
            column=p.column,
            message=p.message,
            file=None if p.file == submitted else p.file.name,
        )
        for p in found
    ]


@router.get(
    "",
    response_model=list[PlaybookSummary],
    responses={503: {"model": ErrorOut, "description": "A library file is invalid"}},
)
async def list_playbooks(_: Reader, settings: SettingsDep) -> list[PlaybookSummary]:
    """Every playbook in the library, with its content hash."""
    summaries = []
    for path in playbook_files(settings.playbooks_dir):
        try:
            summaries.append(
                PlaybookSummary(**_summary(load_playbook(path, settings.playbooks_dir)))
            )
        except PlaybookInvalid as error:  # the deployment's to fix, not the client's: a 503
            first = error.problems[0]
            raise LibraryError(replace(first, file=Path(first.file.name))) from None
    return summaries


@router.get("/{name}", response_model=PlaybookOut, responses=_NAMED)
async def show_playbook(name: str, _: Reader, settings: SettingsDep) -> PlaybookOut:
    playbook = _load(name, settings.playbooks_dir)
    return PlaybookOut(
        **_summary(playbook), description=playbook.description, playbook=playbook.snapshot()
    )


# Plain `def`s: parsing up to a megabyte of YAML runs in the thread pool, not on the event loop.
@router.post("/validate", response_model=ValidationOut, response_model_exclude_none=True)
def validate_playbook(body: ValidateBody, _: Author, settings: SettingsDep) -> ValidationOut:
    """Check a playbook file's text as `crisis playbook validate` would; nothing is saved."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "submitted.yaml"
        path.write_text(body.text, encoding="utf-8")
        check = check_file(path, settings.playbooks_dir)
    return ValidationOut(
        valid=not check.problems,
        problems=_problems(check.problems, path),
        warnings=_problems(check.warnings, path),
    )


@router.post("/{name}/plan", responses=_NAMED)
async def plan_playbook(
    name: str, body: PlanBody, principal: Author, settings: SettingsDep
) -> dict[str, Any]:
    """What would run, in which order, who must approve, when measures lapse; touches nothing."""
    playbook = _load(name, settings.playbooks_dir)
    # The inputs and level exactly as a trigger checks them.
    prepared = prepare_incident(playbook, body.inputs, actor=principal.name, level=body.level)
    return make_plan(playbook, prepared.inputs, body.level).as_dict()
