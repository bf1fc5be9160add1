"""One user's plan (`plan_user`): eligibility, arm (sticky, else the GrowthBook hash), the arm's
content source, the rules, the editorial fallback and the send time; and, when asked, the trace
of how (`UserTrace`, for ``calm-mail plan --explain``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from calm_mail.plan.context import PlanContext
from calm_mail.plan.rules import UserView
from calm_mail.records import (
    ContentSource,
    Exclusion,
    PlannedDelivery,
    Recommendation,
    TraceStep,
    User,
)

TOO_FEW_ITEMS = "too_few_items"
ARM_REMOVED = "arm_removed"
_EMPTY: frozenset[str] = frozenset()


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
    items = ctx.rules.apply(candidates, view, steps) if candidates else []
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


def _fallback_why(
    source: ContentSource, candidates: Sequence[str] | None, items: list[str], need: int
) -> str:
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
