"""Fixtures for the compose tests: the shipped campaign, a small hand-made catalog, deliveries."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from calm_mail.campaign import Campaign, load_campaign
from calm_mail.compose.composer import Composer
from calm_mail.records import ContentSource, Item, PlannedDelivery

ROOT = Path(__file__).resolve().parents[2]
EDITION = "2026-W27"
LOCALES = ("en-US", "en-GB", "es-ES", "fr-FR", "de-DE", "pt-BR", "ja-JP")
NASTY_TITLE = """<script>alert("x")</script> Rain & Thunder's "Calm" """
CREATED = datetime(2026, 6, 29, 12, tzinfo=UTC)


def make_item(item_id: str, **overrides: object) -> Item:
    fields: dict[str, object] = {
        "item_id": item_id,
        "content_type": "meditation",
        "title": f"Evening Reset {item_id}",
        "narrator": "Ava Stone",
        "duration_s": 720,
        "language": "en",
        "level": "all",
        "is_kids": False,
        "topics": ("sleep",),
        "collection_id": None,
        "collection_position": None,
        "created_at": CREATED,
        "image_url": f"https://img.calm.example/{item_id}.jpg",
        "deep_link": f"https://calm.example/app/session/{item_id}",
    }
    fields.update(overrides)
    return Item(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def campaign() -> Campaign:
    return load_campaign("weekly_winddown", ROOT)


@pytest.fixture(scope="session")
def catalog() -> dict[str, Item]:
    items = [
        make_item("m1", title="Softening Into Sleep"),
        make_item(
            "s1",
            content_type="sleep_story",
            title="The Lighthouse Keeper",
            duration_s=2700,
            narrator="Jonah Reed",
        ),
        make_item("x1", title=NASTY_TITLE, narrator='O\'Brien & "Sons" <b>'),
        make_item("sc1", content_type="soundscape", title="Forest Rain", duration_s=4500),
        make_item("mu1", content_type="music", title="Slow Piano", deep_link="session/mu1"),
        *[
            make_item(
                f"c{n}",
                content_type="meditation",
                title=f"7 Days of Calm: Day {n}",
                collection_id="c",
                collection_position=n,
            )
            for n in range(1, 8)
        ],
    ]
    return {item.item_id: item for item in items}


@pytest.fixture(scope="session")
def composer(campaign: Campaign, catalog: dict[str, Item]) -> Composer:
    return Composer(campaign, catalog, EDITION)


DeliveryFactory = Callable[..., PlannedDelivery]


@pytest.fixture(scope="session")
def delivery() -> DeliveryFactory:
    def build(**overrides: object) -> PlannedDelivery:
        fields: dict[str, object] = {
            "edition": EDITION,
            "user_id": "u-42",
            "email": "reader@example.com",
            "locale": "en-US",
            "arm": "personalized",
            "source": ContentSource.PERSONALIZE,
            "fallback": False,
            "item_ids": ("m1", "c3", "s1", "x1", "sc1", "mu1"),
            "send_at": datetime(2026, 7, 4, 12, 0, tzinfo=UTC),
            "timezone": "America/New_York",
        }
        fields.update(overrides)
        return PlannedDelivery(**fields)  # type: ignore[arg-type]

    return build
