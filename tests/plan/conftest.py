"""Builders for the plan tests: catalog items, users, a campaign in a temporary project root,
and small input files in the formats the readers take."""

from __future__ import annotations

import csv
import shutil
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from calm_mail.campaign import Campaign
from calm_mail.edition import Edition
from calm_mail.inputs.audience import COLUMNS as AUDIENCE_COLUMNS
from calm_mail.inputs.catalog import COLUMNS as CATALOG_COLUMNS
from calm_mail.records import Completion, Item, Recommendation, User

REPO = Path(__file__).resolve().parents[2]
EDITION = Edition.parse("2026-W48")  # send date: Saturday 2026-11-28
SEND = datetime(2026, 11, 28, tzinfo=UTC)
NEW = SEND - timedelta(days=2)
OLD = SEND - timedelta(days=200)


def item(
    item_id: str,
    *,
    content_type: str = "meditation",
    language: str = "en",
    level: str = "intermediate",
    is_kids: bool = False,
    topics: Sequence[str] | None = None,
    collection: str | None = None,
    position: int | None = None,
    created: datetime = NEW,
    minutes: int = 10,
) -> Item:
    return Item(
        item_id=item_id,
        content_type=content_type,
        title=f"Title {item_id}",
        narrator="Ada Quill",
        duration_s=minutes * 60,
        language=language,
        level=level,
        is_kids=is_kids,
        topics=tuple(topics) if topics is not None else (f"topic-{item_id}",),
        collection_id=collection,
        collection_position=position,
        created_at=created,
        image_url=f"https://img.example/{item_id}.jpg",
        deep_link=f"https://calm.example/app/{item_id}",
    )


def user(user_id: str, **overrides: Any) -> User:
    fields: dict[str, Any] = dict(
        user_id=user_id,
        email=f"{user_id}@example.com",
        locale="en-US",
        timezone="America/New_York",
        preferred_hour=None,
        country="US",
        tenure_days=100,
        level="intermediate",
        is_kids_profile=False,
        subscription_status="subscriber",
        email_opt_in=True,
        last_active_at=SEND - timedelta(days=3),
    )
    fields.update(overrides)
    return User(**fields)


def rec(user_id: str, items: Iterable[str]) -> Recommendation:
    return Recommendation(user_id=user_id, item_ids=tuple(items))


def done(user_id: str, item_id: str, days_ago: int = 10) -> Completion:
    return Completion(
        user_id=user_id, item_id=item_id, completed_at=SEND - timedelta(days=days_ago)
    )


def campaign_in(
    root: Path,
    *,
    name: str = "weekly_winddown",
    rules: str | None = None,
    changes: Mapping[str, Mapping[str, Any]] | None = None,
) -> Campaign:
    """The shipped campaign `name` rooted at `root` (rules copied there, or written from
    `rules`), with top-level sections updated by `changes`."""
    data = tomllib.loads((REPO / "campaigns" / f"{name}.toml").read_text())
    for section, values in (changes or {}).items():
        data[section] = {**data.get(section, {}), **values}
    (root / "rules").mkdir(parents=True, exist_ok=True)
    target = root / "rules" / f"{data['campaign']['rules']}.toml"
    if rules is None:
        shutil.copy(REPO / "rules" / "weekly_winddown.toml", target)
    else:
        target.write_text(rules)
    path = root / "campaigns" / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    return Campaign.model_validate({**data, "root": root, "path": path})


@pytest.fixture
def campaign(tmp_path: Path) -> Campaign:
    return campaign_in(tmp_path)


# ----------------------------------------------------------------------------- input files


def write_catalog(path: Path, items: Iterable[Item]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CATALOG_COLUMNS)
        for it in items:
            w.writerow(
                [
                    it.item_id,
                    it.content_type,
                    it.title,
                    it.narrator,
                    it.duration_s,
                    it.language,
                    it.level,
                    str(it.is_kids).lower(),
                    "|".join(it.topics),
                    it.collection_id or "",
                    it.collection_position or "",
                    int(it.created_at.timestamp()),
                    it.image_url,
                    it.deep_link,
                ]
            )


def write_users(path: Path, users: Iterable[User]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(AUDIENCE_COLUMNS)
        for u in users:
            active = u.last_active_at.strftime("%Y-%m-%dT%H:%M:%SZ") if u.last_active_at else ""
            w.writerow(
                [
                    u.user_id,
                    u.email,
                    u.locale,
                    u.timezone or "",
                    "" if u.preferred_hour is None else u.preferred_hour,
                    u.country,
                    u.tenure_days,
                    u.level,
                    str(u.is_kids_profile).lower(),
                    u.subscription_status,
                    str(u.email_opt_in).lower(),
                    active,
                ]
            )


def write_personalize(
    folder: Path, recs: Iterable[Recommendation], raw_lines: Sequence[bytes] = ()
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "part-00000.json.out").open("wb") as fh:
        for r in recs:
            fh.write(
                orjson.dumps(
                    {
                        "input": {"userId": r.user_id},
                        "output": {"recommendedItems": list(r.item_ids)},
                        "error": None,
                    }
                )
                + b"\n"
            )
        for line in raw_lines:
            fh.write(line + b"\n")


def write_editorial(path: Path, edition: str, picks: Mapping[str, Sequence[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f'edition = "{edition}"', "", "[locales]"]
    lines += [
        f'"{loc}" = [{", ".join(orjson.dumps(i).decode() for i in ids)}]'
        for loc, ids in picks.items()
    ]
    path.write_text("\n".join(lines) + "\n")


def write_completions(path: Path, rows: Iterable[Completion]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user_id", "content_id", "completed_at"])
        for c in rows:
            w.writerow([c.user_id, c.item_id, c.completed_at.strftime("%Y-%m-%dT%H:%M:%SZ")])
