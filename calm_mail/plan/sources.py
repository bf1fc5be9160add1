"""Where an arm's candidate items come from: personalize, editorial, popular, or none (holdout).

Everything per edition is computed once here (the popularity ranking, the editorial lists);
`candidates` per user is a dictionary look-up. The rules then run on the candidates of every
arm alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Iterable, Mapping, Sequence
from datetime import datetime

from calm_mail.plan.rules import language_of
from calm_mail.records import Completion, ContentSource, EditorialPicks, Item, Recommendation, User

POPULAR_KEEP = 200  # a new-item window holds a few dozen items; this leaves room


def popular_items(
    counts: Mapping[str, int], catalog: Mapping[str, Item], *, among: Container[str] | None
) -> tuple[str, ...]:
    """Items ranked by completions (most first), then newest, then id; `among` limits the pool.

    Items of the pool that nobody completed yet still rank (after the others), so a fresh
    edition with no history does not leave the popular arm empty.
    """
    pool = [i for i in catalog if among is None or i in among]
    pool.sort(key=lambda i: (-counts.get(i, 0), -catalog[i].created_at.timestamp(), i))
    return tuple(pool[:POPULAR_KEEP])


class PopularityCounter:
    """Counts completions inside [since, until) while the history streams past once."""

    __slots__ = ("counts", "since", "until")

    def __init__(self, since: datetime, until: datetime) -> None:
        self.since, self.until = since, until
        self.counts: Counter[str] = Counter()

    def add(self, completion: Completion) -> None:
        if self.since <= completion.completed_at < self.until:
            self.counts[completion.item_id] += 1

    def extend(self, completions: Iterable[Completion]) -> None:
        for completion in completions:
            self.add(completion)


class Sources:
    """The candidate list of each content source for one user, for one edition."""

    __slots__ = ("_by_language", "editorial", "popular")

    def __init__(
        self, editorial: EditorialPicks, popular: Sequence[str], catalog: Mapping[str, Item]
    ) -> None:
        self.editorial = {
            loc: tuple(i for i in ids if i in catalog) for loc, ids in editorial.by_locale.items()
        }
        self.popular = tuple(popular)
        self._by_language: dict[str, tuple[str, ...]] = {}
        for loc in sorted(self.editorial):
            self._by_language.setdefault(language_of(loc), self.editorial[loc])

    def editorial_for(self, locale: str) -> tuple[str, ...] | None:
        """The editors' list for the locale; else for another locale of the same language."""
        found = self.editorial.get(locale)
        if found is None:
            found = self._by_language.get(language_of(locale))
        return found

    def candidates(
        self, source: ContentSource, user: User, rec: Recommendation | None
    ) -> Sequence[str] | None:
        """The source's ranked items for `user`; None when the source has nothing for them."""
        if source is ContentSource.PERSONALIZE:
            return rec.item_ids if rec is not None else None
        if source is ContentSource.EDITORIAL:
            return self.editorial_for(user.locale)
        if source is ContentSource.POPULAR:
            return self.popular
        return ()
