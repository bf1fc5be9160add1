"""What the steps see: the edition (`EditionData`, built once) and one user (`UserView`)."""

from __future__ import annotations

import functools
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from calm_mail.records import Item, User


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
