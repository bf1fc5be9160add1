"""One edition prepared once for `plan_user` (`PlanContext`): eligibility, arms, content sources,
the bound rules, each user's completed items and the send timer.

Everything time-relative (inactivity, popularity) is measured from the edition's send date
(`edition_instant`), not from the clock, so the same inputs give a byte-identical plan whenever
it runs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from calm_mail.campaign import Campaign
from calm_mail.edition import Edition
from calm_mail.plan.assign import Assigner
from calm_mail.plan.eligibility import Eligibility
from calm_mail.plan.rules import (
    BoundRules,
    EditionData,
    OnlyNew,
    RuleSet,
    load_campaign_rules,
    new_items,
)
from calm_mail.plan.sendtime import SendTimer
from calm_mail.plan.sources import PopularityCounter, Sources, popular_items
from calm_mail.records import Completion, ContentSource, EditorialPicks, Item, User


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
    # user -> the rule their own row fails, when the planner worked it out already
    reasons: dict[str, str] = field(default_factory=dict)

    def reason(self, user: User) -> str | None:
        """Why `user` gets no email (eligibility), or None."""
        found = self.reasons.get(user.user_id)
        return found if found is not None else self.eligibility.reason(user)

    def arm(self, user_id: str, *, explain: bool = False) -> tuple[str, str]:
        """(arm, why): the recorded arm of an exposed user, else the hash arm. The why is
        only spelled out when `explain` (the planner's hot path does not need it)."""
        recorded = self.sticky.get(user_id)
        if recorded is not None:
            return recorded, "sticky: recorded at the user's first exposure"
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
