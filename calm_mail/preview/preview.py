"""Preview one user's (or persona's) email of one edition, in every arm, with the why.

The edition is prepared once (`EditionPreview`): catalog, editorial picks, rules, popularity
and compiled templates, through the planner's own `build_context`. One user is then planned
with the planner's own `plan_user` — the same eligibility, sticky arm, sources, rules, seeded
shuffle and fallback a real send uses — after the few per-user facts the whole-edition plan
would have (their audience row, Personalize line, completions, suppression, sticky arm) are
looked up by streaming the inputs. The message is composed by the real `Composer` with the
delivery id the ledger gives the real send, so links and tokens match byte for byte.

`--arm` (another arm for the same user) is planning with that arm recorded as the user's
sticky arm: the same rules on the other arm's source.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from calm_mail.campaign import Campaign
from calm_mail.compose.composer import Composer
from calm_mail.compose.templates import TemplateSet, load_template_set
from calm_mail.edition import Edition
from calm_mail.errors import CalmMailError, UsageError
from calm_mail.inputs import (
    iter_audience,
    iter_completions,
    iter_recommendations,
    read_catalog,
    read_editorial,
)
from calm_mail.plan.assign import MemoryStore, refuse_changed_seed
from calm_mail.plan.context import PlanContext, build_context, edition_instant
from calm_mail.plan.eligibility import Eligibility
from calm_mail.plan.planner import PlannerStore, last_sent
from calm_mail.plan.rules import RuleSet, load_campaign_rules
from calm_mail.plan.user import UserTrace, plan_user
from calm_mail.preview.personas import Persona, get_persona, history, recommend
from calm_mail.records import (
    ComposedMessage,
    ContentSource,
    Exclusion,
    Item,
    PlannedDelivery,
    Recommendation,
    SkipCounter,
    TraceStep,
    User,
)
from calm_mail.store import delivery_id_for


class NoEmail(CalmMailError):
    """The user gets no email in this edition (excluded, or in the holdout). Exit 1."""

    exit_code = 1


class UnknownUser(UsageError, LookupError):
    """The user id is not in the edition's audience file. Exit 2."""


# What the preview reads from the ledger is what planning reads: sticky arms (and the seed
# they were drawn with), suppressions, the last mailed edition. Neither records anything.
PreviewStore = PlannerStore


@dataclass(frozen=True, slots=True, kw_only=True)
class ItemWhy:
    """Why one item is in the email: where it ranked in its source and what it stands for."""

    item: Item
    position: int  # in the email, from 1
    rank: int | None  # 1-based rank among the source's candidates (None: not found there)
    source: str  # "personalize", "editorial", "editorial (fallback)", ...
    note: str = ""  # e.g. "stands for 'x' (part of collection c)"


@dataclass(frozen=True, slots=True, kw_only=True)
class ArmPreview:
    """One arm's email for the user: the plan's outcome, its trace, and the message."""

    arm: str
    source: str
    own: bool  # the arm the user is really in
    trace: UserTrace
    delivery: PlannedDelivery | None = None
    exclusion: str | None = None  # the reason there is no email (holdout included)
    message: ComposedMessage | None = None
    items: tuple[ItemWhy, ...] = ()

    @property
    def fallback(self) -> bool:
        return self.delivery is not None and self.delivery.fallback


@dataclass(frozen=True, slots=True, kw_only=True)
class UserPreview:
    """Everything the preview shows for one user (or persona) of one edition."""

    campaign: str
    edition: str
    user: User
    persona: Persona | None
    delivery_id: str
    arm: str | None  # the user's own arm; None when excluded before assignment
    arms: tuple[ArmPreview, ...]
    notes: tuple[str, ...] = ()

    def for_arm(self, arm: str | None = None) -> ArmPreview:
        """The preview of `arm`; else (no arm asked, or an excluded user, who has no arm to
        force) the user's own outcome."""
        wanted = arm or self.arm
        for found in self.arms:
            if wanted and found.arm == wanted:
                return found
        return next(found for found in self.arms if found.own)


@dataclass(slots=True)
class _UserFacts:
    """What the whole-edition plan knows about one user, looked up for the preview."""

    user: User
    rec: Recommendation | None
    completed: frozenset[str]
    sticky: dict[str, str] = field(default_factory=dict)
    suppressed: frozenset[str] = frozenset()


class EditionPreview:
    """One edition prepared once; `user(...)` and `persona(...)` preview one person."""

    def __init__(
        self,
        campaign: Campaign,
        edition: Edition | str,
        *,
        store: PreviewStore | None = None,
        templates: TemplateSet | None = None,
        rules: RuleSet | None = None,
        ledger_campaign: str | None = None,
    ) -> None:
        """Read the edition's catalog, editorial picks and history; compile the templates.

        `ledger_campaign` is the campaign name delivery ids are derived from (default: the
        campaign's; a dry run records under ``<name>:dry-run``). Raises InputError/ConfigError
        like the planner when an input or template is wrong.
        """
        self.campaign = campaign
        self.edition = edition if isinstance(edition, Edition) else Edition.parse(edition)
        self.store: PreviewStore = store or MemoryStore()  # a ledger with nothing in it
        self.ledger_campaign = ledger_campaign or campaign.name
        self.skips = {name: SkipCounter() for name in ("catalog", "history")}
        ed = self.edition
        # Refuse a changed seed as run does.
        refuse_changed_seed(self.store.assignments, campaign.experiment, source=str(campaign.path))
        self.catalog: dict[str, Item] = read_catalog(
            campaign.input_path("catalog", ed), skips=self.skips["catalog"]
        )
        editorial = read_editorial(
            campaign.input_path("editorial", ed), ed.key, known_items=self.catalog
        )
        self.rules = rules or load_campaign_rules(campaign)
        self.last_sent = last_sent(self.store, campaign, ed)
        history_rows = iter_completions(
            campaign.input_path("history", ed), skips=self.skips["history"]
        )
        self.context: PlanContext = build_context(
            campaign,
            ed,
            catalog=self.catalog,
            editorial=editorial,
            completions=history_rows,
            last_sent=self.last_sent,
            rules=self.rules,
            users=(),
        )
        self.templates = templates or load_template_set(campaign.template_dir)
        self.composer = Composer(
            campaign, self.catalog, ed, templates=self.templates, share_renders=False
        )

    # ------------------------------------------------------------------ public

    @property
    def arms(self) -> tuple[str, ...]:
        return tuple(arm.name for arm in self.campaign.experiment.arms)

    def user(self, user_id: str, *, arms: Iterable[str] | None = None) -> UserPreview:
        """Preview a user of the audience: their own arm, plus `arms` (names) forced.

        Raises UsageError (exit 2) when the user is not in the audience file.
        """
        user = self._find_user(user_id)
        facts = _UserFacts(
            user=user,
            rec=self._find_recommendation(user_id),
            completed=self._completed(user_id),
            sticky=self.store.assignments.get_assignments(self.campaign.experiment.name, [user_id]),
            suppressed=frozenset(
                e.strip().lower() for e in self.store.suppressions.suppressed([user.email])
            ),
        )
        return self._preview(facts, None, arms)

    def persona(self, name: str, *, arms: Iterable[str] | None = None) -> UserPreview:
        """Preview a built-in persona (see `personas`), through the same planner pieces."""
        persona = get_persona(name)
        rec = recommend(persona, self.catalog, new=self.context.new)
        facts = _UserFacts(
            user=persona.user(self.edition),
            rec=rec,
            completed=history(persona, rec, self.context.new),
        )
        return self._preview(facts, persona, arms)

    # ------------------------------------------------------------------ planning

    def _preview(
        self, facts: _UserFacts, persona: Persona | None, extra: Iterable[str] | None
    ) -> UserPreview:
        wanted = list(dict.fromkeys(extra or ()))
        unknown = [a for a in wanted if a not in self.arms]
        if unknown:
            raise UsageError(
                f"no arm {unknown[0]!r} in {self.campaign.path.name}; arms: {', '.join(self.arms)}"
            )
        ctx = self._user_context(facts)
        outcome, trace = plan_user(facts.user, facts.rec, ctx, explain=True)
        assert trace is not None  # explain=True always traces
        own_arm = outcome.arm if isinstance(outcome, PlannedDelivery) else trace.arm
        delivery_id = delivery_id_for(self.ledger_campaign, self.edition.key, facts.user.user_id)
        arms = [self._arm_preview(facts, outcome, trace, delivery_id, own=True)]
        for arm in wanted:
            if arm == own_arm:
                continue
            forced_ctx = replace(ctx, sticky={facts.user.user_id: arm})
            forced, forced_trace = plan_user(facts.user, facts.rec, forced_ctx, explain=True)
            assert forced_trace is not None
            forced_trace = replace(forced_trace, arm_why=f"shown as arm {arm!r} (forced)")
            arms.append(self._arm_preview(facts, forced, forced_trace, delivery_id, own=False))
        order = {name: n for n, name in enumerate(self.arms)}
        arms.sort(key=lambda a: order.get(a.arm, -1))  # the campaign's order, left to right
        return UserPreview(
            campaign=self.campaign.name,
            edition=self.edition.key,
            user=facts.user,
            persona=persona,
            delivery_id=delivery_id,
            arm=own_arm,
            arms=tuple(arms),
            notes=self._notes(facts, persona),
        )

    def _user_context(self, facts: _UserFacts) -> PlanContext:
        eligibility = Eligibility(
            self.campaign,
            self.edition,
            now=edition_instant(self.edition),
            suppressed=facts.suppressed,
            last_sent=self.last_sent,
        )
        return replace(
            self.context,
            eligibility=eligibility,
            sticky=facts.sticky,
            completed={facts.user.user_id: facts.completed} if facts.completed else {},
        )

    def _arm_preview(
        self,
        facts: _UserFacts,
        outcome: PlannedDelivery | Exclusion,
        trace: UserTrace,
        delivery_id: str,
        *,
        own: bool,
    ) -> ArmPreview:
        arm = trace.arm or (outcome.arm if isinstance(outcome, PlannedDelivery) else "")
        source = str(self.context.arm_sources.get(arm, "")) if arm else ""
        if isinstance(outcome, Exclusion):
            return ArmPreview(
                arm=arm, source=source, own=own, trace=trace, exclusion=outcome.reason
            )
        if outcome.is_holdout:
            return ArmPreview(
                arm=arm, source=source, own=own, trace=trace, delivery=outcome, exclusion="holdout"
            )
        message = self.composer.compose(outcome, delivery_id)
        items = self._explain_items(facts, outcome, trace)
        return ArmPreview(
            arm=arm,
            source=source,
            own=own,
            trace=trace,
            delivery=outcome,
            message=message,
            items=items,
        )

    def _explain_items(
        self, facts: _UserFacts, delivery: PlannedDelivery, trace: UserTrace
    ) -> tuple[ItemWhy, ...]:
        """Where each item ranked among its source's candidates, and what it stands for."""
        candidates: Sequence[str]
        if delivery.fallback:
            candidates = self.context.sources.editorial_for(facts.user.locale) or ()
            label, steps = "editorial (fallback)", trace.fallback_steps
        else:
            candidates = (
                self.context.sources.candidates(delivery.source, facts.user, facts.rec) or ()
            )
            label, steps = str(delivery.source), trace.steps
        rank = {item_id: n for n, item_id in reversed(list(enumerate(candidates, start=1)))}
        stands_for = _rolled_up(steps)
        out = []
        for position, item_id in enumerate(delivery.item_ids, start=1):
            found, note = rank.get(item_id), ""
            part = stands_for.get(item_id)
            if part is not None:
                note = (
                    f"ranked as {part}, another part of its collection; the email offers "
                    "the part to start or continue"
                )
                found = rank.get(part, found)
            out.append(
                ItemWhy(
                    item=self.catalog[item_id],
                    position=position,
                    rank=found,
                    source=label,
                    note=note,
                )
            )
        return tuple(out)

    def _notes(self, facts: _UserFacts, persona: Persona | None) -> tuple[str, ...]:
        notes = []
        if persona is not None:
            notes.append(f"persona {persona.name!r}: {persona.description}")
            if facts.rec is None:
                notes.append("no Personalize line (as if missing from the batch output)")
            else:
                notes.append(
                    "Personalize line synthesized from the catalog by the persona's tastes"
                )
            if facts.completed:
                notes.append(f"already completed: {', '.join(sorted(facts.completed))}")
        elif facts.rec is None:
            notes.append("no usable Personalize line for this user")
        if facts.sticky:
            arm = facts.sticky.get(facts.user.user_id)
            notes.append(f"arm {arm!r} is recorded in the ledger (sticky)")
        return tuple(notes)

    # ------------------------------------------------------------------ per-user lookups

    def _find_user(self, user_id: str) -> User:
        path = self.campaign.input_path("audience", self.edition)
        for user in iter_audience(path, skips=SkipCounter()):
            if user.user_id == user_id:
                return user
        raise UnknownUser(
            f"user {user_id!r} is not in the audience ({path}); check the id, or preview a "
            "persona with --persona NAME"
        )

    def _find_recommendation(self, user_id: str) -> Recommendation | None:
        """The user's first usable Personalize line (the planner's rule: the first wins)."""
        if not any(a.source is ContentSource.PERSONALIZE for a in self.campaign.experiment.arms):
            return None
        prefix = self.campaign.input_path("recommendations", self.edition)
        for rec in iter_recommendations(
            prefix, skips=SkipCounter(), known_items=self.catalog.keys()
        ):
            if rec.user_id == user_id:
                return rec
        return None

    def _completed(self, user_id: str) -> frozenset[str]:
        path = self.campaign.input_path("history", self.edition)
        rows = iter_completions(path, skips=SkipCounter())
        return frozenset(c.item_id for c in rows if c.user_id == user_id)


def _rolled_up(steps: Sequence[TraceStep]) -> dict[str, str]:
    """collection representative -> the ranked part it replaced (from roll_up's trace)."""
    out: dict[str, str] = {}
    for step in steps:
        if step.step != "roll_up_collections":
            continue
        for item_id, why in step.dropped:
            marker = "replaced by "
            if marker in why:
                out.setdefault(why.rsplit(marker, 1)[1].strip(), item_id)
    return out


#: Exclusion reasons (the planner's codes) in an editor's words.
REASONS = {
    "no_opt_in": "has not opted in to email",
    "subscription_status": "has a subscription status the campaign does not mail",
    "unsupported_locale": "has a locale the campaign does not support",
    "inactive": "has not been active recently enough",
    "bad_email": "has an invalid email address",
    "kids_profile": "is a kids profile",
    "suppressed": "is suppressed (unsubscribed, bounced or reported spam)",
    "recently_mailed": "got the previous edition too recently",
    "too_few_items": "has too few items left after the rules, even from the editorial list",
    "arm_removed": "was assigned to an arm the campaign no longer has",
}


def describe_exclusion(preview: UserPreview, arm: ArmPreview) -> str:
    """One clear sentence: who gets no email and why."""
    who = preview.persona.label if preview.persona else f"user {preview.user.user_id!r}"
    if arm.exclusion == "holdout" and not arm.own:
        return (
            f"the holdout arm {arm.arm!r} of {preview.campaign} gets no email: it is "
            "assigned and recorded only, so it can be compared with the others"
        )
    if arm.exclusion == "holdout":
        return (
            f"{who} is in the holdout arm {arm.arm!r} of {preview.campaign} "
            f"{preview.edition}: assigned and recorded, but sent no email"
        )
    reason = arm.exclusion or "unknown"
    return (
        f"{who} gets no email in {preview.campaign} {preview.edition}: the user "
        f"{REASONS.get(reason, 'is excluded')} (exclusion reason: {reason})"
    )
