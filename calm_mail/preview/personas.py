"""Built-in sample users for the preview: fictional people an editor can look at the email as.

A persona is a `records.User` (with a fictional id, ``persona:<name>``) plus declared tastes.
Its Personalize line is synthesized deterministically from the catalog by ranking every item
by those tastes, so a persona goes through the very same planner pieces (sources, rules,
fallback) and composer as a real user. The ``missing`` persona has no line at all, which
shows the editorial fallback.
"""

from __future__ import annotations

import zlib
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

from calm_mail.edition import Edition
from calm_mail.errors import UsageError
from calm_mail.records import Item, Recommendation, User

PREFIX = "persona:"
RECOMMENDATIONS = 500  # as many as the Personalize batch job returns per user
NEW_BONUS = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Persona:
    """A sample user and what they like. `types` and `topics` weigh catalog items."""

    name: str
    label: str
    description: str
    locale: str
    timezone: str
    country: str
    level: str
    tenure_days: int
    types: Mapping[str, float] = field(default_factory=dict)
    topics: Mapping[str, float] = field(default_factory=dict)
    in_personalize: bool = True  # False: missing from the batch output (editorial fallback)
    completed_top: int = 0  # how many of their best new items they already completed

    @property
    def user_id(self) -> str:
        return f"{PREFIX}{self.name}"

    def user(self, edition: Edition | str) -> User:
        """The persona as an audience row for `edition`: opted in, subscribed, active the
        day before the send date, so eligibility lets them through."""
        ed = edition if isinstance(edition, Edition) else Edition.parse(edition)
        active = datetime.combine(ed.send_date, time(20, 0), tzinfo=UTC) - timedelta(days=1)
        return User(
            user_id=self.user_id,
            email=f"{self.name.replace('_', '.')}@persona.calm.example",
            locale=self.locale,
            timezone=self.timezone,
            preferred_hour=None,
            country=self.country,
            tenure_days=self.tenure_days,
            level=self.level,
            is_kids_profile=False,
            subscription_status="subscriber",
            email_opt_in=True,
            last_active_at=active,
        )


PERSONAS: dict[str, Persona] = {
    p.name: p
    for p in (
        Persona(
            name="beginner",
            label="Beginner",
            description="Three weeks in, short guided meditations, wants help with stress.",
            locale="en-US",
            timezone="America/Chicago",
            country="US",
            level="beginner",
            tenure_days=21,
            types={"meditation": 2.0, "movement": 0.6, "soundscape": 0.8, "masterclass": 0.4},
            topics={"stress": 1.0, "anxiety": 0.8, "breathing": 0.8, "morning": 0.3},
        ),
        Persona(
            name="experienced",
            label="Experienced meditator",
            description="Four years of daily practice, advanced; has done some of the new "
            "sessions already.",
            locale="en-GB",
            timezone="Europe/London",
            country="GB",
            level="advanced",
            tenure_days=1460,
            types={"meditation": 2.0, "masterclass": 1.2, "music": 0.5},
            topics={"focus": 0.8, "self_compassion": 0.8, "body_scan": 0.6, "gratitude": 0.5},
            completed_top=2,
        ),
        Persona(
            name="sleep",
            label="Sleep-focused listener",
            description="Opens the app at bedtime: sleep stories, rain, slow piano.",
            locale="en-US",
            timezone="America/Los_Angeles",
            country="US",
            level="intermediate",
            tenure_days=240,
            types={"sleep_story": 2.5, "soundscape": 1.6, "music": 1.2},
            topics={"sleep": 1.5, "bedtime": 1.0, "rain": 0.8, "piano": 0.6, "ocean": 0.4},
        ),
        Persona(
            name="spanish",
            label="Spanish speaker (es-ES)",
            description="Reads Spanish; gets Spanish content first, English after it.",
            locale="es-ES",
            timezone="Europe/Madrid",
            country="ES",
            level="intermediate",
            tenure_days=180,
            types={"meditation": 1.4, "sleep_story": 1.2, "soundscape": 0.6},
            topics={"sleep": 0.6, "stress": 0.6, "nature": 0.4},
        ),
        Persona(
            name="japanese",
            label="Japanese speaker (ja-JP)",
            description="Reads Japanese; the email's copy and dates are in Japanese.",
            locale="ja-JP",
            timezone="Asia/Tokyo",
            country="JP",
            level="intermediate",
            tenure_days=300,
            types={"meditation": 1.2, "soundscape": 1.0, "music": 1.0},
            topics={"focus": 0.6, "rain": 0.6, "forest": 0.5},
        ),
        Persona(
            name="french",
            label="French speaker (fr-FR)",
            description="Reads French; evening sleep stories and breathing.",
            locale="fr-FR",
            timezone="Europe/Paris",
            country="FR",
            level="intermediate",
            tenure_days=120,
            types={"sleep_story": 1.4, "meditation": 1.0},
            topics={"sleep": 0.8, "breathing": 0.6},
        ),
        Persona(
            name="german",
            label="German speaker (de-DE)",
            description="Reads German; focus and movement.",
            locale="de-DE",
            timezone="Europe/Berlin",
            country="DE",
            level="intermediate",
            tenure_days=400,
            types={"meditation": 1.2, "movement": 1.0, "masterclass": 0.8},
            topics={"focus": 0.8, "energy": 0.6, "walking": 0.4},
        ),
        Persona(
            name="portuguese",
            label="Portuguese speaker (pt-BR)",
            description="Reads Portuguese; calm music and nature sounds.",
            locale="pt-BR",
            timezone="America/Sao_Paulo",
            country="BR",
            level="intermediate",
            tenure_days=90,
            types={"music": 1.4, "soundscape": 1.2, "meditation": 0.8},
            topics={"nature": 0.8, "piano": 0.6, "ocean": 0.5},
        ),
        Persona(
            name="missing",
            label="Missing from Personalize (fallback)",
            description="Has no line in the Personalize output: the personalized arm falls "
            "back to the editors' list, marked as fallback.",
            locale="en-US",
            timezone="America/New_York",
            country="US",
            level="intermediate",
            tenure_days=60,
            in_personalize=False,
        ),
        Persona(
            name="new_user",
            label="Brand-new user",
            description="Signed up yesterday: no history, Personalize's cold-start ranking.",
            locale="en-US",
            timezone="America/Denver",
            country="US",
            level="beginner",
            tenure_days=1,
        ),
    )
}


def get_persona(name: str) -> Persona:
    """The persona called `name` (with or without the ``persona:`` prefix); UsageError naming
    the known ones otherwise."""
    key = name.removeprefix(PREFIX)
    persona = PERSONAS.get(key)
    if persona is None:
        raise UsageError(f"no persona {name!r}; known personas: {', '.join(PERSONAS)}")
    return persona


def affinity(persona: Persona, item: Item, language: str, *, is_new: bool = False) -> float:
    """How much `persona` likes `item`: type + topics + a language bonus + a bonus for new
    items (the batch job's exploration of fresh content) + a tiny stable per-item jitter, so
    ties break the same way every run but not alphabetically."""
    score = persona.types.get(item.content_type, 0.1) + (NEW_BONUS if is_new else 0.0)
    score += sum(persona.topics.get(t, 0.0) for t in item.topics)
    item_lang = item.language.split("-", 1)[0].lower()
    if item_lang == language:
        score += 1.5
    elif item_lang != "en":
        score -= 1.0
    if item.is_kids or item.content_type == "kids":
        score -= 2.0  # Personalize learns adults skip kids content; rules drop it anyway
    jitter = zlib.crc32(f"{persona.name}\x00{item.item_id}".encode()) / 2**32
    return score + 0.3 * jitter


def recommend(
    persona: Persona,
    catalog: Mapping[str, Item],
    *,
    new: Container[str] = frozenset(),
    limit: int = RECOMMENDATIONS,
) -> Recommendation | None:
    """The persona's synthetic Personalize line: catalog items ranked by `affinity` (`new`:
    the edition's new item ids), best first, ties by item id. None for a persona missing from
    the output."""
    if not persona.in_personalize:
        return None
    language = persona.locale.split("-", 1)[0].lower()
    scored = sorted(
        (
            (affinity(persona, item, language, is_new=item_id in new), item_id)
            for item_id, item in catalog.items()
        ),
        key=lambda pair: (-pair[0], pair[1]),
    )[:limit]
    return Recommendation(user_id=persona.user_id, item_ids=tuple(i for _, i in scored))


def history(persona: Persona, rec: Recommendation | None, new: frozenset[str]) -> frozenset[str]:
    """What the persona already completed: their `completed_top` best-ranked new items."""
    if rec is None or persona.completed_top <= 0:
        return frozenset()
    return frozenset([i for i in rec.item_ids if i in new][: persona.completed_top])
