"""Built-in steps that judge each item on its own: release window, content type, kids, completed,
level and language."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, timedelta

from pydantic import Field, field_validator

from calm_mail.plan.rules.registry import StepFn, StepParams, note_dropped, step
from calm_mail.plan.rules.view import EditionData, UserView, language_of
from calm_mail.records import Item

KNOWN_TYPES = frozenset(
    {"meditation", "sleep_story", "soundscape", "music", "masterclass", "movement", "kids"}
)


class OnlyNew(StepParams):
    days: int = Field(default=7, ge=1, le=366)


@step("only_new", OnlyNew)
def _only_new(params: OnlyNew, data: EditionData) -> StepFn:
    """Keep items released within `days` days before the send date (the send date included)."""
    new = new_items(data, params.days)
    start = data.send_date - timedelta(days=params.days)

    def only_new(items: list[str], view: UserView) -> list[str]:
        kept = list(filter(new.__contains__, items))
        if view.dropped is not None and len(kept) != len(items):
            note_dropped(
                view,
                (i for i in items if i not in new),
                lambda i: _release_note(data.catalog.get(i), start),
            )
        return kept

    return only_new


def new_items(data: EditionData, days: int) -> frozenset[str]:
    """Ids released in [send date - days, send date] (UTC dates)."""
    start = data.send_date - timedelta(days=days)
    return frozenset(
        i for i, item in data.catalog.items() if start <= item.created_at.date() <= data.send_date
    )


def _release_note(item: Item | None, start: date) -> str:
    if item is None:
        return "not in the catalog"
    return f"released {item.created_at:%Y-%m-%d}, outside the window from {start}"


class Types(StepParams):
    types: list[str] = Field(min_length=1)

    @field_validator("types")
    @classmethod
    def _known(cls, types: list[str]) -> list[str]:
        unknown = sorted(set(types) - KNOWN_TYPES)
        if unknown:
            raise ValueError(f"unknown content type(s) {unknown}; known: {sorted(KNOWN_TYPES)}")
        return types


@step("only_types", Types)
def _only_types(params: Types, data: EditionData) -> StepFn:
    """Keep only items of the listed content types."""
    allowed = frozenset(params.types)
    return _type_filter(data, lambda t: t in allowed, "type {} is not in only_types")


@step("exclude_types", Types)
def _exclude_types(params: Types, data: EditionData) -> StepFn:
    """Drop items of the listed content types."""
    banned = frozenset(params.types)
    return _type_filter(data, lambda t: t not in banned, "type {} is excluded")


def _type_filter(data: EditionData, keep: Callable[[str], bool], why: str) -> StepFn:
    catalog = data.catalog

    def type_filter(items: list[str], view: UserView) -> list[str]:
        kept = [i for i in items if keep(catalog[i].content_type)]
        if len(kept) != len(items):
            note_dropped(
                view,
                (i for i in items if not keep(catalog[i].content_type)),
                lambda i: why.format(catalog[i].content_type),
            )
        return kept

    return type_filter


class NoParams(StepParams):
    pass


def kids_items(catalog: Mapping[str, Item]) -> frozenset[str]:
    return frozenset(
        i for i, item in catalog.items() if item.is_kids or item.content_type == "kids"
    )


@step("exclude_kids_for_adults", NoParams)
def _exclude_kids(params: NoParams, data: EditionData) -> StepFn:
    """Drop kids items for every profile that is not a kids profile."""
    kids = kids_items(data.catalog)
    why = "kids content, adult profile"

    def exclude_kids_for_adults(items: list[str], view: UserView) -> list[str]:
        if view.user.is_kids_profile:
            return items
        kept = [i for i in items if i not in kids]
        if len(kept) != len(items):
            note_dropped(view, (i for i in items if i in kids), lambda i: why)
        return kept

    return exclude_kids_for_adults


@step("exclude_completed", NoParams)
def _exclude_completed(params: NoParams, data: EditionData) -> StepFn:
    """Drop items the user completed (from the whole history, not Personalize's last 100)."""

    def exclude_completed(items: list[str], view: UserView) -> list[str]:
        done = view.completed
        if not done:
            return items
        kept = [i for i in items if i not in done]
        if len(kept) != len(items):
            note_dropped(view, (i for i in items if i in done), lambda i: "already completed")
        return kept

    return exclude_completed


class LevelFit(StepParams):
    experienced_levels: list[str] = Field(default=["advanced"])
    experienced_after_days: int = Field(default=365, ge=0)
    beginner_levels: list[str] = Field(default=["beginner"])
    course_types: list[str] = Field(default=["meditation", "masterclass", "movement"])
    unguided_types: list[str] = Field(default=["soundscape", "music"])
    unguided_topics: list[str] = Field(default=["unguided"])
    max_unguided_minutes: int = Field(default=30, ge=1)


@step("level_fit", LevelFit)
def _level_fit(params: LevelFit, data: EditionData) -> StepFn:
    """No beginner courses for experienced meditators, no long unguided sessions for beginners."""
    courses, topics = set(params.course_types), set(params.unguided_topics)
    beginner_courses = frozenset(
        i for i, it in data.catalog.items() if it.level == "beginner" and it.content_type in courses
    )
    long_unguided = frozenset(
        i
        for i, it in data.catalog.items()
        if (it.content_type in params.unguided_types or topics.intersection(it.topics))
        and it.duration_s > params.max_unguided_minutes * 60
    )
    experienced_levels = set(params.experienced_levels)
    beginner_levels = set(params.beginner_levels)

    def level_of(view: UserView) -> str:
        user = view.user
        if user.level in experienced_levels or user.tenure_days > params.experienced_after_days:
            return "experienced"
        return "beginner" if user.level in beginner_levels else ""

    def level_fit(items: list[str], view: UserView) -> list[str]:
        level = level_of(view)
        if level == "experienced":
            banned, why = beginner_courses, "beginner course for an experienced meditator"
        elif level == "beginner":
            banned = long_unguided
            why = f"unguided, over {params.max_unguided_minutes} min: too long for a beginner"
        else:
            return items
        kept = [i for i in items if i not in banned]
        if len(kept) != len(items):
            note_dropped(view, (i for i in items if i in banned), lambda i: why)
        return kept

    return level_fit


class Locale(StepParams):
    allow_english_fallback: bool = True
    neutral_languages: list[str] = Field(default=["", "zxx", "mul", "none"])


@step("locale", Locale)
def _locale(params: Locale, data: EditionData) -> StepFn:
    """Keep content in the user's language (plus English after it, when allowed)."""
    lang = {i: language_of(it.language) for i, it in data.catalog.items()}
    neutral = frozenset(params.neutral_languages)
    english = params.allow_english_fallback

    def locale(items: list[str], view: UserView) -> list[str]:
        own = view.language
        fits = [i for i in items if lang[i] == own or lang[i] in neutral]
        if english and own != "en":
            fits += [i for i in items if lang[i] == "en"]  # after the user's own language
        if len(fits) != len(items):
            kept = set(fits)
            note_dropped(
                view,
                (i for i in items if i not in kept),
                lambda i: f"in {lang[i] or '?'}, the user reads {own}",
            )
        return fits

    return locale
