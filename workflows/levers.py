"""The lever catalogue: every platform lever a playbook may pull, with its argument model.

This module is pure data (pydantic only): the playbook validator uses it to check `with:` before
anything runs, and the workflow uses it to know which levers can be undone. How a lever reaches
the platform lives in `activities/platform.py`; a new lever is a model here plus a route there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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


class ExcludeUnreviewedArgs(LeverArgs):
    """Keep classifier-flagged content nobody has reviewed yet out of recommender surfaces."""

    region: str = Field(min_length=2, description="Region code, e.g. GB")
    categories: list[str] = Field(min_length=1, description="Content categories affected")
    surfaces: list[Literal["feed", "search_suggestions", "explore", "notifications"]] = Field(
        default=["feed"],
        min_length=1,
        description="Recommender surfaces the unreviewed content is kept out of",
    )
    min_score: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Classifier score above which unreviewed content is excluded",
    )


class LivestreamArgs(LeverArgs):
    """Restrict livestreaming in a region; a flag left false leaves that restriction as it is."""

    region: str = Field(min_length=2, description="Region code, e.g. GB")
    audience: Literal["all", "new_accounts", "child_accounts"] = Field(
        default="all", description="Whose livestreams are restricted"
    )
    block_new_streams: bool = Field(default=False, description="No new livestream may start")
    disable_comments: bool = Field(default=False, description="Turn off comments on livestreams")
    disable_gifts: bool = Field(default=False, description="Turn off gifts/tips on livestreams")
    disable_recording: bool = Field(
        default=False, description="Viewers cannot record or clip livestreams"
    )

    @model_validator(mode="after")
    def _restricts_something(self) -> LivestreamArgs:
        if not (
            self.block_new_streams
            or self.disable_comments
            or self.disable_gifts
            or self.disable_recording
        ):
            raise ValueError(
                "at least one of block_new_streams, disable_comments, disable_gifts, "
                "disable_recording must be true"
            )
        return self


class HashBlockArgs(LeverArgs):
    """Block uploads matching a hash list, e.g. GIFCT's shared list of a perpetrator's footage."""

    list_id: str = Field(min_length=1, description="Hash list, e.g. gifct-perpetrator-content")
    source: str = Field(min_length=1, description="Where the list comes from: gifct-hsdb, internal")
    hash_types: list[Literal["pdq", "md5", "tmk", "vpdq"]] = Field(
        min_length=1, description="Hash algorithms matched against uploads"
    )
    action: Literal["block", "block_and_report", "review"] = Field(
        default="block", description="What a matching upload gets"
    )


class NotifySendArgs(LeverArgs):
    """Tell a stakeholder from the directory, with a message template from the library."""

    to: str = Field(min_length=1, description="Stakeholder name in the directory")
    template: str = Field(min_length=1, description="Message template name")
    severity: Literal["info", "warning", "critical"] = "warning"
    data: dict[str, Any] = Field(default_factory=dict, description="Extra fields for the template")


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
        Lever("notify.send", NotifySendArgs, False, NotifySendArgs.__doc__ or ""),
        Lever(
            "recommender.exclude_unreviewed",
            ExcludeUnreviewedArgs,
            True,
            ExcludeUnreviewedArgs.__doc__ or "",
        ),
        Lever("livestream.restrict", LivestreamArgs, True, LivestreamArgs.__doc__ or ""),
        Lever("hashes.block", HashBlockArgs, True, HashBlockArgs.__doc__ or ""),
    )
}
