"""One line from pydantic's validation errors, for every boundary that reports them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def first_problem(errors: Sequence[Mapping[str, Any]]) -> str:
    """The first error as `where.it.is: what is wrong` (pydantic's `errors()`, FastAPI's too)."""
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    # A validator's own ValueError: its message says it all, without pydantic's label.
    return f"{where}: {first['msg'].removeprefix('Value error, ')}"
