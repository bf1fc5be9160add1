"""The content rules engine: an ordered list of named built-in steps from ``rules/*.toml``.

A rule file is a list of steps, each a built-in looked up by name with its parameters::

    [[steps]]
    name = "only_new"
    days = 7

Loading checks every step at once (unknown name, unknown or bad parameter, a rule that
contradicts the campaign) and raises `RuleError` naming the file, the step and the key.
`RuleSet.bind` then prepares per-edition sets once (the new items, each item's language, the
collections), so applying the rules to one user costs a few set look-ups per surviving item.
The same rules run for every arm, so arms differ only in where their candidates come from.

After the steps, hard guards run whatever the file says: no kids item for an adult profile, no
item twice, never more than the campaign's ``max_items``.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, ClassVar, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from calm_mail.campaign import Campaign, Content
from calm_mail.errors import RuleError
from calm_mail.records import Item, TraceStep, User

KNOWN_TYPES = frozenset(
    {"meditation", "sleep_story", "soundscape", "music", "masterclass", "movement", "kids"}
)
Dropped = list[tuple[str, str]] | None  # (item_id, why), or None when nobody asked
StepFn = Callable[[list[str], "UserView"], list[str]]


# ----------------------------------------------------------------------------- per edition/user


@dataclass(frozen=True, slots=True)
class EditionData:
    """What the steps need about the edition, computed once."""

    edition: str
    send_date: date
    catalog: Mapping[str, Item]
    collections: Mapping[str, tuple[str, ...]]  # collection id -> part ids by position

    @classmethod
    def build(cls, edition: str, send_date: date, catalog: Mapping[str, Item]) -> EditionData:
        parts: dict[str, list[tuple[int, str]]] = {}
        for item in catalog.values():
            if item.collection_id:
                pos = item.collection_position if item.collection_position is not None else 0
                parts.setdefault(item.collection_id, []).append((pos, item.item_id))
        collections = {cid: tuple(i for _, i in sorted(p)) for cid, p in parts.items()}
        return cls(edition=edition, send_date=send_date, catalog=catalog, collections=collections)


@dataclass(slots=True)
class UserView:
    """One user as the steps see them; `dropped` collects the trace when someone asked."""

    user: User
    completed: frozenset[str] | set[str]
    seed: int
    language: str
    dropped: list[tuple[str, str]] | None = None

    @classmethod
    def of(
        cls, user: User, completed: frozenset[str] | set[str], edition: str, *, trace: bool = False
    ) -> UserView:
        return cls(
            user=user,
            completed=completed,
            seed=diversify_seed(edition, user.user_id),
            language=_language_of_locale(user.locale),
            dropped=[] if trace else None,
        )


def diversify_seed(edition: str, user_id: str) -> int:
    """A stable per-(edition, user) seed (CRC-32; never Python's salted hash())."""
    return zlib.crc32(f"{edition}\x00{user_id}".encode())


def language_of(locale: str) -> str:
    return locale.replace("_", "-").split("-", 1)[0].strip().lower()


@functools.lru_cache(maxsize=1024)
def _language_of_locale(locale: str) -> str:
    """`language_of`, remembered: an audience has a handful of locales."""
    return language_of(locale)


# ----------------------------------------------------------------------------- the registry


class StepParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True, slots=True)
class StepKind:
    name: str
    params: type[StepParams]
    bind: Callable[[Any, EditionData], StepFn]
    doc: str


STEPS: dict[str, StepKind] = {}


def step(name: str, params: type[StepParams]) -> Callable[[Callable[..., StepFn]], Any]:
    """Register a built-in step: `bind(params, edition_data) -> fn(items, user_view)`."""

    def register(bind: Callable[..., StepFn]) -> Callable[..., StepFn]:
        STEPS[name] = StepKind(name, params, bind, (bind.__doc__ or "").strip().split("\n")[0])
        return bind

    return register


def _drop(view: UserView, items: Iterable[str], why: Callable[[str], str]) -> None:
    if view.dropped is not None:
        view.dropped.extend((i, why(i)) for i in items)


@dataclass(frozen=True, slots=True)
class PerItem:
    """What a step that judges each item on its own reads of the user.

    Such a step keeps or drops an item whatever the other items are, and never reorders them
    (``locale`` excepted: it puts the user's language first, English after, which `tier`
    says). `profile(view)` is everything about the user it reads besides ``completed`` (only
    `uses_completed` steps read that): two users with equal profiles get equal verdicts, so
    `BoundRules` can remember them per profile (see `_Fused`). `keeps` is the set a step keeps,
    for a plain set filter that runs at C speed on a long candidate list.
    """

    profile: Callable[[UserView], Hashable]
    uses_completed: bool = False
    tier: Callable[[str, UserView], int] | None = None
    keeps: frozenset[str] | None = None


def _anyone(view: UserView) -> None:
    return None


def _judges_each_item(fn: StepFn, judge: PerItem) -> StepFn:
    """Mark `fn` as a step that judges each item on its own (see `PerItem`)."""
    fn.per_item = judge  # type: ignore[attr-defined]
    return fn


def per_item(fn: StepFn) -> PerItem | None:
    return getattr(fn, "per_item", None)


# ----------------------------------------------------------------------------- built-in steps


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
            _drop(
                view,
                (i for i in items if i not in new),
                lambda i: _release_note(data.catalog.get(i), start),
            )
        return kept

    return _judges_each_item(only_new, PerItem(_anyone, keeps=new))


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
            _drop(
                view,
                (i for i in items if not keep(catalog[i].content_type)),
                lambda i: why.format(catalog[i].content_type),
            )
        return kept

    return _judges_each_item(type_filter, PerItem(_anyone))


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
            _drop(view, (i for i in items if i in kids), lambda i: why)
        return kept

    return _judges_each_item(
        exclude_kids_for_adults, PerItem(lambda view: view.user.is_kids_profile)
    )


@step("exclude_completed", NoParams)
def _exclude_completed(params: NoParams, data: EditionData) -> StepFn:
    """Drop items the user completed (from the whole history, not Personalize's last 100)."""

    def exclude_completed(items: list[str], view: UserView) -> list[str]:
        done = view.completed
        if not done:
            return items
        kept = [i for i in items if i not in done]
        if len(kept) != len(items):
            _drop(view, (i for i in items if i in done), lambda i: "already completed")
        return kept

    return _judges_each_item(exclude_completed, PerItem(_anyone, uses_completed=True))


class LevelFit(StepParams):
    experienced_levels: list[str] = ["advanced"]
    experienced_after_days: int = Field(default=365, ge=0)
    beginner_levels: list[str] = ["beginner"]
    course_types: list[str] = ["meditation", "masterclass", "movement"]
    unguided_types: list[str] = ["soundscape", "music"]
    unguided_topics: list[str] = ["unguided"]
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
            _drop(view, (i for i in items if i in banned), lambda i: why)
        return kept

    return _judges_each_item(level_fit, PerItem(level_of))


class Locale(StepParams):
    allow_english_fallback: bool = True
    neutral_languages: list[str] = ["", "zxx", "mul", "none"]


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
            _drop(
                view,
                (i for i in items if i not in kept),
                lambda i: f"in {lang[i] or '?'}, the user reads {own}",
            )
        return fits

    def tier(item: str, view: UserView) -> int:
        return 0 if lang[item] == view.language or lang[item] in neutral else 1

    return _judges_each_item(locale, PerItem(lambda view: view.language, tier=tier))


@step("roll_up_collections", NoParams)
def _roll_up(params: NoParams, data: EditionData) -> StepFn:
    """A collection's part becomes the collection: its first unfinished part, once per email."""
    parts = {cid: p for cid, p in data.collections.items() if len(p) > 1}
    collection_of = {i: cid for cid, p in parts.items() for i in p}

    def roll_up_collections(items: list[str], view: UserView) -> list[str]:
        out: list[str] = []
        seen: set[str] = set()
        trace = view.dropped
        for i in items:
            cid = collection_of.get(i)
            if cid is None:
                if i not in seen:
                    seen.add(i)
                    out.append(i)
                continue
            if cid in seen:
                if trace is not None:
                    trace.append((i, f"collection {cid} is already in this email"))
                continue
            seen.add(cid)
            done = view.completed
            if not done:  # most users: no generator needed for the first part
                rep: str | None = parts[cid][0]
            else:
                rep = next((p for p in parts[cid] if p not in done), None)
            if rep is None:
                if trace is not None:
                    trace.append((i, f"collection {cid}: every part completed"))
                continue
            if rep != i and trace is not None:
                trace.append((i, f"part of collection {cid}: replaced by {rep}"))
            out.append(rep)
        return out

    return roll_up_collections


class Diversify(StepParams):
    tier_size: int = Field(default=3, ge=1)
    max_per_type: int = Field(default=2, ge=1)
    max_per_topic: int = Field(default=2, ge=1)


@step("diversify", Diversify)
def _diversify(params: Diversify, data: EditionData) -> StepFn:
    """Seeded shuffle within relevance tiers, then a cap per content type and per topic."""
    catalog = data.catalog
    key = {i: i.encode() for i in catalog}
    # (content type, topics) per item, looked up once per candidate on the hot path
    facets = {i: (item.content_type, item.topics) for i, item in catalog.items()}
    tier, max_type, max_topic = params.tier_size, params.max_per_type, params.max_per_topic
    crc32 = zlib.crc32

    def diversify(items: list[str], view: UserView) -> list[str]:
        seed = view.seed
        if tier == 1:
            shuffled = items
        else:
            # by tier, then by the seeded key, then by position (a stable sort per tier)
            ranked = [(n // tier, crc32(key[i], seed), n, i) for n, i in enumerate(items)]
            ranked.sort()
            shuffled = [r[3] for r in ranked]
        per_type: dict[str, int] = {}
        per_topic: dict[str, int] = {}
        out = []
        for i in shuffled:
            content_type, topics = facets[i]
            over = per_type.get(content_type, 0) >= max_type
            if not over:
                for topic in topics:  # a loop, not any(): no generator per candidate
                    if per_topic.get(topic, 0) >= max_topic:
                        over = True
                        break
            if over:
                if view.dropped is not None:
                    why = _over_cap(catalog[i], per_type, per_topic, max_type, max_topic)
                    view.dropped.append((i, why))
                continue
            per_type[content_type] = per_type.get(content_type, 0) + 1
            for topic in topics:
                per_topic[topic] = per_topic.get(topic, 0) + 1
            out.append(i)
        return out

    return diversify


def _over_cap(
    item: Item, per_type: dict[str, int], per_topic: dict[str, int], max_type: int, max_topic: int
) -> str:
    if per_type.get(item.content_type, 0) >= max_type:
        return f"already {max_type} of type {item.content_type}"
    for topic in item.topics:
        if per_topic.get(topic, 0) >= max_topic:
            return f"already {max_topic} on topic {topic}"
    return ""


class Take(StepParams):
    max: int = Field(default=6, ge=1, le=20)
    min: int = Field(default=3, ge=1)

    @field_validator("min")
    @classmethod
    def _range(cls, low: int, info: ValidationInfo) -> int:
        high = info.data.get("max")
        if high is not None and low > high:
            raise ValueError(f"min ({low}) exceeds max ({high})")
        return low


@step("take", Take)
def _take(params: Take, data: EditionData) -> StepFn:
    """The first `max` items; fewer than `min` sends the user to the fallback."""
    n = params.max

    def take(items: list[str], view: UserView) -> list[str]:
        if len(items) > n:
            _drop(view, items[n:], lambda i: f"beyond the first {n}")
            return items[:n]
        return items

    return take


# ----------------------------------------------------------------------------- rule sets


@dataclass(frozen=True, slots=True)
class RuleSpec:
    index: int  # 1-based, as people count steps in a file
    name: str
    params: StepParams


@dataclass(frozen=True, slots=True)
class RuleSet:
    path: str
    steps: tuple[RuleSpec, ...]
    description: str = ""

    def take(self) -> Take | None:
        found = [s.params for s in self.steps if isinstance(s.params, Take)]
        return found[-1] if found else None

    def bind(self, data: EditionData, content: Content) -> BoundRules:
        """Prepare every step for one edition (the per-edition sets are built here, once)."""
        take = self.take()
        fns = [(s.name, STEPS[s.name].bind(s.params, data)) for s in self.steps]
        if not self.steps or self.steps[0].name != "only_new":
            known = frozenset(data.catalog)
            fns.insert(0, ("in_catalog", _set_keep(known, "not in the catalog")))
        return BoundRules(
            steps=fns,
            kids=kids_items(data.catalog),
            catalog=data.catalog,
            min_items=take.min if take else content.min_items,
            max_items=min(take.max, content.max_items) if take else content.max_items,
        )


def _set_keep(allowed: frozenset[str], why: str) -> StepFn:
    def keep(items: list[str], view: UserView) -> list[str]:
        kept = list(filter(allowed.__contains__, items))
        if len(kept) != len(items):
            _drop(view, (i for i in items if i not in allowed), lambda i: why)
        return kept

    return _judges_each_item(keep, PerItem(_anyone, keeps=allowed))


@dataclass(slots=True)
class BoundRules:
    """A rule set ready for one edition. `apply` is the per-user hot path."""

    steps: list[tuple[str, StepFn]]
    kids: frozenset[str]
    catalog: Mapping[str, Item]
    min_items: int
    max_items: int
    dropped_by_step: dict[str, int] = field(default_factory=dict)
    guard_hits: int = 0  # items the hard guards removed after the steps (should stay 0)
    # The untraced path: leading set filters, a run of per-item steps judged together, the rest
    _lead: list[tuple[str, StepFn]] = field(init=False, default_factory=list)
    _fused: _Fused | None = field(init=False, default=None)
    _after: list[tuple[str, StepFn]] = field(init=False, default_factory=list)

    GUARD: ClassVar[str] = "guard"

    def __post_init__(self) -> None:
        judges = [per_item(fn) for _, fn in self.steps]
        lead = 0
        while (
            lead < len(judges) and (judge := judges[lead]) is not None and judge.keeps is not None
        ):
            lead += 1
        end = lead
        tiers = 0
        while end < len(judges) and (judge := judges[end]) is not None:
            tiers += judge.tier is not None
            if tiers > 1:  # two reorderings in one run: stop the run before the second
                break
            end += 1
        if end - lead >= 2:  # one step alone is as fast as it is
            self._lead, self._after = self.steps[:lead], self.steps[end:]
            self._fused = _Fused(self.steps[lead:end])

    def drops_in_order(self) -> dict[str, int]:
        """`dropped_by_step` in the rule file's order (a step never dropping is left out)."""
        names = dict.fromkeys(name for name, _ in self.steps)
        return {n: self.dropped_by_step[n] for n in names if self.dropped_by_step.get(n)}

    def prefilter(self) -> frozenset[str] | None:
        """The set the first step keeps, when it is a plain set filter for anyone (``only_new``,
        or the catalog check put first): a reader may apply it ahead, see `apply`'s `ahead`."""
        judge = per_item(self.steps[0][1]) if self.steps else None
        if judge is None or judge.keeps is None or judge.profile is not _anyone:
            return None
        return judge.keeps

    def apply(
        self,
        candidates: Sequence[str],
        view: UserView,
        trace: list[TraceStep] | None = None,
        *,
        ahead: int = 0,
    ) -> list[str]:
        """Run every step, then the hard guards. Appends one TraceStep per step to `trace`.

        Without a trace, a run of steps that judge each item on its own is applied in one
        pass (`_Fused`): same items, same order, same drops counted to the same step.
        `ahead` is how many candidates a reader already dropped with `prefilter` (they were
        left out of `candidates`); they are counted to the first step, which dropped them. A
        trace needs the whole list: a traced user's candidates are never filtered ahead.
        """
        if ahead:
            if trace is not None:
                raise ValueError("a traced user's candidates must not be filtered ahead")
            name = self.steps[0][0]
            self.dropped_by_step[name] = self.dropped_by_step.get(name, 0) + ahead
        fused = self._fused
        if fused is None or trace is not None or view.dropped is not None:
            return self._apply_steps(self.steps, list(candidates), view, trace)
        counts = self.dropped_by_step
        # The leading set filters (`PerItem.keeps`) read any sequence and always build a new
        # list: 500 Personalize candidates need no copy first.
        first = cast(list[str], candidates) if self._lead else list(candidates)
        items = self._apply_steps(self._lead, first, view, None, False)
        items = fused.apply(items, view, counts)
        return self._apply_steps(self._after, items, view, None)

    def _apply_steps(
        self,
        steps: list[tuple[str, StepFn]],
        items: list[str],
        view: UserView,
        trace: list[TraceStep] | None,
        guard: bool = True,
    ) -> list[str]:
        counts = self.dropped_by_step
        for name, fn in steps:
            before = len(items)
            items = fn(items, view)
            if len(items) != before:
                counts[name] = counts.get(name, 0) + before - len(items)
            if trace is not None:
                trace.append(self._trace_step(name, before, items, view))
        return self._guard(items, view, trace) if guard else items

    def _guard(self, items: list[str], view: UserView, trace: list[TraceStep] | None) -> list[str]:
        before = len(items)
        kept = list(dict.fromkeys(items))
        if not view.user.is_kids_profile and not self.kids.isdisjoint(kept):
            kept = [i for i in kept if i not in self.kids]
        if len(kept) > self.max_items:
            kept = kept[: self.max_items]
        if len(kept) != before:
            self.guard_hits += before - len(kept)
            if trace is not None:
                gone = [i for i in items if i not in kept]
                trace.append(
                    TraceStep(
                        step=self.GUARD,
                        note="hard guard: kids, duplicates, max",
                        dropped=tuple((i, "hard guard") for i in gone),
                    )
                )
        return kept

    @staticmethod
    def _trace_step(name: str, before: int, items: list[str], view: UserView) -> TraceStep:
        dropped = tuple(view.dropped or ())
        if view.dropped is not None:
            view.dropped.clear()
        return TraceStep(step=name, dropped=dropped, note=f"{before} -> {len(items)} items")


class _Fused:
    """A run of steps that each judge an item on its own (`PerItem`), applied in one pass.

    Why by hand: applied one after the other, each such step builds a list and counts it;
    judged together, one dictionary look-up per candidate (measured on the bench's Personalize
    users, ~17 candidates after only_new: the whole shipped rule set 30.3 -> 27.9 µs). The
    verdict on an item depends only on the user's profile (the steps' `PerItem.profile`), so
    it is worked out once per (profile, item), by running the steps themselves on that item
    alone, and remembered. ``completed`` is per user and is checked on every call. An item
    dropped is counted to the first step that drops it, as the steps one after the other
    would; the kept items keep their order, split in two tiers when the run
    holds ``locale``.
    """

    __slots__ = ("_completed_at", "_judges", "_names", "_steps", "_tier", "_verdicts")

    def __init__(self, steps: list[tuple[str, StepFn]]) -> None:
        judges = [per_item(fn) for _, fn in steps]
        assert all(j is not None for j in judges), "only steps that judge each item alone"
        self._steps = steps
        self._names = [name for name, _ in steps]
        self._judges = [j for j in judges if j is not None]
        at = [k for k, j in enumerate(self._judges) if j.uses_completed]
        self._completed_at = at[0] if at else -1
        self._tier = next((j.tier for j in self._judges if j.tier is not None), None)
        self._verdicts: dict[tuple[Hashable, ...], dict[str, tuple[int, int]]] = {}

    def apply(self, items: Sequence[str], view: UserView, counts: dict[str, int]) -> list[str]:
        profile = tuple([j.profile(view) for j in self._judges])
        verdicts = self._verdicts.get(profile)
        if verdicts is None:
            verdicts = self._verdicts[profile] = {}
        at = self._completed_at
        done = view.completed if at >= 0 else _NOTHING
        first: list[str] = []
        second: list[str] = []
        dropped: list[int] | None = None
        for i in items:
            verdict = verdicts.get(i)
            if verdict is None:
                verdict = verdicts[i] = self._judge(i, view)
            step, tier = verdict
            if done and (step < 0 or step > at) and i in done:
                step = at
            if step >= 0:
                if dropped is None:
                    dropped = [0] * len(self._names)
                dropped[step] += 1
            elif tier:
                second.append(i)
            else:
                first.append(i)
        if dropped is not None:
            for name, n in zip(self._names, dropped, strict=True):
                if n:
                    counts[name] = counts.get(name, 0) + n
        return first + second if second else first

    def _judge(self, item: str, view: UserView) -> tuple[int, int]:
        """(index of the first step that drops `item`, or -1; its tier)."""
        alone = [item]
        for k, (_, fn) in enumerate(self._steps):
            if not self._judges[k].uses_completed and not fn(alone, view):
                return k, 0
        return -1, (self._tier(item, view) if self._tier is not None else 0)


_NOTHING: frozenset[str] = frozenset()


# ----------------------------------------------------------------------------- loading


def load_rules(path: Path | str) -> RuleSet:
    """Read and check a rule file. Raises `RuleError` listing every problem with its step/key."""
    from calm_mail.campaign import read_toml

    path = Path(path)
    data = read_toml(path, RuleError)
    specs, problems = parse_steps(str(path), data)
    if problems:
        raise RuleError(problems)
    return RuleSet(path=str(path), steps=tuple(specs), description=str(data.get("description", "")))


def parse_steps(path: str, data: Mapping[str, Any]) -> tuple[list[RuleSpec], list[str]]:
    """Every step of a parsed rule file, and every problem found (never stops at the first)."""
    problems = [
        f"{path}: {key}: unknown key (a typo?); a rule file has `description` and [[steps]]"
        for key in data
        if key not in ("steps", "description")
    ]
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        return [], [*problems, f"{path}: steps: no [[steps]] (expected a list of named steps)"]
    specs = []
    for index, raw in enumerate(steps, start=1):
        spec, found = _parse_step(path, index, raw)
        problems += found
        if spec is not None:
            specs.append(spec)
    return specs, problems


def _parse_step(path: str, index: int, raw: Any) -> tuple[RuleSpec | None, list[str]]:
    where = f"{path}: step {index}"
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        return None, [f"{where}: name: every step needs a name (one of {_known()})"]
    name = raw["name"]
    kind = STEPS.get(name)
    if kind is None:
        return None, [f"{where}: name: unknown step {name!r}; known steps: {_known()}"]
    params = {k: v for k, v in raw.items() if k != "name"}
    try:
        return RuleSpec(index=index, name=name, params=kind.params.model_validate(params)), []
    except ValidationError as exc:
        return None, [_param_problem(f"{where} ({name})", err) for err in exc.errors()]


def _param_problem(where: str, err: Any) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "(parameters)"
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown parameter (a typo?)"
    return f"{where}: {key}: {message}"


def _known() -> str:
    return ", ".join(sorted(STEPS))


def contradictions(rules: RuleSet, campaign: Campaign) -> list[str]:
    """Rules that cannot hold together with the campaign's content settings."""
    problems = []
    content = campaign.content
    for spec in rules.steps:
        where = f"{rules.path}: step {spec.index} ({spec.name})"
        if isinstance(spec.params, Take):
            if spec.params.max > content.max_items:
                problems.append(
                    f"{where}: max: {spec.params.max} exceeds the campaign's "
                    f"content.max_items ({content.max_items})"
                )
            if spec.params.min < content.min_items:
                problems.append(
                    f"{where}: min: {spec.params.min} is below the campaign's "
                    f"content.min_items ({content.min_items})"
                )
    only = [
        set(s.params.types)
        for s in rules.steps
        if s.name == "only_types" and isinstance(s.params, Types)
    ]
    banned = {
        t
        for s in rules.steps
        if s.name == "exclude_types" and isinstance(s.params, Types)
        for t in s.params.types
    }
    if only and not (set.intersection(*only) - banned):
        problems.append(
            f"{rules.path}: types: only_types and exclude_types leave no content type at all"
        )
    return problems


def load_campaign_rules(campaign: Campaign) -> RuleSet:
    """The campaign's rule set, checked against the campaign. Raises `RuleError`."""
    rules = load_rules(campaign.rules_path)
    problems = contradictions(rules, campaign)
    if problems:
        raise RuleError(problems)
    return rules


def check_rules(campaign: Campaign) -> list[str]:
    """Every problem of the campaign's rule set, as `file: step: key: what` lines (for validate)."""
    try:
        load_campaign_rules(campaign)
    except RuleError as exc:
        return list(exc.problems)
    return []
