"""In-memory state of the platform sandbox and the pure operations on it.

Nothing here does I/O or awaits: the app holds one `PlatformState` behind an asyncio lock and calls
these methods, so every operation is atomic with respect to concurrent requests. The shapes of the
answers are those of docs/platform-api.md.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from workflows.levers import (
    ExcludeUnreviewedArgs,
    HashBlockArgs,
    HashShareArgs,
    HoldNewAdvertisersArgs,
    LivestreamArgs,
    Name,
    Phrase,
    SanctionOnMatchArgs,
    ShowWarningArgs,
    SuppressSuggestionsArgs,
    SurgeArgs,
    ThresholdArgs,
    ThrottleArgs,
)

Priority = Literal["normal", "high", "urgent"]
Surface = Literal["feed", "search_suggestions", "explore", "notifications"]
Audience = Literal["all", "new_accounts", "child_accounts"]
HashType = Literal["pdq", "md5", "tmk", "vpdq"]
HashAction = Literal["block", "block_and_report", "review"]
AdReview = Literal["manual", "enhanced"]
Sanction = Literal["suspend", "ban"]
WarningKind = Literal["interstitial", "banner", "search_notice"]
WarningAudience = Literal["all", "young_users"]
RESTRICTIONS = ("block_new_streams", "disable_comments", "disable_gifts", "disable_recording")


class PlatformError(Exception):
    """A request the platform refuses; `status` is the HTTP status (4xx) it answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- request models the apply models in workflows.levers don't cover ------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Policy(_Strict):
    """A recommender policy for one (region, category), optionally only for posts by young
    accounts or posts mentioning some keywords."""

    # 0 = kept out of recommendations entirely.
    reach_multiplier: float = Field(ge=0, le=1)
    reshare_limit: int | None = Field(default=None, ge=0)
    max_account_age_days: int | None = Field(default=None, ge=1, le=365)
    keywords: list[Phrase] = Field(default_factory=list)

    @model_serializer(mode="wrap")
    def _unscoped_keeps_its_shape(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # An unscoped policy is written as before scopes existed, so `previous` values that
        # running incidents recorded earlier and readers of /state see the same data.
        data: dict[str, Any] = handler(self)
        if self.max_account_age_days is None:
            data.pop("max_account_age_days", None)
        if not self.keywords:
            data.pop("keywords", None)
        return data


class ThrottlePrevious(_Strict):
    region: str = Field(min_length=2)
    policies: dict[str, Policy | None]


class ThresholdPrevious(_Strict):
    classifier: str = Field(min_length=1)
    threshold: float = Field(ge=0, le=1)


class SurgePrevious(_Strict):
    queue: str = Field(min_length=1)
    reviewers: int = Field(ge=0)
    priority: Priority


class Exclusion(_Strict):
    """What unreviewed, classifier-flagged content is kept out of in one (region, category)."""

    surfaces: list[Surface] = Field(min_length=1)
    min_score: float = Field(ge=0, le=1)


class ExcludeUnreviewedPrevious(_Strict):
    region: str = Field(min_length=2)
    exclusions: dict[str, Exclusion | None]


class Restrictions(_Strict):
    """The livestream restrictions in force for one (region, audience)."""

    block_new_streams: bool
    disable_comments: bool
    disable_gifts: bool
    disable_recording: bool


class LivestreamPrevious(_Strict):
    region: str = Field(min_length=2)
    audience: Audience
    restrictions: Restrictions | None


class HashBlock(_Strict):
    """How uploads matching one hash list are blocked; a list not blocking has no entry."""

    source: str = Field(min_length=1)
    hash_types: list[HashType] = Field(min_length=1)
    action: HashAction
    blocking: Literal[True]


class HashBlockPrevious(_Strict):
    list_id: str = Field(min_length=1)
    block: HashBlock | None


class AdHold(_Strict):
    """How ads of new advertisers are held in one (region, ad category)."""

    max_account_age_days: int = Field(ge=1, le=365)
    review: AdReview


class AdHoldPrevious(_Strict):
    region: str = Field(min_length=2)
    holds: dict[str, AdHold | None]


class MatchSanction(_Strict):
    """What happens to an account that uploads content matching one hash list."""

    sanction: Sanction
    preserve_evidence: bool
    report_to: list[Name]

    @model_validator(mode="after")
    def _reports_keep_evidence(self) -> MatchSanction:
        if self.report_to and not self.preserve_evidence:
            raise ValueError("report_to needs preserve_evidence: true")
        return self


class MatchSanctionPrevious(_Strict):
    list_id: str = Field(min_length=1)
    policy: MatchSanction | None


class Suppression(_Strict):
    """What search suggestions leave out in one (region, category), with its extra terms."""

    terms: list[Phrase]
    show_support_resources: bool


class SuppressionPrevious(_Strict):
    region: str = Field(min_length=2)
    suppressions: dict[str, Suppression | None]


class HashShare(_Strict):
    """Which partners the hashes of one list are shared with."""

    partners: list[Name] = Field(min_length=1)
    include_new_hashes: bool


class HashSharePrevious(_Strict):
    list_id: str = Field(min_length=1)
    share: HashShare | None


class WarningNotice(_Strict):
    """The warning shown in one (region, kind, category)."""

    message_key: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64)
    audience: WarningAudience


class WarningPrevious(_Strict):
    region: str = Field(min_length=2)
    kind: WarningKind
    warnings: dict[str, WarningNotice | None]


class ThrottleRestore(_Strict):
    args: ThrottleArgs
    previous: ThrottlePrevious


class ThresholdRestore(_Strict):
    args: ThresholdArgs
    previous: ThresholdPrevious


class SurgeRestore(_Strict):
    args: SurgeArgs
    previous: SurgePrevious


class ExcludeUnreviewedRestore(_Strict):
    args: ExcludeUnreviewedArgs
    previous: ExcludeUnreviewedPrevious


class LivestreamRestore(_Strict):
    args: LivestreamArgs
    previous: LivestreamPrevious


class HashBlockRestore(_Strict):
    args: HashBlockArgs
    previous: HashBlockPrevious


class AdHoldRestore(_Strict):
    args: HoldNewAdvertisersArgs
    previous: AdHoldPrevious


class MatchSanctionRestore(_Strict):
    args: SanctionOnMatchArgs
    previous: MatchSanctionPrevious


class SuppressionRestore(_Strict):
    args: SuppressSuggestionsArgs
    previous: SuppressionPrevious


class HashShareRestore(_Strict):
    args: HashShareArgs
    previous: HashSharePrevious


class WarningRestore(_Strict):
    args: ShowWarningArgs
    previous: WarningPrevious


class FaultSpec(_Strict):
    """Body of `POST /faults`."""

    path_prefix: str = "/"
    # Only requests whose X-Operation starts with this ("apply-", "undo-"); None = any.
    operation_prefix: str | None = None
    # 0 = no failure, only latency.
    status: int = Field(default=500, ge=0, le=599)
    # None = every matching request until cleared (or until the outage window ends).
    times: int | None = Field(default=None, ge=1)
    latency_ms: int = Field(default=0, ge=0, le=600_000)
    outage_seconds: float | None = Field(default=None, gt=0)


# --- state ------------------------------------------------------------------------------------


@dataclass
class Queue:
    reviewers: int
    priority: Priority = "normal"

    def as_dict(self) -> dict[str, Any]:
        return {"reviewers": self.reviewers, "priority": self.priority}


@dataclass(frozen=True)
class Trace:
    """The logical operation a request names through its X-Incident-Id/X-Step-Id/X-Operation."""

    incident: str | None = None
    step: str | None = None
    operation: str | None = None

    @property
    def triple(self) -> tuple[str, str, str] | None:
        """The (incident, step, operation) triple, or None unless all three are present."""
        if self.incident and self.step and self.operation:
            return (self.incident, self.step, self.operation)
        return None


@dataclass(frozen=True)
class CachedResponse:
    fingerprint: str
    status: int
    body: dict[str, Any]


@dataclass
class FaultRule:
    path_prefix: str
    status: int
    remaining: int | None
    latency_ms: int
    # Monotonic deadline of an outage window; None = no window.
    expires_at: float | None
    operation_prefix: str | None = None

    def active(self, now: float) -> bool:
        """Whether the rule can still fire at monotonic time `now`."""
        if self.remaining is not None and self.remaining <= 0:
            return False
        return self.expires_at is None or now < self.expires_at

    def as_dict(self, now: float) -> dict[str, Any]:
        left = None if self.expires_at is None else round(max(0.0, self.expires_at - now), 3)
        return {
            "path_prefix": self.path_prefix,
            "operation_prefix": self.operation_prefix,
            "status": self.status,
            "remaining": self.remaining,
            "latency_ms": self.latency_ms,
            "seconds_left": left,
        }


@dataclass(frozen=True)
class FaultDecision:
    """What the matching fault rules do to one request: wait, then fail unless status is 0."""

    latency_ms: int = 0
    status: int = 0

    @property
    def fired(self) -> bool:
        return self.latency_ms > 0 or self.status > 0


@dataclass
class Stats:
    requests: int = 0
    applied: int = 0
    replayed: int = 0
    duplicates: int = 0
    faults_injected: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "applied": self.applied,
            "replayed": self.replayed,
            "duplicates": self.duplicates,
            "faults_injected": self.faults_injected,
        }


def _initial_thresholds() -> dict[str, float]:
    return {
        "incitement_to_violence": 0.8,
        "racial_hatred": 0.8,
        "terrorism": 0.85,
        "fraud": 0.9,
        "self_harm": 0.8,
        "threats": 0.8,
        "csam": 0.5,
    }


def _initial_queues() -> dict[str, Queue]:
    return {
        "general": Queue(40),
        "hate": Queue(12),
        "violent_extremism": Queue(8),
        "fraud": Queue(10),
        "self_harm": Queue(6),
        "child_safety": Queue(6),
    }


@dataclass(frozen=True)
class HashList:
    """A hash list the platform can match uploads against (fixed: lists are not created here)."""

    source: str
    hashes: int
    hash_types: tuple[str, ...]
    description: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "hashes": self.hashes,
            "hash_types": list(self.hash_types),
            "description": self.description,
        }


HASH_LISTS: dict[str, HashList] = {
    "gifct-perpetrator-content": HashList(
        "gifct-hsdb",
        48_117,
        ("pdq", "md5", "tmk", "vpdq"),
        "GIFCT hash-sharing database: attacker-produced footage and manifestos",
    ),
    "christchurch-2019": HashList(
        "gifct-hsdb",
        812,
        ("pdq", "md5", "tmk", "vpdq"),
        "Visually distinct copies of the Christchurch attack livestream (March 2019)",
    ),
    "internal-csam-known": HashList(
        "internal",
        1_204_533,
        ("pdq", "md5"),
        "Known child sexual abuse images confirmed by the platform's own reviewers",
    ),
}


def _unique(items: list[Any]) -> list[Any]:
    """`items` without repeats, in first-seen order."""
    return list(dict.fromkeys(items))


def _entries_of(
    table: dict[str, Any], path: tuple[str, ...], keys: Iterable[str]
) -> dict[str, Any]:
    """The entries `keys` of the branch of `table` at `path`, as JSON data (null = no entry)."""
    branch = table
    for name in path:
        branch = branch.get(name, {})
    return {k: (branch[k].model_dump() if k in branch else None) for k in _unique(list(keys))}


def _replace_entries(
    table: dict[str, Any], path: tuple[str, ...], values: Mapping[str, BaseModel | None]
) -> None:
    """Set the entries of the branch at `path` (None removes one).

    A branch left empty is dropped: an empty branch is the default state, so a restore that
    removes the last entry round-trips exactly.
    """
    branches = [table]
    for name in path:
        branches.append(branches[-1].setdefault(name, {}))
    leaf = branches[-1]
    for key, value in values.items():
        if value is None:
            leaf.pop(key, None)
        else:
            leaf[key] = value
    for parent, name in zip(reversed(branches[:-1]), reversed(path), strict=True):
        if parent[name]:
            break
        del parent[name]


def _dump(node: Any) -> Any:
    """A table of models as JSON data."""
    if isinstance(node, BaseModel):
        return node.model_dump()
    return {key: _dump(value) for key, value in node.items()}


def _same_target(what: str, previous: Any, args: Any) -> None:
    if previous != args:
        raise PlatformError(422, f"previous.{what} does not match args.{what}")


def _within_categories(previous: dict[str, Any], categories: list[str]) -> None:
    """A restore may only touch the categories its apply named."""
    extra = sorted(set(previous) - set(categories))
    if extra:
        raise PlatformError(
            422, f"previous names categories not in args.categories: {', '.join(extra)}"
        )


def _known_hash_list(list_id: str) -> HashList:
    known = HASH_LISTS.get(list_id)
    if known is None:
        raise PlatformError(404, f"unknown hash list {list_id!r}")
    return known


def fingerprint(method: str, path: str, body: Any) -> str:
    """A stable digest of a request, so a key reused for another request is caught."""
    canonical = json.dumps(
        [method.upper(), path, body], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class PlatformState:
    """Everything the sandbox platform remembers; `PlatformState()` is the initial state."""

    # region -> category -> policy; no entry = normal reach.
    recommender: dict[str, dict[str, Policy]] = field(default_factory=dict)
    detection: dict[str, float] = field(default_factory=_initial_thresholds)
    moderation: dict[str, Queue] = field(default_factory=_initial_queues)
    # region -> category -> exclusion; no entry = unreviewed content is recommended as usual.
    exclusions: dict[str, dict[str, Exclusion]] = field(default_factory=dict)
    # region -> audience -> restrictions; no entry = livestreaming unrestricted.
    livestream: dict[str, dict[str, Restrictions]] = field(default_factory=dict)
    # list id -> block; no entry = the list is not blocking uploads.
    hash_blocks: dict[str, HashBlock] = field(default_factory=dict)
    # region -> ad category -> hold; no entry = new advertisers' ads run as usual.
    ad_holds: dict[str, dict[str, AdHold]] = field(default_factory=dict)
    # list id -> sanction; no entry = a match blocks the upload (if blocking) but not the account.
    match_sanctions: dict[str, MatchSanction] = field(default_factory=dict)
    # region -> category -> suppression; no entry = suggested as usual.
    search_suppressions: dict[str, dict[str, Suppression]] = field(default_factory=dict)
    # list id -> share; no entry = the list's hashes stay on the platform.
    hash_shares: dict[str, HashShare] = field(default_factory=dict)
    # region -> kind -> category -> warning; no entry = no warning shown.
    user_warnings: dict[str, dict[str, dict[str, WarningNotice]]] = field(default_factory=dict)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    applications: list[dict[str, Any]] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)
    faults: list[FaultRule] = field(default_factory=list)
    idempotency: dict[str, CachedResponse] = field(default_factory=dict)
    applied_operations: set[tuple[str, str, str]] = field(default_factory=set)

    # --- recommender.throttle -----------------------------------------------------------

    def _policies_of(self, region: str, categories: list[str]) -> dict[str, Any]:
        current = self.recommender.get(region, {})
        return {
            c: (current[c].model_dump() if c in current else None)
            for c in dict.fromkeys(categories)
        }

    def apply_throttle(self, args: ThrottleArgs) -> dict[str, Any]:
        """Set the reach policy of each category in the region; answer the policies replaced."""
        previous = {
            "region": args.region,
            "policies": self._policies_of(args.region, args.categories),
        }
        region = self.recommender.setdefault(args.region, {})
        for category in args.categories:
            old = region.get(category)
            # A null reshare_limit leaves the current limit as it is.
            limit = (
                args.reshare_limit
                if args.reshare_limit is not None
                else (old.reshare_limit if old else None)
            )
            region[category] = Policy(
                reach_multiplier=args.reach_multiplier,
                reshare_limit=limit,
                max_account_age_days=args.max_account_age_days,
                keywords=_unique(args.keywords),
            )
        return {"previous": previous}

    def restore_throttle(self, req: ThrottleRestore) -> dict[str, Any]:
        """Put back the policies of `previous` (null = remove the policy)."""
        prev = req.previous
        if prev.region != req.args.region:
            raise PlatformError(422, "previous.region does not match args.region")
        replaced = {
            "region": prev.region,
            "policies": self._policies_of(prev.region, list(prev.policies)),
        }
        region = self.recommender.setdefault(prev.region, {})
        for category, policy in prev.policies.items():
            if policy is None:
                region.pop(category, None)
            else:
                region[category] = policy
        if not region:
            # An empty region is the default state: drop it so restore round-trips exactly.
            del self.recommender[prev.region]
        return {"previous": replaced}

    # --- detection.set_threshold ----------------------------------------------------------

    def _classifier(self, name: str) -> float:
        if name not in self.detection:
            raise PlatformError(404, f"unknown classifier {name!r}")
        return self.detection[name]

    def apply_threshold(self, args: ThresholdArgs) -> dict[str, Any]:
        """Set a classifier's threshold; answer the threshold replaced."""
        old = self._classifier(args.classifier)
        self.detection[args.classifier] = args.threshold
        return {"previous": {"classifier": args.classifier, "threshold": old}}

    def restore_threshold(self, req: ThresholdRestore) -> dict[str, Any]:
        """Put back a classifier's previous threshold."""
        prev = req.previous
        if prev.classifier != req.args.classifier:
            raise PlatformError(422, "previous.classifier does not match args.classifier")
        old = self._classifier(prev.classifier)
        self.detection[prev.classifier] = prev.threshold
        return {"previous": {"classifier": prev.classifier, "threshold": old}}

    # --- moderation.surge -----------------------------------------------------------------

    def _queue(self, name: str) -> Queue:
        if name not in self.moderation:
            raise PlatformError(404, f"unknown queue {name!r}")
        return self.moderation[name]

    def apply_surge(self, args: SurgeArgs) -> dict[str, Any]:
        """Add reviewers to a queue and set its priority; answer the queue as it was."""
        queue = self._queue(args.queue)
        previous = {"queue": args.queue, **queue.as_dict()}
        queue.reviewers += args.extra_reviewers
        queue.priority = args.priority
        return {"previous": previous}

    def restore_surge(self, req: SurgeRestore) -> dict[str, Any]:
        """Put back a queue's previous reviewers and priority."""
        prev = req.previous
        if prev.queue != req.args.queue:
            raise PlatformError(422, "previous.queue does not match args.queue")
        queue = self._queue(prev.queue)
        replaced = {"queue": prev.queue, **queue.as_dict()}
        queue.reviewers = prev.reviewers
        queue.priority = prev.priority
        return {"previous": replaced}

    # --- recommender.exclude_unreviewed ----------------------------------------------------

    def _exclusions_of(self, region: str, categories: list[str]) -> dict[str, Any]:
        current = self.exclusions.get(region, {})
        return {c: (current[c].model_dump() if c in current else None) for c in _unique(categories)}

    def apply_exclude_unreviewed(self, args: ExcludeUnreviewedArgs) -> dict[str, Any]:
        """Set the exclusion of each category in the region; answer the exclusions replaced."""
        previous = {
            "region": args.region,
            "exclusions": self._exclusions_of(args.region, args.categories),
        }
        exclusion = Exclusion(surfaces=_unique(args.surfaces), min_score=args.min_score)
        region = self.exclusions.setdefault(args.region, {})
        for category in args.categories:
            region[category] = exclusion
        return {"previous": previous}

    def restore_exclude_unreviewed(self, req: ExcludeUnreviewedRestore) -> dict[str, Any]:
        """Put back the exclusions of `previous` (null = remove the exclusion)."""
        prev = req.previous
        if prev.region != req.args.region:
            raise PlatformError(422, "previous.region does not match args.region")
        replaced = {
            "region": prev.region,
            "exclusions": self._exclusions_of(prev.region, list(prev.exclusions)),
        }
        region = self.exclusions.setdefault(prev.region, {})
        for category, exclusion in prev.exclusions.items():
            if exclusion is None:
                region.pop(category, None)
            else:
                region[category] = exclusion
        if not region:
            del self.exclusions[prev.region]
        return {"previous": replaced}

    # --- livestream.restrict ----------------------------------------------------------------

    def _restrictions_of(self, region: str, audience: str) -> dict[str, Any] | None:
        current = self.livestream.get(region, {}).get(audience)
        return current.model_dump() if current is not None else None

    def apply_livestream(self, args: LivestreamArgs) -> dict[str, Any]:
        """Add the requested restrictions for (region, audience); answer those replaced.

        Restrictions only add up: a flag left false keeps whatever is already in force, so one
        incident cannot lift a restriction another put on.
        """
        old = self._restrictions_of(args.region, args.audience)
        merged = {name: bool(getattr(args, name) or (old or {}).get(name)) for name in RESTRICTIONS}
        self.livestream.setdefault(args.region, {})[args.audience] = Restrictions(**merged)
        return {"previous": {"region": args.region, "audience": args.audience, "restrictions": old}}

    def restore_livestream(self, req: LivestreamRestore) -> dict[str, Any]:
        """Put back the restrictions of `previous` (null = no restriction)."""
        prev = req.previous
        if (prev.region, prev.audience) != (req.args.region, req.args.audience):
            raise PlatformError(422, "previous region/audience does not match args")
        replaced = {
            "region": prev.region,
            "audience": prev.audience,
            "restrictions": self._restrictions_of(prev.region, prev.audience),
        }
        region = self.livestream.setdefault(prev.region, {})
        if prev.restrictions is None:
            region.pop(prev.audience, None)
        else:
            region[prev.audience] = prev.restrictions
        if not region:
            del self.livestream[prev.region]
        return {"previous": replaced}

    # --- hashes.block -----------------------------------------------------------------------

    @staticmethod
    def _hash_list(list_id: str, source: str, hash_types: list[str]) -> HashList:
        """The known list `list_id`, checked against the source and hash types asked for."""
        known = HASH_LISTS.get(list_id)
        if known is None:
            raise PlatformError(404, f"unknown hash list {list_id!r}")
        if source != known.source:
            raise PlatformError(
                422, f"hash list {list_id!r} comes from {known.source!r}, not {source!r}"
            )
        missing = [t for t in hash_types if t not in known.hash_types]
        if missing:
            raise PlatformError(
                422,
                f"hash list {list_id!r} has no {', '.join(missing)} hashes "
                f"(it has {', '.join(known.hash_types)})",
            )
        return known

    def _block_of(self, list_id: str) -> dict[str, Any] | None:
        current = self.hash_blocks.get(list_id)
        return current.model_dump() if current is not None else None

    def apply_hash_block(self, args: HashBlockArgs) -> dict[str, Any]:
        """Block uploads matching a known hash list; answer the block replaced (null = none)."""
        self._hash_list(args.list_id, args.source, args.hash_types)
        old = self._block_of(args.list_id)
        self.hash_blocks[args.list_id] = HashBlock(
            source=args.source,
            hash_types=_unique(args.hash_types),
            action=args.action,
            blocking=True,
        )
        return {"previous": {"list_id": args.list_id, "block": old}}

    def restore_hash_block(self, req: HashBlockRestore) -> dict[str, Any]:
        """Put back the block of `previous` (null = the list stops blocking)."""
        prev = req.previous
        if prev.list_id != req.args.list_id:
            raise PlatformError(422, "previous.list_id does not match args.list_id")
        if prev.block is None:
            if prev.list_id not in HASH_LISTS:
                raise PlatformError(404, f"unknown hash list {prev.list_id!r}")
        else:
            self._hash_list(prev.list_id, prev.block.source, prev.block.hash_types)
        replaced = {"list_id": prev.list_id, "block": self._block_of(prev.list_id)}
        if prev.block is None:
            self.hash_blocks.pop(prev.list_id, None)
        else:
            self.hash_blocks[prev.list_id] = prev.block
        return {"previous": replaced}

    # --- ads.hold_new_advertisers -------------------------------------------------------------

    def apply_ad_hold(self, args: HoldNewAdvertisersArgs) -> dict[str, Any]:
        """Hold new advertisers' ads in each category of the region; answer the holds replaced."""
        path = (args.region,)
        previous = {
            "region": args.region,
            "holds": _entries_of(self.ad_holds, path, args.categories),
        }
        hold = AdHold(max_account_age_days=args.max_account_age_days, review=args.review)
        _replace_entries(self.ad_holds, path, dict.fromkeys(args.categories, hold))
        return {"previous": previous}

    def restore_ad_hold(self, req: AdHoldRestore) -> dict[str, Any]:
        """Put back the holds of `previous` (null = no hold)."""
        prev = req.previous
        _same_target("region", prev.region, req.args.region)
        _within_categories(prev.holds, req.args.categories)
        path = (prev.region,)
        replaced = {"region": prev.region, "holds": _entries_of(self.ad_holds, path, prev.holds)}
        _replace_entries(self.ad_holds, path, prev.holds)
        return {"previous": replaced}

    # --- accounts.sanction_on_match ------------------------------------------------------------

    def _sanction_of(self, list_id: str) -> dict[str, Any] | None:
        current = self.match_sanctions.get(list_id)
        return current.model_dump() if current is not None else None

    def apply_match_sanction(self, args: SanctionOnMatchArgs) -> dict[str, Any]:
        """Sanction accounts uploading matches of a known list; answer the policy replaced."""
        _known_hash_list(args.list_id)
        old = self._sanction_of(args.list_id)
        self.match_sanctions[args.list_id] = MatchSanction(
            sanction=args.sanction,
            preserve_evidence=args.preserve_evidence,
            report_to=_unique(args.report_to),
        )
        return {"previous": {"list_id": args.list_id, "policy": old}}

    def restore_match_sanction(self, req: MatchSanctionRestore) -> dict[str, Any]:
        """Put back the policy of `previous` (null = matches no longer sanction accounts)."""
        prev = req.previous
        _same_target("list_id", prev.list_id, req.args.list_id)
        _known_hash_list(prev.list_id)
        replaced = {"list_id": prev.list_id, "policy": self._sanction_of(prev.list_id)}
        if prev.policy is None:
            self.match_sanctions.pop(prev.list_id, None)
        else:
            self.match_sanctions[prev.list_id] = prev.policy
        return {"previous": replaced}

    # --- search.suppress_suggestions -----------------------------------------------------------

    def apply_suppress_suggestions(self, args: SuppressSuggestionsArgs) -> dict[str, Any]:
        """Keep each category (and the terms) out of suggestions; answer what it replaced."""
        path = (args.region,)
        previous = {
            "region": args.region,
            "suppressions": _entries_of(self.search_suppressions, path, args.categories),
        }
        suppression = Suppression(
            terms=_unique(args.terms), show_support_resources=args.show_support_resources
        )
        _replace_entries(
            self.search_suppressions, path, dict.fromkeys(args.categories, suppression)
        )
        return {"previous": previous}

    def restore_suppress_suggestions(self, req: SuppressionRestore) -> dict[str, Any]:
        """Put back the suppressions of `previous` (null = suggested as usual)."""
        prev = req.previous
        _same_target("region", prev.region, req.args.region)
        _within_categories(prev.suppressions, req.args.categories)
        path = (prev.region,)
        replaced = {
            "region": prev.region,
            "suppressions": _entries_of(self.search_suppressions, path, prev.suppressions),
        }
        _replace_entries(self.search_suppressions, path, prev.suppressions)
        return {"previous": replaced}

    # --- hashes.share --------------------------------------------------------------------------

    def _share_of(self, list_id: str) -> dict[str, Any] | None:
        current = self.hash_shares.get(list_id)
        return current.model_dump() if current is not None else None

    def apply_hash_share(self, args: HashShareArgs) -> dict[str, Any]:
        """Share a known list's hashes with partners; answer the share replaced (null = none)."""
        _known_hash_list(args.list_id)
        old = self._share_of(args.list_id)
        self.hash_shares[args.list_id] = HashShare(
            partners=_unique(args.partners), include_new_hashes=args.include_new_hashes
        )
        return {"previous": {"list_id": args.list_id, "share": old}}

    def restore_hash_share(self, req: HashShareRestore) -> dict[str, Any]:
        """Put back the share of `previous` (null = stop sharing; shared hashes stay shared)."""
        prev = req.previous
        _same_target("list_id", prev.list_id, req.args.list_id)
        _known_hash_list(prev.list_id)
        replaced = {"list_id": prev.list_id, "share": self._share_of(prev.list_id)}
        if prev.share is None:
            self.hash_shares.pop(prev.list_id, None)
        else:
            self.hash_shares[prev.list_id] = prev.share
        return {"previous": replaced}

    # --- users.show_warning --------------------------------------------------------------------

    def apply_warning(self, args: ShowWarningArgs) -> dict[str, Any]:
        """Show the warning on each category in the region; answer the warnings replaced."""
        path = (args.region, args.kind)
        previous = {
            "region": args.region,
            "kind": args.kind,
            "warnings": _entries_of(self.user_warnings, path, args.categories),
        }
        notice = WarningNotice(message_key=args.message_key, audience=args.audience)
        _replace_entries(self.user_warnings, path, dict.fromkeys(args.categories, notice))
        return {"previous": previous}

    def restore_warning(self, req: WarningRestore) -> dict[str, Any]:
        """Put back the warnings of `previous` (null = no warning of that kind)."""
        prev = req.previous
        _same_target("region", prev.region, req.args.region)
        _same_target("kind", prev.kind, req.args.kind)
        _within_categories(prev.warnings, req.args.categories)
        path = (prev.region, prev.kind)
        replaced = {
            "region": prev.region,
            "kind": prev.kind,
            "warnings": _entries_of(self.user_warnings, path, prev.warnings),
        }
        _replace_entries(self.user_warnings, path, prev.warnings)
        return {"previous": replaced}

    # --- notify ---------------------------------------------------------------------------

    def receive_notification(
        self,
        *,
        stakeholder: str,
        body: Any,
        signature: str | None,
        signature_valid: bool,
        received_at: str,
        idempotency_key: str,
    ) -> dict[str, Any]:
        """Store a webhook message; answer how many messages this stakeholder has received."""
        self.notifications.append(
            {
                "stakeholder": stakeholder,
                "body": body,
                "signature": signature,
                "signature_valid": signature_valid,
                "received_at": received_at,
                "idempotency_key": idempotency_key,
            }
        )
        received = sum(1 for n in self.notifications if n["stakeholder"] == stakeholder)
        return {"received": received}

    # --- idempotency and bookkeeping ------------------------------------------------------

    def cached(self, key: str, print_: str) -> CachedResponse | None:
        """The response first given under `key`, or None if the key is new.

        Raises:
            PlatformError: 422 when the key was first used with a different request.
        """
        hit = self.idempotency.get(key)
        if hit is None:
            return None
        if hit.fingerprint != print_:
            raise PlatformError(422, f"Idempotency-Key {key!r} was already used with another body")
        return hit

    def record_application(
        self,
        *,
        key: str,
        print_: str,
        trace: Trace,
        path: str,
        response: dict[str, Any],
        at: str,
    ) -> bool:
        """Remember an applied mutation; return True if its logical operation was a duplicate."""
        self.idempotency[key] = CachedResponse(print_, 200, response)
        self.applications.append(
            {
                "key": key,
                "incident": trace.incident,
                "step": trace.step,
                "operation": trace.operation,
                "path": path,
                "time": at,
            }
        )
        self.stats.applied += 1
        triple = trace.triple
        duplicate = triple is not None and triple in self.applied_operations
        if duplicate:
            self.stats.duplicates += 1
        if triple is not None:
            self.applied_operations.add(triple)
        return duplicate

    # --- faults ---------------------------------------------------------------------------

    def add_fault(self, spec: FaultSpec, now: float) -> FaultRule:
        """Install a fault rule at monotonic time `now`."""
        expires = None if spec.outage_seconds is None else now + spec.outage_seconds
        rule = FaultRule(
            spec.path_prefix,
            spec.status,
            spec.times,
            spec.latency_ms,
            expires,
            spec.operation_prefix,
        )
        self.faults.append(rule)
        return rule

    def clear_faults(self) -> int:
        """Remove every fault rule; return how many there were."""
        count = len(self.faults)
        self.faults.clear()
        return count

    def match_faults(self, path: str, now: float, operation: str = "") -> FaultDecision:
        """Consume one firing of every active rule matching `path` (and `operation`, the
        request's X-Operation, for a rule that names one).

        Latencies add up; the first failing rule (status != 0) decides the status.
        """
        self.faults = [r for r in self.faults if r.active(now)]
        latency, status = 0, 0
        for rule in self.faults:
            if not path.startswith(rule.path_prefix):
                continue
            if rule.operation_prefix is not None and not operation.startswith(
                rule.operation_prefix
            ):
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
            latency += rule.latency_ms
            status = status or rule.status
        decision = FaultDecision(latency, status)
        if decision.fired:
            self.stats.faults_injected += 1
        return decision

    # --- views ----------------------------------------------------------------------------

    def snapshot(self, now: float) -> dict[str, Any]:
        """The whole state as JSON-ready data (copies, so callers can't alias it)."""
        return {
            "recommender": {
                region: {c: p.model_dump() for c, p in policies.items()}
                for region, policies in self.recommender.items()
            },
            "detection": dict(self.detection),
            "moderation": {name: q.as_dict() for name, q in self.moderation.items()},
            "recommender_exclusions": {
                region: {c: e.model_dump() for c, e in exclusions.items()}
                for region, exclusions in self.exclusions.items()
            },
            "livestream": {
                region: {a: r.model_dump() for a, r in audiences.items()}
                for region, audiences in self.livestream.items()
            },
            "hashes": {list_id: b.model_dump() for list_id, b in self.hash_blocks.items()},
            "hash_lists": {list_id: h.as_dict() for list_id, h in HASH_LISTS.items()},
            "hash_shares": _dump(self.hash_shares),
            "match_sanctions": _dump(self.match_sanctions),
            "ad_holds": _dump(self.ad_holds),
            "search_suppressions": _dump(self.search_suppressions),
            "user_warnings": _dump(self.user_warnings),
            "notifications": copy.deepcopy(self.notifications),
            "applications": copy.deepcopy(self.applications),
            "stats": self.stats.as_dict(),
            "faults": [r.as_dict(now) for r in self.faults if r.active(now)],
        }
