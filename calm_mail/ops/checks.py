"""The checks an edition must pass, as typed results: one definition of each, shared by
`calm-mail validate` (the campaign's files) and pre-flight (those, plus what only the edition's
time and plan can show).

A check is a function of a `CheckContext` that returns its detail when it passes and raises
`CheckFailed` when it does not; `run_check` turns either into a `Check`. Callers read
`Check.status`, `Check.code` and `Check.key`, never the message text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import islice

from calm_mail.campaign import Campaign
from calm_mail.compose.lint import lint_templates
from calm_mail.edition import Edition
from calm_mail.errors import CalmMailError, ConfigError
from calm_mail.inputs import (
    iter_audience,
    iter_completions,
    iter_recommendations,
    list_prefix,
    read_catalog,
    read_editorial,
)
from calm_mail.inputs.personalize import (
    SUFFIXES,
    GateFailed,
    check_line_quality,
    unknown_ids_text,
    unknown_share_text,
)
from calm_mail.ops.trigger import trigger_for
from calm_mail.plan.rules import check_rules
from calm_mail.records import Item, SkipCounter

log = logging.getLogger(__name__)

SAMPLE = 1000  # rows read from each input: enough to prove it is readable, cheap at any size


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One check's verdict. `problems` lists each problem when a check finds several (rules,
    templates); `code` says what kind of failure it is; `key` names the campaign key or input
    the check is about, when there is one."""

    name: str
    status: Status
    detail: str
    code: str = "ok"
    key: str | None = None
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status is not Status.FAILED

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "ok": self.ok,
            "status": str(self.status),
            "code": self.code,
            "key": self.key,
            "detail": self.detail,
        }


class CheckFailed(Exception):
    """A check's negative verdict: `detail` is shown, `code` and `key` are for callers."""

    def __init__(
        self,
        detail: str,
        *,
        code: str = "failed",
        key: str | None = None,
        problems: Sequence[str] = (),
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code
        self.key = key
        self.problems = tuple(problems)


@dataclass(slots=True, kw_only=True)
class CheckContext:
    """What the checks read, shared so an input is read once per run of the checks."""

    campaign: Campaign
    edition: Edition
    catalog: dict[str, Item] = field(default_factory=dict)

    def path(self, key: str) -> str:
        return self.campaign.input_path(key, self.edition)


CheckFn = Callable[[CheckContext], str]


def run_check(name: str, fn: CheckFn, ctx: CheckContext, skip: Collection[str] = ()) -> Check:
    """Run one check; a skipped check is reported as skipped, a crashed one as failed."""
    if name in skip:
        return Check(name=name, status=Status.SKIPPED, detail="skipped", code="skipped")
    try:
        return Check(name=name, status=Status.OK, detail=fn(ctx))
    except CheckFailed as exc:
        return _failed(name, exc.detail, exc.code, exc.key, exc.problems)
    except ConfigError as exc:
        return _failed(name, "; ".join(exc.problems), "config", None, exc.problems)
    except CalmMailError as exc:
        return _failed(name, str(exc), "input", None, ())
    except OSError as exc:
        return _failed(name, f"{name}: {exc}", "unreadable", None, ())
    except Exception as exc:  # a broken check is a failed check, never a crashed run
        log.debug("check %s raised", name, exc_info=True)
        return _failed(name, f"{type(exc).__name__}: {exc}", "crashed", None, ())


def _failed(name: str, detail: str, code: str, key: str | None, problems: Sequence[str]) -> Check:
    return Check(
        name=name,
        status=Status.FAILED,
        detail=detail,
        code=code,
        key=key,
        problems=tuple(problems) or (detail,),
    )


# The campaign's own files: what `validate` runs, and pre-flight with them.


def check_catalog(ctx: CheckContext) -> str:
    skips = SkipCounter()
    path = ctx.path("catalog")
    ctx.catalog.update(read_catalog(path, skips=skips))
    if not ctx.catalog:
        raise CheckFailed(f"{path}: the catalog has no items", code="empty", key="inputs.catalog")
    return f"catalog: {len(ctx.catalog)} items ({skips.skipped} bad rows)"


def check_audience(ctx: CheckContext) -> str:
    skips = SkipCounter()
    path = ctx.path("audience")
    n = sum(1 for _ in islice(iter_audience(path, skips=skips), SAMPLE))
    if n == 0:
        raise CheckFailed(
            f"{path}: the audience has no readable users ({_skips(skips)})",
            code="empty",
            key="inputs.audience",
        )
    return f"audience: readable ({n} users checked in the first rows)"


def check_recommendations(ctx: CheckContext) -> str:
    """Every part file opens and has good lines, and the first `SAMPLE` lines of each pass the
    run's own line gates (`check_line_quality`: ``inputs.max_bad_share``,
    ``inputs.max_unknown_item_share``; coverage needs the whole output and is the run's)."""
    prefix = ctx.path("recommendations")
    parts = list_prefix(prefix, SUFFIXES)
    if not parts:
        raise CheckFailed(
            f"{prefix}: no Personalize output (*.out) for edition {ctx.edition}",
            code="missing",
            key="inputs.recommendations",
        )
    sampled = _sample_parts(ctx, parts)
    read = f"in the first {SAMPLE:,} lines of each part"
    try:
        check_line_quality(
            sampled,
            max_bad_share=ctx.campaign.inputs.max_bad_share,
            max_unknown_share=ctx.campaign.inputs.max_unknown_item_share,
            catalog=ctx.path("catalog"),
            source=prefix,
            read=read,
        )
    except GateFailed as exc:
        raise CheckFailed(str(exc), code="gate", key=exc.key) from exc
    note = (
        f"personalize output: {sampled.total:,} lines of {len(parts)} part(s) sampled, "
        f"{sampled.skipped:,} bad ({sampled.share():.2%})"
    )
    if not sampled.unknown_ids:
        return note
    return (
        f"{note}; {unknown_share_text(sampled, read)}: "
        f"{unknown_ids_text(sampled)} (retired content? they will be dropped)"
    )


def _sample_parts(ctx: CheckContext, parts: Sequence[str]) -> SkipCounter:
    """The first `SAMPLE` lines of each part, counted; a part without one good line fails."""
    sampled = SkipCounter()
    for part in parts:
        skips = SkipCounter()
        lines = iter_recommendations(
            part, skips=skips, known_items=ctx.catalog or None, max_lines=SAMPLE
        )
        if sum(1 for _ in lines) == 0:
            raise CheckFailed(
                f"{part}: no readable Personalize lines ({_skips(skips)})",
                code="empty",
                key="inputs.recommendations",
            )
        sampled.merge(skips)
    return sampled


def check_history(ctx: CheckContext) -> str:
    skips = SkipCounter()
    path = ctx.path("history")
    n = sum(1 for _ in islice(iter_completions(path, skips=skips), SAMPLE))
    if n == 0 and skips.total:
        raise CheckFailed(
            f"{path}: no readable completions ({_skips(skips)})",
            code="empty",
            key="inputs.history",
        )
    return f"history: readable ({n} completions checked in the first rows)"


def check_schedule(ctx: CheckContext) -> str:
    trigger_for(ctx.campaign)
    return f"schedule: prepare {ctx.campaign.schedule.prepare!r} (UTC)"


def editorial_check(locales: Collection[str] = ()) -> CheckFn:
    """The editors' list covers the campaign's locales and `locales` (e.g. the plan's)."""

    def check(ctx: CheckContext) -> str:
        picks = read_editorial(
            ctx.path("editorial"), ctx.edition.key, known_items=ctx.catalog or None
        )
        wanted = set(ctx.campaign.audience.locales) | set(locales)
        missing = sorted(loc for loc in wanted if not picks.for_locale(loc))
        if missing:
            raise CheckFailed(
                f"{picks.source}: no editorial list for locale(s) {', '.join(missing)}",
                code="missing_locale",
                key="inputs.editorial",
            )
        return f"editorial list: {len(picks.by_locale)} locales"

    return check


def check_rules_file(ctx: CheckContext) -> str:
    found = check_rules(ctx.campaign)
    if found:
        raise CheckFailed("; ".join(found), code="config", key="rules", problems=found)
    return f"rules: {ctx.campaign.rules_path}"


def check_templates(ctx: CheckContext) -> str:
    found = lint_templates(ctx.campaign, ctx.catalog or None)
    if found:
        raise CheckFailed("; ".join(found), code="config", key="templates", problems=found)
    return f"templates: {ctx.campaign.template_dir}"


def config_checks(editorial_locales: Collection[str] = ()) -> list[tuple[str, CheckFn]]:
    """The campaign's files in order: the catalog first, since later checks use it."""
    return [
        ("catalog", check_catalog),
        ("audience", check_audience),
        ("recommendations", check_recommendations),
        ("history", check_history),
        ("schedule", check_schedule),
        ("editorial", editorial_check(editorial_locales)),
        ("rules", check_rules_file),
        ("templates", check_templates),
    ]


CONFIG_CHECKS = tuple(name for name, _ in config_checks())


def validate_campaign(campaign: Campaign, edition: Edition) -> list[Check]:
    """`calm-mail validate`: every check of the campaign's files, each run even when an
    earlier one failed."""
    return run_checks(CheckContext(campaign=campaign, edition=edition), config_checks())


def run_checks(
    ctx: CheckContext, checks: Sequence[tuple[str, CheckFn]], skip: Collection[str] = ()
) -> list[Check]:
    """Every check runs, even after one failed, so every problem is reported at once."""
    return [run_check(name, fn, ctx, skip) for name, fn in checks]


def _skips(skips: SkipCounter) -> str:
    counts = ", ".join(f"{why} {n}" for why, n in sorted(skips.counts.items()))
    return counts or "it is empty"


def failed(checks: Sequence[Check]) -> list[Check]:
    return [check for check in checks if not check.ok]


def problems_of(checks: Sequence[Check]) -> list[str]:
    """Every problem of the failed checks, one line each."""
    return [problem for check in failed(checks) for problem in check.problems]
