"""The lever catalogue: every platform lever a playbook may pull, with its argument model.

This module is pure data (pydantic only): the playbook validator uses it to check `with:` before
anything runs, and the workflow uses it to know which levers can be undone. How a lever reaches
the platform lives in `activities/platform.py`; a new lever is a model here plus a route there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class LeverArgs(BaseModel):
    """Base of every lever's arguments: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ThrottleArgs(LeverArgs):
    """Cut the reach of content in some categories in a region (recommender feeds)."""

    region: str = Field(min_length=2, description="Region code, e.g. GB")
    categories: list[str] = Field(min_length=1, description="Content categories affected")
    reach_multiplier: float = Field(gt=0, le=1, description="1 = normal reach, 0.25 = a quarter")
    reshare_limit: int | None = Field(
        default=None, ge=0, description="Max reshares/forwards per item; none = unchanged"
    )


class ThresholdArgs(LeverArgs):
    """Lower (or raise) the score at which a classifier flags content for review."""

    classifier: str = Field(min_length=1)
    threshold: float = Field(ge=0, le=1)


class SurgeArgs(LeverArgs):
    """Add reviewers to a moderation queue and raise its priority."""

    queue: str = Field(min_length=1)
    extra_reviewers: int = Field(ge=1, le=10_000)
    priority: Literal["normal", "high", "urgent"] = "high"


class WebhookArgs(LeverArgs):
    """Send a signed JSON message to a stakeholder's webhook."""

    to: str = Field(min_length=1, description="Stakeholder, e.g. regulator, law-enforcement")
    message: str = Field(min_length=1)
    severity: Literal["info", "warning", "critical"] = "warning"
    data: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class Lever:
    name: str
    args: type[LeverArgs]
    # A reversible lever returns the state it replaced and can restore it on undo.
    reversible: bool
    summary: str


LEVERS: dict[str, Lever] = {
    lever.name: lever
    for lever in (
        Lever("recommender.throttle", ThrottleArgs, True, ThrottleArgs.__doc__ or ""),
        Lever("detection.set_threshold", ThresholdArgs, True, ThresholdArgs.__doc__ or ""),
        Lever("moderation.surge", SurgeArgs, True, SurgeArgs.__doc__ or ""),
        Lever("notify.webhook", WebhookArgs, False, WebhookArgs.__doc__ or ""),
    )
}
