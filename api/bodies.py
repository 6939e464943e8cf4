"""The base of every JSON request body the API reads, and the field types its bodies share."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError


class RequestBody(BaseModel):
    """A field the body does not have is a 422 naming it (`body.levle: Extra inputs are not
    permitted`), never dropped: a misspelt `level` must not start an incident at another one."""

    model_config = ConfigDict(extra="forbid")


def _not_blank(text: str) -> str:
    if not text.strip():
        raise PydanticCustomError("string_blank", "String must not be blank")
    return text


# Text someone must write (a reason, a note): "" fails min_length first, "   " says it is blank.
# The schema's pattern tells clients (and the fuzzer's valid cases) the same thing.
WrittenText = Annotated[
    str,
    Field(min_length=1, json_schema_extra={"pattern": r"\S"}),
    AfterValidator(_not_blank),
]
