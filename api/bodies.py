"""The base of every JSON request body the API reads."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RequestBody(BaseModel):
    """A field the body does not have is a 422 naming it (`body.levle: Extra inputs are not
    permitted`), never dropped: a misspelt `level` must not start an incident at another one."""

    model_config = ConfigDict(extra="forbid")
