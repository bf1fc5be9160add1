"""The plan of one edition: for every user, a reason not to send, or (arm, items, source, send
time).

`plan_edition` reads the inputs (the audience of the shard held as a dict, the Personalize output
streamed and joined to it), and `plan_user` decides one user: eligibility, arm (sticky, else the
GrowthBook hash), the arm's content source, the rules, the editorial fallback, the send time.
Everything time-relative (inactivity, popularity) is measured from the edition's send date, not
from the clock, so the same inputs give a byte-identical plan whenever it runs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from operator import attrgetter
from pathlib import Path
from typing import Any, Protocol

import orjson

from calm_mail import collector
from calm_mail.campaign import Campaign
from calm_mail.edition import Edition
from calm_mail.errors import UsageError
from calm_mail.plan.assign import Assigner, AssignmentStore, SeedStore, check_experiment
from calm_mail.plan.eligibility import Eligibility
from calm_mail.plan.rules import (
    BoundRules,
    EditionData,
    OnlyNew,
    RuleSet,
    UserView,
    kids_items,
    load_campaign_rules,
    new_items,
)
from calm_mail.plan.sendtime import SendTimer, window_problems
from calm_mail.plan.sources import PopularityCounter, Sources, popular_items
from calm_mail.plan.summary import PlanSummary, Tally, format_summary
from calm_mail.records import (
    Completion,
    ContentSource,
    EditorialPicks,
    Exclusion,
    Item,
    PlannedDelivery,
    Recommendation,
    SkipCounter,
    TraceStep,
    User,
)

TOO_FEW_ITEMS = "too_few_items"
ARM_REMOVED = "arm_removed"
STICKY_CHUNK = 10_000
_EMPTY: frozenset[str] = frozenset()
_UNKNOWN = "\x00not worked out"  # a `PlanContext.reasons` miss (None means eligible)

__all__ = [
    "PlanContext",
    "PlanResult",
    "UserTrace",
    "build_context",
    "explain",
    "format_summary",
    "plan_edition",
    "plan_user",
    "write_plan",
]


class ArmStore(AssignmentStore, SeedStore, Protocol):
    """Sticky assignments and the experiment's seed (the ledger's `assignments`)."""


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
    def assignments(self) -> ArmStore: ...

    @property
    def suppressions(self) -> SuppressionLookup: ...

    @property
    def editions(self) -> EditionHistory: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class UserTrace:
    """Everything the plan decided about one user, and why (`calm-mail plan --explain`)."""

    user_id: str
    eligibility: str | None = None
    arm: str | None = None
    arm_why: str = ""
    source: str | None = None
    candidates: int = 0
    steps: tuple[TraceStep, ...] = ()
    fallback: bool = False
    fallback_why: str = ""
    fallback_steps: tuple[TraceStep, ...] = ()
    item_ids: tuple[str, ...] = ()
    send_at: datetime | None = None
    timezone: str | None = None
    outcome: str = ""


@dataclass(slots=True, kw_only=True)
class PlanContext:
    """The edition, prepared once, that `plan_user` needs for every user."""

    edition: str
    eligibility: Eligibility
    assigner: Assigner
    sticky: Mapping[str, str]
    arm_sources: Mapping[str, ContentSource]
    sources: Sources
    rules: BoundRules
    completed: Mapping[str, frozenset[str] | set[str]]
    timer: SendTimer
    catalog: Mapping[str, Item]
    new: frozenset[str]
    # Worked out ahead for every user of the plan (`_decide_ahead`), asked again per user
    hashed: dict[str, str] = field(default_factory=dict)  # user -> hash arm
    reasons: dict[str, str | None] = field(default_factory=dict)  # user -> ineligibility

    def reason(self, user: User) -> str | None:
        """Why `user` gets no email (eligibility), or None."""
        found = self.reasons.get(user.user_id, _UNKNOWN)
        return self.eligibility.reason(user) if found is _UNKNOWN else found

    def arm(self, user_id: str, *, explain: bool = False) -> tuple[str, str]:
        """(arm, why): the recorded arm of an exposed user, else the hash arm. The why is
        only spelled out when `explain` (the planner's hot path does not need it)."""
        recorded = self.sticky.get(user_id)
        if recorded is not None:
            return recorded, "sticky: recorded at the user's first exposure"
        if not explain:
            known = self.hashed.get(user_id)
            if known is not None:
                return known, ""
        n = self.assigner.hash(user_id)
        arm = self.assigner.arm_at(n)
        if not explain:
            return arm, ""
        return arm, f"hash v2 of seed {self.assigner.seed!r} and the user id = {n:.4f}"


def build_context(
    campaign: Campaign,
    edition: Edition | str,
    *,
    catalog: Mapping[str, Item],
    editorial: EditorialPicks,
    completions: Iterable[Completion] = (),
    sticky: Mapping[str, str] | None = None,
    suppressed: Collection[str] = (),
    last_sent: date | None = None,
    rules: RuleSet | None = None,
    users: Collection[str] | None = None,
) -> PlanContext:
    """Prepare an edition from its inputs (records, already read).

    `completions` stream past once: they feed the popularity ranking and each user's completed
    set (only for `users`, when given, so a shard keeps only its own users' history).
    """
    ed = edition if isinstance(edition, Edition) else Edition.parse(edition)
    rule_set = rules or load_campaign_rules(campaign)
    data = EditionData.build(ed.key, ed.send_date, catalog)
    as_of = edition_instant(ed)
    only_new = next((s.params for s in rule_set.steps if isinstance(s.params, OnlyNew)), None)
    new = new_items(data, only_new.days if only_new else OnlyNew().days)
    popularity = PopularityCounter(as_of - timedelta(days=campaign.content.popular_days), as_of)
    completed: dict[str, set[str]] = {}
    for c in completions:
        popularity.add(c)
        if users is None or c.user_id in users:
            completed.setdefault(c.user_id, set()).add(c.item_id)
    popular = popular_items(popularity.counts, catalog, among=new if only_new else None)
    return PlanContext(
        edition=ed.key,
        eligibility=Eligibility(
            campaign,
            ed,
            now=as_of,
            last_sent=last_sent,
            suppressed=frozenset(e.strip().lower() for e in suppressed),
        ),
        assigner=Assigner(campaign.experiment),
        sticky=dict(sticky or {}),
        arm_sources={arm.name: arm.source for arm in campaign.experiment.arms},
        sources=Sources(editorial, popular, catalog),
        rules=rule_set.bind(data, campaign.content),
        completed={u: frozenset(s) for u, s in completed.items()},
        timer=SendTimer(campaign.schedule, ed.send_date),
        catalog=catalog,
        new=new,
    )


def edition_instant(edition: Edition) -> datetime:
    """The instant time-relative rules are measured from: the send date's start, UTC."""
    return datetime.combine(edition.send_date, time(0), tzinfo=UTC)


# ----------------------------------------------------------------------------- one user


def plan_user(
    user: User, rec: Recommendation | None, ctx: PlanContext, *, explain: bool = False
) -> tuple[PlannedDelivery | Exclusion, UserTrace | None]:
    """Decide one user: an `Exclusion` with its reason, or a `PlannedDelivery`; and, when
    `explain`, the full trace of how."""
    reason = ctx.reason(user)
    if reason is not None:
        return _excluded(ctx, user, reason, explain)
    arm, arm_why = ctx.arm(user.user_id, explain=explain)
    source = ctx.arm_sources.get(arm)
    if source is None:  # an exposed user's arm was removed from the campaign
        return _excluded(ctx, user, ARM_REMOVED, explain, arm=arm, arm_why=arm_why)
    send_at, zone = ctx.timer.send_at(user)
    if source is ContentSource.HOLDOUT:
        delivery = _delivery(ctx, user, arm, source, (), False, send_at, zone)
        return delivery, _trace(
            explain,
            user,
            delivery,
            arm_why=arm_why,
            outcome="holdout: assigned, recorded, not sent",
        )
    view = UserView.of(user, ctx.completed.get(user.user_id, _EMPTY), ctx.edition, trace=explain)
    steps: list[TraceStep] | None = [] if explain else None
    candidates = ctx.sources.candidates(source, user, rec)
    # the ids a reader dropped ahead with the rules' first step (`BoundRules.prefilter`)
    ahead = rec.ahead if rec is not None and source is ContentSource.PERSONALIZE else 0
    items = (
        ctx.rules.apply(candidates or (), view, steps, ahead=ahead) if candidates or ahead else []
    )
    fallback, why = False, ""
    fb_steps: list[TraceStep] | None = None
    if len(items) < ctx.rules.min_items and source is not ContentSource.EDITORIAL:
        why = _fallback_why(source, candidates, items, ctx.rules.min_items)
        fb_steps = [] if explain else None
        editorial = ctx.sources.editorial_for(user.locale)
        items = ctx.rules.apply(editorial, view, fb_steps) if editorial else []
        fallback = True
    if len(items) < ctx.rules.min_items:
        return _excluded(ctx, user, TOO_FEW_ITEMS, explain, arm=arm, arm_why=arm_why)
    delivery = _delivery(ctx, user, arm, source, tuple(items), fallback, send_at, zone)
    if not explain:  # the hot path: no trace to build
        return delivery, None
    trace = _trace(
        explain,
        user,
        delivery,
        arm_why=arm_why,
        candidates=len(candidates or ()),
        steps=steps,
        fallback_why=why,
        fallback_steps=fb_steps,
        outcome="planned",
    )
    return delivery, trace


def _fallback_why(source: ContentSource, candidates: Any, items: list[str], need: int) -> str:
    if candidates is None and source is ContentSource.PERSONALIZE:
        return (
            "no usable Personalize line for the user (missing, or skipped as bad: see the "
            "input skips); editorial list instead"
        )
    return f"{len(items)} item(s) left after the rules, fewer than {need}; editorial list instead"


def _delivery(
    ctx: PlanContext,
    user: User,
    arm: str,
    source: ContentSource,
    items: tuple[str, ...],
    fallback: bool,
    send_at: datetime,
    zone: str,
) -> PlannedDelivery:
    return PlannedDelivery(
        edition=ctx.edition,
        user_id=user.user_id,
        email=user.email,
        locale=user.locale,
        arm=arm,
        source=source,
        fallback=fallback,
        item_ids=items,
        send_at=send_at,
        timezone=zone,
    )


def _excluded(
    ctx: PlanContext,
    user: User,
    reason: str,
    explain: bool,
    *,
    arm: str | None = None,
    arm_why: str = "",
) -> tuple[Exclusion, UserTrace | None]:
    exclusion = Exclusion(edition=ctx.edition, user_id=user.user_id, reason=reason)
    if not explain:
        return exclusion, None
    return exclusion, UserTrace(
        user_id=user.user_id,
        eligibility=reason,
        arm=arm,
        arm_why=arm_why,
        outcome=f"no email: {reason}",
    )


def _trace(
    explain: bool,
    user: User,
    d: PlannedDelivery,
    *,
    arm_why: str,
    outcome: str,
    candidates: int = 0,
    steps: list[TraceStep] | None = None,
    fallback_why: str = "",
    fallback_steps: list[TraceStep] | None = None,
) -> UserTrace | None:
    if not explain:
        return None
    return UserTrace(
        user_id=user.user_id,
        arm=d.arm,
        arm_why=arm_why,
        source=str(d.source),
        candidates=candidates,
        steps=tuple(steps or ()),
        fallback=d.fallback,
        fallback_why=fallback_why,
        fallback_steps=tuple(fallback_steps or ()),
        item_ids=d.item_ids,
        send_at=d.send_at,
        timezone=d.timezone,
        outcome=outcome,
    )


# ----------------------------------------------------------------------------- one edition


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanResult:
    deliveries: tuple[PlannedDelivery, ...]  # sorted by user_id
    exclusions: tuple[Exclusion, ...]  # sorted by user_id
    summary: PlanSummary
    catalog: Mapping[str, Item]
    traces: Mapping[str, UserTrace] = field(default_factory=dict)
    # Planned users (holdout included) with a usable Personalize line, as the planner read it;
    # None when no arm reads Personalize (pre-flight's coverage check reads it then)
    personalize_covered: int | None = None

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
    record: bool = True,
) -> PlanResult:
    """Plan the edition for the whole audience (or shard ``(k, n)`` of it).

    Checks the experiment's seed against the one it ran with, reads every input, plans every
    user, checks the Personalize output's quality, records the new assignments (unless
    `record` is false) and returns the plan sorted by user id. `now` only dates warnings
    (SendGrid's 72 h window); the plan itself depends on the inputs alone.
    """
    # A plan makes no reference cycles per user (`tests/plan/test_planner.py` holds it to that:
    # 317 unreachable objects at the end at both 20,000 and 200,000 users), yet its long-lived
    # containers (the audience, the plan, the verdict caches) made every collection walk them:
    # with young collections every 50,000 allocations, 0.44 s of a 200,000-user plan's ~14 s.
    with collector.paused():
        return _plan_edition(
            campaign, edition, store=store, now=now, shard=shard, explain=explain, record=record
        )


def _plan_edition(
    campaign: Campaign,
    edition: Edition | str,
    *,
    store: PlannerStore,
    now: datetime,
    shard: tuple[int, int] | None,
    explain: str | Collection[str] | None,
    record: bool,
) -> PlanResult:
    ed = edition if isinstance(edition, Edition) else Edition.parse(edition)
    check_experiment(store.assignments, campaign.experiment, source=str(campaign.path))
    rules = load_campaign_rules(campaign)
    inputs = _read_tables(campaign, ed, shard)
    ctx = _context(campaign, ed, store, inputs, rules)
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
    if record:
        fresh = [(d.user_id, d.arm) for d in deliveries if d.user_id not in ctx.sticky]
        store.assignments.record_assignments(campaign.experiment.name, ed.key, fresh)
    warnings = window_problems((d.send_at for d in deliveries if not d.is_holdout), now)
    if ctx.rules.guard_hits:
        warnings.append(
            f"the hard guards removed {ctx.rules.guard_hits} item(s) the rule file "
            "let through (kids content, repeats or too many items)"
        )
    personalize = inputs.skips["recommendations"]
    if personalize.unknown_ids:
        from calm_mail.inputs.personalize import unknown_ids_text, unknown_share_text

        warnings.append(
            f"{unknown_share_text(personalize, 'read')} and were dropped (retired content?): "
            f"{unknown_ids_text(personalize)}"
        )
    summary = tally.summary(
        campaign=campaign.name,
        edition=ed.key,
        experiment=campaign.experiment.name,
        weights=campaign.experiment.weights,
        shard=shard,
        dropped_by_step=ctx.rules.drops_in_order(),
        skips={k: v.as_dict() for k, v in inputs.skips.items()},
        warnings=warnings,
    )
    for user_id in traced - set(traces):
        traces[user_id] = UserTrace(
            user_id=user_id, outcome="not in the audience" + (" of this shard" if shard else "")
        )
    return PlanResult(
        deliveries=tuple(deliveries),
        exclusions=tuple(exclusions),
        summary=summary,
        catalog=inputs.catalog,
        traces=traces,
        personalize_covered=(
            None if covered is None else sum(1 for d in deliveries if d.user_id in covered)
        ),
    )


def _read_tables(campaign: Campaign, ed: Edition, shard: tuple[int, int] | None) -> _Inputs:
    from calm_mail.inputs import iter_audience, read_catalog

    skips = {name: SkipCounter() for name in ("catalog", "audience", "recommendations", "history")}
    catalog = read_catalog(campaign.input_path("catalog", ed), skips=skips["catalog"])
    users = iter_audience(campaign.input_path("audience", ed), skips=skips["audience"])
    in_shard = _shard_filter(shard)
    audience = {u.user_id: u for u in users if in_shard(u.user_id)}
    return _Inputs(catalog=catalog, audience=audience, skips=skips)


def _shard_filter(shard: tuple[int, int] | None) -> Any:
    if shard is None:
        return lambda user_id: True
    from calm_mail.store import shard_of  # the ledger's hash, so shards agree

    k, n = shard
    return lambda user_id: shard_of(user_id, n) == k


def _context(
    campaign: Campaign, ed: Edition, store: PlannerStore, inputs: _Inputs, rules: RuleSet
) -> PlanContext:
    from calm_mail.inputs import iter_completions, read_editorial

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
        last_sent=_last_sent(store, campaign, ed),
        rules=rules,
        users=audience.keys(),
    )
    ctx.reasons.update((u, reason) for u, reason in own.items() if reason is not None)
    return ctx


def _last_sent(store: PlannerStore, campaign: Campaign, ed: Edition) -> date | None:
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
    """Plan users with a Personalize line as it streams past, then everyone else. Also
    returns the users with a usable line (None when no arm reads Personalize)."""
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

    wanted = _decide_ahead(ctx, audience)
    reads_personalize = any(a.source is ContentSource.PERSONALIZE for a in campaign.experiment.arms)
    if reads_personalize:
        for rec in _recommendations(campaign, ed, inputs, wanted, ctx.rules.prefilter(), traced):
            user = audience.get(rec.user_id)
            if user is not None and rec.user_id not in done:
                done.add(rec.user_id)
                plan(user, None if rec.unread else rec)
        _check_quality(campaign, ed, inputs, covered=len(done))
    for user_id, user in audience.items():
        if user_id not in done:
            plan(user, None)
    return outcomes, traces, done if reads_personalize else None


def _decide_ahead(ctx: PlanContext, audience: Mapping[str, User]) -> set[str]:
    """Work out every user's eligibility and hash arm once (`plan_user` asks `ctx` again), and
    return the users whose email is built from their Personalize line: eligible, in an arm
    whose source is Personalize. Only their lines' items are read (`iter_recommendations`)."""
    wanted = set()
    personalize = ContentSource.PERSONALIZE
    reasons = ctx.reasons  # holds the users whose own row already failed (`_context`)
    ledger_reason = ctx.eligibility.ledger_reason
    for user_id, user in audience.items():
        if user_id in reasons:
            continue
        reason = reasons[user_id] = ledger_reason(user)
        if reason is None:
            arm, _ = ctx.arm(user_id)
            if user_id not in ctx.sticky:
                ctx.hashed[user_id] = arm  # plan_user asks again: hash once
            if ctx.arm_sources.get(arm) is personalize:
                wanted.add(user_id)
    return wanted


def _recommendations(
    campaign: Campaign,
    ed: Edition,
    inputs: _Inputs,
    wanted: Collection[str],
    keep: frozenset[str] | None,
    traced: Collection[str],
) -> Iterator[Recommendation]:
    """The Personalize lines, the wanted ones with the rules' first set filter applied ahead
    (`keep`), except for the users a trace explains."""
    from calm_mail.inputs import iter_recommendations

    return iter_recommendations(
        campaign.input_path("recommendations", ed),
        skips=inputs.skips["recommendations"],
        known_items=inputs.catalog.keys(),
        wanted=wanted,
        scores=False,
        keep=keep,
        unfiltered=traced,
    )


def _check_quality(campaign: Campaign, ed: Edition, inputs: _Inputs, *, covered: int) -> None:
    from calm_mail.inputs import check_recommendation_quality

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


# ----------------------------------------------------------------------------- output


def plan_rows(result: PlanResult) -> Iterator[dict[str, Any]]:
    """One row per user, sorted by user id: the delivery, or the reason for no email."""
    rows: list[tuple[str, dict[str, Any]]] = []
    for d in result.deliveries:
        rows.append(
            (
                d.user_id,
                {
                    "user_id": d.user_id,
                    "excluded": None,
                    "arm": d.arm,
                    "source": str(d.source),
                    "fallback": d.fallback,
                    "item_ids": list(d.item_ids),
                    "locale": d.locale,
                    "send_at": d.send_at,
                    "timezone": d.timezone,
                },
            )
        )
    for x in result.exclusions:
        rows.append(
            (
                x.user_id,
                {
                    "user_id": x.user_id,
                    "excluded": x.reason,
                    "arm": None,
                    "source": None,
                    "fallback": False,
                    "item_ids": [],
                    "locale": None,
                    "send_at": None,
                    "timezone": None,
                },
            )
        )
    rows.sort(key=lambda r: r[0])
    return (row for _, row in rows)


def write_plan(result: PlanResult, path: Path | str) -> Path:
    """Write the plan: JSON Lines, or Parquet when the name ends in ``.parquet``. Same inputs,
    same bytes. Addresses are left out (the ledger holds them). Written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if path.suffix == ".parquet":
            _write_parquet(result, Path(tmp))
        else:
            with open(tmp, "wb") as fh:
                for row in plan_rows(result):
                    fh.write(orjson.dumps(row, option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z))
                    fh.write(b"\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _write_parquet(result: PlanResult, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = list(plan_rows(result))
    schema = pa.schema(
        [
            ("user_id", pa.string()),
            ("excluded", pa.string()),
            ("arm", pa.string()),
            ("source", pa.string()),
            ("fallback", pa.bool_()),
            ("item_ids", pa.list_(pa.string())),
            ("locale", pa.string()),
            ("send_at", pa.timestamp("us", tz="UTC")),
            ("timezone", pa.string()),
        ]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path, compression="zstd")


def explain(result: PlanResult, user_id: str) -> str:
    """One user's full trace as text: eligibility, arm and why, source, every step, fallback."""
    return format_trace(result.explain(user_id))


def format_trace(t: UserTrace, *, max_drops: int = 12) -> str:
    lines = [f"user {t.user_id}: {t.outcome}"]
    if t.outcome.startswith("not in the audience"):
        return lines[0]
    lines.append(f"  eligibility: {t.eligibility or 'eligible'}")
    if t.arm:
        lines.append(f"  arm: {t.arm} ({t.arm_why})")
    if t.source:
        lines.append(f"  source: {t.source}, {t.candidates} candidate(s)")
    lines += _format_steps(t.steps, max_drops)
    if t.fallback:
        lines.append(f"  fallback: {t.fallback_why}")
        lines += _format_steps(t.fallback_steps, max_drops)
    if t.send_at is not None:
        lines.append(f"  items: {', '.join(t.item_ids) or '(none)'}")
        lines.append(f"  send at: {t.send_at:%Y-%m-%d %H:%M} UTC (zone {t.timezone})")
    return "\n".join(lines)


def _format_steps(steps: Iterable[TraceStep], max_drops: int) -> list[str]:
    lines = []
    for s in steps:
        lines.append(f"    {s.step}: {s.note}")
        for item_id, why in s.dropped[:max_drops]:
            lines.append(f"      - {item_id}: {why}")
        if len(s.dropped) > max_drops:
            lines.append(f"      ... and {len(s.dropped) - max_drops} more")
    return lines
