"""The lever catalogue: every platform lever a playbook may pull, with its argument model.

This module is pure data (pydantic only): the playbook validator uses it to check `with:` before
anything runs, and the workflow uses it to know which levers can be undone. How a lever reaches
the platform lives in `activities/platform.py`; a new lever is a model here plus a route there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from workflows.limits import stakeholder_problem


def _stakeholder(name: str) -> str:
    if (problem := stakeholder_problem(name)) is not None:
        raise ValueError(problem)
    return name


# Part of the URL a message is posted to: checked before anything is sent (see limits).
StakeholderName = Annotated[str, AfterValidator(_stakeholder)]


class LeverArgs(BaseModel):
    """Base of every lever's arguments: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def targets(self) -> frozenset[str]:
        """The platform settings this call changes, one name each. Two measures of one lever
        whose targets meet stack: taking back the older must not wipe the newer. A lever that
        does not say is taken to change everything it could."""
        return EVERYTHING


def _per_category(region: str, categories: list[str], *scope: str) -> frozenset[str]:
    return frozenset("/".join((region, *scope, category)) for category in categories)


# A name in a list argument (category, partner, designated body): never blank.
Name = Annotated[str, Field(min_length=1, max_length=64)]
# A literal word or phrase matched in posts or searches (a place, a hashtag, a search term).
Phrase = Annotated[str, Field(min_length=1, max_length=100)]


class ThrottleArgs(LeverArgs):
    """Cut the reach of content in some categories in a region (recommender feeds)."""

    region: str = Field(min_length=2, description="Region code, e.g. GB")
    categories: list[str] = Field(min_length=1, description="Content categories affected")
    reach_multiplier: float = Field(
        ge=0,
        le=1,
        description="1 = normal reach, 0.25 = a quarter, 0 = kept out of recommendations entirely",
    )
    reshare_limit: int | None = Field(
        default=None, ge=0, description="Max reshares/forwards per item; none = unchanged"
    )
    max_account_age_days: int | None = Field(
        default=None,
        ge=1,
        le=365,
        description="Only posts by accounts younger than this many days; none = every account",
    )
    keywords: list[Phrase] = Field(
        default_factory=list,
        description="Only posts mentioning one of these (e.g. a targeted town); empty = every post",
    )

    def targets(self) -> frozenset[str]:
        return _per_category(self.region, self.categories)


class ThresholdArgs(LeverArgs):
    """Lower (or raise) the score at which a classifier flags content for review."""

    classifier: str = Field(min_length=1)
    threshold: float = Field(ge=0, le=1)

    def targets(self) -> frozenset[str]:
        return frozenset({self.classifier})


class SurgeArgs(LeverArgs):
    """Add reviewers to a moderation queue and raise its priority."""

    queue: str = Field(min_length=1)
    extra_reviewers: int = Field(ge=1, le=10_000)
    priority: Literal["normal", "high", "urgent"] = "high"

    def targets(self) -> frozenset[str]:
        return frozenset({self.queue})


class WebhookArgs(LeverArgs):
    """Send a signed JSON message to a stakeholder's webhook."""

    to: StakeholderName = Field(description="Stakeholder, e.g. regulator, law-enforcement")
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

    def targets(self) -> frozenset[str]:
        return _per_category(self.region, self.categories)


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

    def targets(self) -> frozenset[str]:
        return frozenset({f"{self.region}/{self.audience}"})


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

    def targets(self) -> frozenset[str]:
        return frozenset({self.list_id})


class NotifySendArgs(LeverArgs):
    """Tell a stakeholder from the directory, with a message template from the library."""

    to: StakeholderName = Field(description="Stakeholder name in the directory")
    template: str = Field(min_length=1, description="Message template name")
    severity: Literal["info", "warning", "critical"] = "warning"
    data: dict[str, Any] = Field(default_factory=dict, description="Extra fields for the template")


class HoldNewAdvertisersArgs(LeverArgs):
    """Hold ads from newly created advertiser accounts for review before they run (scam waves)."""

    region: str = Field(min_length=2, description="Region code, e.g. GB")
    categories: list[Name] = Field(
        min_length=1,
        description="Ad categories held, e.g. charity, financial_services, government_services",
    )
    max_account_age_days: int = Field(
        default=30,
        ge=1,
        le=365,
        description="Ads of advertisers whose account is younger than this many days are held",
    )
    review: Literal["manual", "enhanced"] = Field(
        default="manual",
        description="manual = a reviewer approves each ad; enhanced = the advertiser's identity "
        "and payment details are verified as well",
    )

    def targets(self) -> frozenset[str]:
        return _per_category(self.region, self.categories)


class SanctionOnMatchArgs(LeverArgs):
    """Sanction accounts that upload content matching a hash list (e.g. known CSAM)."""

    list_id: str = Field(min_length=1, description="Hash list, e.g. internal-csam-known")
    sanction: Literal["suspend", "ban"] = Field(
        default="ban", description="suspend = locked pending review; ban = removed for good"
    )
    preserve_evidence: bool = Field(
        default=True,
        description="Keep the matched content and account data for law enforcement",
    )
    report_to: list[Name] = Field(
        default_factory=list, description="Designated bodies each match is reported to: ncmec, iwf"
    )

    @model_validator(mode="after")
    def _reports_keep_evidence(self) -> SanctionOnMatchArgs:
        # A report a designated body cannot follow up on is worse than none.
        if self.report_to and not self.preserve_evidence:
            raise ValueError("report_to needs preserve_evidence: true")
        return self

    def targets(self) -> frozenset[str]:
        return frozenset({self.list_id})


class SuppressSuggestionsArgs(LeverArgs):
    """Keep content categories and terms out of search autocomplete and suggestions."""

    region: str = Field(min_length=2, description="Region code, e.g. GB")
    categories: list[Name] = Field(
        min_length=1, description="Content categories kept out of suggestions, e.g. self_harm"
    )
    terms: list[Phrase] = Field(
        default_factory=list,
        description="Extra literal terms never suggested (matched ignoring case)",
    )
    show_support_resources: bool = Field(
        default=False,
        description="Show helpline resources in place of suggestions (as for self-harm searches)",
    )

    def targets(self) -> frozenset[str]:
        return _per_category(self.region, self.categories)


class HashShareArgs(LeverArgs):
    """Share the hashes added to a hash list with partner services (e.g. GIFCT's database)."""

    list_id: str = Field(min_length=1, description="Hash list, e.g. christchurch-2019")
    partners: list[Name] = Field(
        min_length=1, description="Partner services, e.g. gifct-hsdb, tech-against-terrorism"
    )
    include_new_hashes: bool = Field(
        default=True,
        description="Also share hashes added to the list while the share is in force",
    )

    def targets(self) -> frozenset[str]:
        return frozenset({self.list_id})


class ShowWarningArgs(LeverArgs):
    """Show users a warning on content, or on searches, in some categories in a region."""

    region: str = Field(min_length=2, description="Region code, e.g. GB")
    categories: list[Name] = Field(min_length=1, description="Content categories warned about")
    kind: Literal["interstitial", "banner", "search_notice"] = Field(
        default="interstitial",
        description="interstitial = click through to see; banner = above the content; "
        "search_notice = above search results",
    )
    message_key: str = Field(
        pattern=r"^[a-z0-9][a-z0-9._-]*$",
        max_length=64,
        description="Key of the localised message, e.g. scam-warning, crisis-support",
    )
    audience: Literal["all", "young_users"] = Field(
        default="all", description="Who sees the warning"
    )

    def targets(self) -> frozenset[str]:
        return _per_category(self.region, self.categories, self.kind)


# The targets of a lever that cannot say which settings it changes: all of them.
EVERYTHING = frozenset({"*"})


def shared_settings(mine: frozenset[str], theirs: frozenset[str]) -> frozenset[str]:
    """The settings two calls of one lever both change (its `targets()`): taking back the older
    of two measures that share any must not wipe the newer."""
    if EVERYTHING & (mine | theirs):
        return mine | theirs
    return mine & theirs


def is_notification(lever: str | None) -> bool:
    """A lever that tells someone rather than changing the platform (nothing to restore)."""
    return bool(lever) and str(lever).startswith("notify.")


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
        Lever(
            "ads.hold_new_advertisers",
            HoldNewAdvertisersArgs,
            True,
            HoldNewAdvertisersArgs.__doc__ or "",
        ),
        Lever(
            "accounts.sanction_on_match",
            SanctionOnMatchArgs,
            True,
            SanctionOnMatchArgs.__doc__ or "",
        ),
        Lever(
            "search.suppress_suggestions",
            SuppressSuggestionsArgs,
            True,
            SuppressSuggestionsArgs.__doc__ or "",
        ),
        Lever("hashes.share", HashShareArgs, True, HashShareArgs.__doc__ or ""),
        Lever("users.show_warning", ShowWarningArgs, True, ShowWarningArgs.__doc__ or ""),
    )
}
