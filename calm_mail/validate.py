"""`calm-mail validate`: config, inputs, rules and templates, every problem at once."""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from typing import Any

from calm_mail.campaign import Campaign
from calm_mail.edition import Edition
from calm_mail.errors import CalmMailError
from calm_mail.records import SkipCounter


def validate_campaign(campaign: Campaign, edition: Edition) -> tuple[list[str], list[str]]:
    """Return (problems, notes). Each check runs even when an earlier one failed."""
    problems: list[str] = []
    notes: list[str] = [f"campaign file {campaign.path}"]
    catalog: dict[str, Any] = {}

    def check(label: str, fn: Callable[[], str | list[str] | None]) -> Any:
        try:
            result = fn()
        except CalmMailError as exc:
            problems.extend(getattr(exc, "problems", None) or [str(exc)])
            return None
        except OSError as exc:
            problems.append(f"{label}: {exc}")
            return None
        if isinstance(result, list):
            problems.extend(result)
        elif result:
            notes.append(result)
        return result

    def read_catalog() -> str:
        from calm_mail.inputs import read_catalog as reader

        skips = SkipCounter()
        path = campaign.input_path("catalog", edition)
        catalog.update(reader(path, skips=skips))
        if not catalog:
            raise_input(f"{path}: the catalog has no items")
        return f"catalog: {len(catalog)} items ({skips.skipped} bad rows)"

    def audience() -> str:
        from calm_mail.inputs import iter_audience

        skips = SkipCounter()
        path = campaign.input_path("audience", edition)
        n = sum(1 for _ in islice(iter_audience(path, skips=skips), SAMPLE))
        if n == 0:
            raise_input(f"{path}: the audience has no readable users ({_skips(skips)})")
        return f"audience: readable ({n} users checked in the first rows)"

    def recommendations() -> str:
        from calm_mail.inputs import iter_recommendations, list_prefix
        from calm_mail.inputs.personalize import (
            SUFFIXES,
            check_unknown_items,
            unknown_ids_text,
            unknown_share_text,
        )

        prefix = campaign.input_path("recommendations", edition)
        parts = list_prefix(prefix, SUFFIXES)
        if not parts:
            raise_input(f"{prefix}: no Personalize output (*.out) for edition {edition}")
        sampled = SkipCounter()
        for part in parts:  # every part opens, decompresses and has good lines
            skips = SkipCounter()
            lines = iter_recommendations(part, skips=skips, known_items=catalog or None)
            good = sum(1 for _ in islice(lines, SAMPLE))
            if good == 0:
                raise_input(f"{part}: no readable Personalize lines ({_skips(skips)})")
            sampled.merge(skips)
        note = f"personalize output: {len(parts)} part file(s), each readable"
        if not sampled.unknown_ids:
            return note
        check_unknown_items(
            sampled,
            max_share=campaign.inputs.max_unknown_item_share,
            catalog=campaign.input_path("catalog", edition),
            source=prefix,
            read="in the first lines of each part",
        )
        return (
            f"{note}; {unknown_share_text(sampled, 'in the first lines of each part')}: "
            f"{unknown_ids_text(sampled)} (retired content? they will be dropped)"
        )

    def history() -> str:
        from calm_mail.inputs import iter_completions

        skips = SkipCounter()
        path = campaign.input_path("history", edition)
        n = sum(1 for _ in islice(iter_completions(path, skips=skips), SAMPLE))
        if n == 0 and skips.total:
            raise_input(f"{path}: no readable completions ({_skips(skips)})")
        return f"history: readable ({n} completions checked in the first rows)"

    def schedule() -> str:
        from calm_mail.ops.scheduler import trigger_for

        trigger_for(campaign)
        return f"schedule: prepare {campaign.schedule.prepare!r} (UTC)"

    def editorial() -> str:
        from calm_mail.inputs import read_editorial

        picks = read_editorial(
            campaign.input_path("editorial", edition), edition.key, known_items=catalog or None
        )
        missing = [loc for loc in campaign.audience.locales if not picks.for_locale(loc)]
        if missing:
            raise_input(f"{picks.source}: no editorial list for locale(s) {', '.join(missing)}")
        return f"editorial list: {len(picks.by_locale)} locales"

    def rules() -> list[str] | str:
        from calm_mail.plan.rules import check_rules

        found = check_rules(campaign)
        return found or f"rules: {campaign.rules_path}"

    def templates() -> list[str] | str:
        from calm_mail.compose.lint import lint_templates

        found = lint_templates(campaign, catalog or None)
        return found or f"templates: {campaign.template_dir}"

    check("catalog", read_catalog)
    check("audience", audience)
    check("recommendations", recommendations)
    check("history", history)
    check("schedule", schedule)
    check("editorial", editorial)
    check("rules", rules)
    check("templates", templates)
    return problems, notes


SAMPLE = 1000  # rows read from each input: enough to prove it is readable, cheap at any size


def _skips(skips: SkipCounter) -> str:
    counts = ", ".join(f"{why} {n}" for why, n in sorted(skips.counts.items()))
    return counts or "it is empty"


def raise_input(message: str) -> None:
    from calm_mail.errors import InputError

    raise InputError(message)
