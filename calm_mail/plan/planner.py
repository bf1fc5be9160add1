"""The plan of one edition (`plan_edition`): for every user, a reason not to send, or (arm,
items, source, send time).

It reads the inputs (the audience of the shard held as a dict, the Personalize output streamed
and joined to it), plans every user (`plan_user`), checks the Personalize output's quality,
and returns the plan sorted by user id (`PlanResult`); it records nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from operator import attrgetter
from typing import Protocol

from calm_mail.campaign import Campaign
from calm_mail.edition import Edition
from calm_mail.errors import UsageError
from calm_mail.inputs import (
    check_recommendation_quality,
    iter_audience,
    iter_completions,
    iter_recommendations,
    read_catalog,
    read_editorial,
)
from calm_mail.inputs.personalize import unknown_ids_text, unknown_share_text
from calm_mail.plan.assign import ArmReader, refuse_changed_seed
from calm_mail.plan.context import PlanContext, build_context, edition_instant
from calm_mail.plan.eligibility import Eligibility
from calm_mail.plan.rules import RuleSet, kids_items, load_campaign_rules
from calm_mail.plan.sendtime import send_window
from calm_mail.plan.summary import PlanSummary, Tally
from calm_mail.plan.user import UserTrace, plan_user
from calm_mail.records import (
    ContentSource,
    Exclusion,
    Item,
    PlannedDelivery,
    Recommendation,
    SkipCounter,
    User,
)
from calm_mail.store import shard_of  # the ledger's hash, so shards agree

STICKY_CHUNK = 10_000


class SuppressionLookup(Protocol):
    def suppressed(self, emails: Iterable[str]) -> set[str]: ...


class SentEdition(Protocol):
    @property
    def edition(self) -> str: ...


class EditionHistory(Protocol):
    def last_sent_edition(self, campaign: str, before: str) -> SentEdition | None: ...


class PlannerStore(Protocol):
    """What the planner needs from the ledger, one repository per concern: sticky arms and
    seeds, suppressions, and the campaign's last mailed edition (`store.Ledger` and
    `assign.MemoryStore` have this shape)."""

    @property
    def assignments(self) -> ArmReader: ...

    @property
    def suppressions(self) -> SuppressionLookup: ...

    @property
    def editions(self) -> EditionHistory: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanResult:
    deliveries: tuple[PlannedDelivery, ...]  # sorted by user_id
    exclusions: tuple[Exclusion, ...]  # sorted by user_id
    summary: PlanSummary
    catalog: Mapping[str, Item]
    traces: Mapping[str, UserTrace] = field(default_factory=dict)
    # (user, arm) of the planned users with no sticky arm yet: what recording the plan
    # exposes for the first time
    new_assignments: tuple[tuple[str, str], ...] = ()
    # Planned users (holdout included) with a usable Personalize line; None when no arm
    # reads Personalize (there is no coverage to check then)
    personalize_covered: int | None = None
    # Users asked to be explained whom the audience (of the shard) does not hold
    absent: frozenset[str] = frozenset()

    def explain(self, user_id: str) -> UserTrace:
        trace = self.traces.get(user_id)
        if trace is None:
            raise UsageError(
                f"user {user_id!r} was not traced; pass explain={user_id!r} to "
                "plan_edition (calm-mail plan --explain USER)"
            )
        return trace


@dataclass(slots=True)
class _Inputs:
    catalog: dict[str, Item]
    audience: dict[str, User]
    skips: dict[str, SkipCounter]


def plan_edition(
    campaign: Campaign,
    edition: Edition | str,
    *,
    store: PlannerStore,
    now: datetime,
    shard: tuple[int, int] | None = None,
    explain: str | Collection[str] | None = None,
) -> PlanResult:
    """Plan the edition for the whole audience (or shard ``(k, n)`` of it), recording nothing.

    Refuses a changed experiment seed, reads every input, plans every user, checks the
    Personalize output's quality and returns the plan sorted by user id, with the arms it
    would expose for the first time (`PlanResult.new_assignments`; the edition runner records
    them once pre-flight passed). `now` only dates warnings (SendGrid's window); the plan
    itself depends on the inputs and the sticky arms alone.
    """
    ed = edition if isinstance(edition, Edition) else Edition.parse(edition)
    refuse_changed_seed(store.assignments, campaign.experiment, source=str(campaign.path))
    inputs = _read_tables(campaign, ed, shard)
    ctx = _context(campaign, ed, store, inputs, load_campaign_rules(campaign))
    traced = {explain} if isinstance(explain, str) else set(explain or ())
    tally = Tally(
        {a.name: str(a.source) for a in campaign.experiment.arms},
        inputs.catalog,
        ctx.new,
        kids_items(inputs.catalog),
    )
    tally.audience = len(inputs.audience)
    outcomes, traces, covered = _plan_all(campaign, ed, inputs, ctx, tally, traced)
    deliveries = sorted(
        (o for o in outcomes if isinstance(o, PlannedDelivery)), key=attrgetter("user_id")
    )
    exclusions = sorted(
        (o for o in outcomes if isinstance(o, Exclusion)), key=attrgetter("user_id")
    )
    fresh = tuple((d.user_id, d.arm) for d in deliveries if d.user_id not in ctx.sticky)
    summary = tally.summary(
        campaign=campaign.name,
        edition=ed.key,
        experiment=campaign.experiment.name,
        weights=campaign.experiment.weights,
        shard=shard,
        dropped_by_step=ctx.rules.drops_in_order(),
        skips={k: v.as_dict() for k, v in inputs.skips.items()},
        warnings=_warnings(deliveries, ctx, inputs, now),
    )
    absent = frozenset(traced - set(traces))
    for user_id in absent:
        traces[user_id] = UserTrace(
            user_id=user_id, outcome="not in the audience" + (" of this shard" if shard else "")
        )
    return PlanResult(
        deliveries=tuple(deliveries),
        exclusions=tuple(exclusions),
        summary=summary,
        catalog=inputs.catalog,
        traces=traces,
        absent=absent,
        new_assignments=fresh,
        personalize_covered=(
            None if covered is None else sum(1 for d in deliveries if d.user_id in covered)
        ),
    )


def _warnings(
    deliveries: list[PlannedDelivery], ctx: PlanContext, inputs: _Inputs, now: datetime
) -> list[str]:
    """What the plan's reader should know: send times already past or too far ahead, items
    the hard guards removed, unknown ids dropped from the Personalize output."""
    warnings = send_window((d.send_at for d in deliveries if not d.is_holdout), now).problems()
    if ctx.rules.guard_hits:
        warnings.append(
            f"the hard guards removed {ctx.rules.guard_hits} item(s) the rule file "
            "let through (kids content, repeats or too many items)"
        )
    personalize = inputs.skips["recommendations"]
    if personalize.unknown_ids:
        warnings.append(
            f"{unknown_share_text(personalize, 'read')} and were dropped (retired content?): "
            f"{unknown_ids_text(personalize)}"
        )
    return warnings


def _read_tables(campaign: Campaign, ed: Edition, shard: tuple[int, int] | None) -> _Inputs:
    skips = {name: SkipCounter() for name in ("catalog", "audience", "recommendations", "history")}
    catalog = read_catalog(campaign.input_path("catalog", ed), skips=skips["catalog"])
    users = iter_audience(campaign.input_path("audience", ed), skips=skips["audience"])
    in_shard = _shard_filter(shard)
    audience = {u.user_id: u for u in users if in_shard(u.user_id)}
    return _Inputs(catalog=catalog, audience=audience, skips=skips)


def _shard_filter(shard: tuple[int, int] | None) -> Callable[[str], bool]:
    if shard is None:
        return lambda user_id: True
    k, n = shard
    return lambda user_id: shard_of(user_id, n) == k


def _context(
    campaign: Campaign, ed: Edition, store: PlannerStore, inputs: _Inputs, rules: RuleSet
) -> PlanContext:
    audience = inputs.audience
    # The users' own rows first; the ledger is asked only about the users who pass them
    probe = Eligibility(campaign, ed, now=edition_instant(ed), suppressed=frozenset())
    own = {u: probe.own_reason(user) for u, user in audience.items()}
    eligible = [u for u, reason in own.items() if reason is None]
    suppressed = store.suppressions.suppressed(audience[u].email for u in eligible)
    sticky: dict[str, str] = {}
    for start in range(0, len(eligible), STICKY_CHUNK):
        sticky.update(
            store.assignments.get_assignments(
                campaign.experiment.name, eligible[start : start + STICKY_CHUNK]
            )
        )
    editorial = read_editorial(
        campaign.input_path("editorial", ed), ed.key, known_items=inputs.catalog
    )
    history = iter_completions(campaign.input_path("history", ed), skips=inputs.skips["history"])
    ctx = build_context(
        campaign,
        ed,
        catalog=inputs.catalog,
        editorial=editorial,
        completions=history,
        sticky=sticky,
        suppressed=suppressed,
        last_sent=last_sent(store, campaign, ed),
        rules=rules,
        users=audience.keys(),
    )
    ctx.reasons.update((u, reason) for u, reason in own.items() if reason is not None)
    return ctx


def last_sent(store: PlannerStore, campaign: Campaign, ed: Edition) -> date | None:
    """The send date of the campaign's last edition that mailed anyone."""
    info = store.editions.last_sent_edition(campaign.name, ed.key)
    return Edition.parse(info.edition).send_date if info is not None else None


def _plan_all(
    campaign: Campaign,
    ed: Edition,
    inputs: _Inputs,
    ctx: PlanContext,
    tally: Tally,
    traced: set[str],
) -> tuple[list[PlannedDelivery | Exclusion], dict[str, UserTrace], set[str] | None]:
    """Plan users with a usable Personalize line as it streams past, then everyone else.
    Also returns the users with such a line (None when no arm reads Personalize)."""
    outcomes: list[PlannedDelivery | Exclusion] = []
    traces: dict[str, UserTrace] = {}
    audience = inputs.audience
    done: set[str] = set()

    def plan(user: User, rec: Recommendation | None) -> None:
        outcome, trace = plan_user(user, rec, ctx, explain=user.user_id in traced)
        outcomes.append(outcome)
        tally.add(outcome, adult=not user.is_kids_profile)
        if trace is not None:
            traces[user.user_id] = trace

    reads_personalize = any(a.source is ContentSource.PERSONALIZE for a in campaign.experiment.arms)
    if reads_personalize:
        skips = inputs.skips["recommendations"]
        prefix = campaign.input_path("recommendations", ed)
        for rec in iter_recommendations(prefix, skips=skips, known_items=inputs.catalog.keys()):
            user = audience.get(rec.user_id)  # the reader yields each user once
            if user is not None:
                done.add(rec.user_id)
                plan(user, rec)
        _check_quality(campaign, ed, inputs, covered=len(done))
    for user_id, user in audience.items():
        if user_id not in done:
            plan(user, None)
    return outcomes, traces, done if reads_personalize else None


def _check_quality(campaign: Campaign, ed: Edition, inputs: _Inputs, *, covered: int) -> None:
    check_recommendation_quality(
        inputs.skips["recommendations"],
        covered_users=covered,
        audience_size=len(inputs.audience),
        max_bad_share=campaign.inputs.max_bad_share,
        min_coverage=campaign.inputs.min_coverage,
        source=campaign.input_path("recommendations", ed),
        max_unknown_share=campaign.inputs.max_unknown_item_share,
        catalog=campaign.input_path("catalog", ed),
    )
