"""A realistic, fictional demo data set for one edition, deterministic for a seed.

``generate(out, users=N, seed=S, edition="2026-W48")`` writes, under `out`:

``catalog.csv``
    ~2,000 items (Personalize Items style, see `calm_mail.inputs.catalog`) over meditation,
    sleep_story, soundscape, music, masterclass, movement and kids content; multi-part
    collections; 26-38 items released in the 7 days before the edition's Saturday; a few
    kids sleep stories (``IS_KIDS`` true on a non-kids type); titles with ``&``, quotes and a
    ``<script>`` string to exercise escaping. Every name and title is made up.
``users.csv``
    N users (see `calm_mail.inputs.audience`) with deliberately bad rows planted: bad e-mail
    addresses (which the reader passes and the plan excludes), empty user ids and bad numbers
    (which the reader counts). The manifest records how many of each.
``personalize/<edition>/part-0000k.json.out``
    The batch-inference output: `recs` items per user ranked by the user's hidden tastes plus
    noise, with softmax ``scores``; the last part is gzip'd (``.json.out.gz``) when there are
    several. A few lines carry a non-null ``error``; ~1% of users are missing.
``tastes.parquet``
    The hidden tastes, one row per user with an id, so a simulator can make personalized
    content really perform better. Columns: ``user_id`` (string); ``open_propensity`` (0-1,
    chance to open an email); ``completion_rate`` (0-1, base chance to complete a session the
    email offers); ``language`` (the locale's language code); ``kids_profile`` (bool);
    ``type_<content_type>`` for each of the seven content types and ``topic_<topic>`` for each
    topic in `TOPICS` (float32 weights). A user's affinity for an item is::

        type_<item content type> + sum(topic_<t> for t in item topics) + item quality
        + (item in the user's language, if not English: +1.5 | English: 0 | other: -3)
        + (kids item: -1 for an adult, +2.5 for a kids profile)

    Completions are drawn from the softmax of that affinity over the catalog, and
    Personalize ranks by it plus uniform noise (sd 0.69), plus an exploration boost for items
    younger than 30 days (as User-Personalization's ``itemExplorationConfig`` does).
``item_quality.csv``
    ``item_id, quality``: the hidden per-item term of the affinity above.
``editorial/<edition>.toml``
    The editors' ordered picks per locale: 8-10 new items, in the locale's language first.
``completions.csv``
    ``user_id, content_id, completed_at`` (UTC ISO 8601) over the 60 days before the send date.
``manifest.json``
    Seed, users, edition, counts (items, new items, bad rows planted, error lines, users
    missing from the output, ...) and the files with their sizes.

Nothing depends on the clock: times are relative to the edition's send date. Users are made
in chunks (numpy, pyarrow's CSV writer), so N = 1,000,000 takes seconds per file.
"""

from __future__ import annotations

import csv
import gzip
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from calm_mail.edition import Edition

CONTENT_TYPES = (
    "meditation",
    "sleep_story",
    "soundscape",
    "music",
    "masterclass",
    "movement",
    "kids",
)
TOPICS = (
    "sleep",
    "anxiety",
    "focus",
    "stress",
    "rain",
    "nature",
    "breathing",
    "gratitude",
    "self_compassion",
    "relationships",
    "morning",
    "energy",
    "body_scan",
    "walking",
    "piano",
    "ocean",
    "forest",
    "bedtime",
    "kindness",
    "confidence",
)
LANGUAGES = ("en", "es", "fr", "de", "pt", "ja")
DAY = 86_400
USER_CHUNK = 65_536
SCORE_CHUNK = 1_024
FIRST_USER_ID = 100_001
NOISE_WIDTH = 2.4  # Personalize's error: uniform noise of this width (sd 0.69) on affinity
# User-Personalization's item exploration (itemExplorationConfig: explorationWeight,
# explorationItemAgeCutOff) surfaces items younger than the cut-off that have few interactions;
# modelled as a boost to their ranking score, so a user's 500 carry a realistic share of new
# items instead of only those that rank by taste alone.
EXPLORATION_BOOST = 2.5
EXPLORATION_AGE_DAYS = 30

# locale -> (weight, language, [(time zone, country, share)])
LOCALES: dict[str, tuple[float, str, list[tuple[str, str, float]]]] = {
    "en-US": (
        0.45,
        "en",
        [
            ("America/New_York", "US", 0.42),
            ("America/Chicago", "US", 0.23),
            ("America/Denver", "US", 0.07),
            ("America/Los_Angeles", "US", 0.17),
            ("America/Phoenix", "US", 0.03),
            ("America/Anchorage", "US", 0.01),
            ("Pacific/Honolulu", "US", 0.01),
            ("America/Toronto", "CA", 0.06),
        ],
    ),
    "en-GB": (0.12, "en", [("Europe/London", "GB", 1.0)]),
    "es-ES": (0.10, "es", [("Europe/Madrid", "ES", 0.95), ("Atlantic/Canary", "ES", 0.05)]),
    "fr-FR": (0.08, "fr", [("Europe/Paris", "FR", 1.0)]),
    "de-DE": (0.09, "de", [("Europe/Berlin", "DE", 0.9), ("Europe/Vienna", "AT", 0.1)]),
    "pt-BR": (
        0.09,
        "pt",
        [
            ("America/Sao_Paulo", "BR", 0.8),
            ("America/Manaus", "BR", 0.1),
            ("America/Recife", "BR", 0.1),
        ],
    ),
    "ja-JP": (0.07, "ja", [("Asia/Tokyo", "JP", 1.0)]),
}
INVALID_ZONES = ("Mars/Olympus_Mons", "America/Atlantis", "UTC+25", "Europe/Narnia")
SUBSCRIPTIONS = ("subscriber", "trial", "free", "lapsed")
SUBSCRIPTION_WEIGHTS = (0.55, 0.10, 0.25, 0.10)
HOURS = np.array([6, 7, 8, 9, 12, 18, 20, 21, 22])
HOUR_WEIGHTS = np.array([0.1, 0.2, 0.2, 0.1, 0.05, 0.05, 0.1, 0.12, 0.08])
ERROR_MESSAGES = (
    "Internal error while generating recommendations for this record",
    "Record could not be processed: user history unavailable",
)

# --------------------------------------------------------------------------- fictional words

WORDS = tomllib.loads((Path(__file__).parent / "demo_words.toml").read_text(encoding="utf-8"))
NARRATORS: dict[str, list[str]] = WORDS["narrators"]
EN_TITLES: dict[str, list[list[str]]] = WORDS["titles"]  # content type -> [firsts, seconds]
LOCAL_TITLES: dict[str, list[list[str]]] = WORDS["local_titles"]  # language -> [firsts, ends]
TYPE_TOPICS: dict[str, list[str]] = WORDS["topics"]
MINUTES: dict[str, list[int]] = WORDS["minutes"]
COLLECTIONS = tuple(
    (c["title"], c["content_type"], c["part"], tuple(c["sizes"])) for c in WORDS["collections"]
)
STANDALONE = {
    "meditation": 600,
    "sleep_story": 320,
    "soundscape": 200,
    "music": 240,
    "masterclass": 60,
    "movement": 90,
    "kids": 150,
}
KIDS_SLEEP_STORIES = 20
# (title pattern, content type, part label, part counts)
COLLECTION_ROUNDS = 4  # each pattern is used this many times (different sizes, languages)
NEW_COLLECTION = ("Sleep Softer in 5 Nights: Winter Edition", "sleep_story", "Night", 5)
ESCAPE_TITLES = (
    ("meditation", 'Tea & "Toast": A Slow Morning'),
    ("soundscape", 'Whispers <script>alert("zzz")</script> & Rain'),
)


# --------------------------------------------------------------------------- catalog


@dataclass(slots=True)
class Catalog:
    """The generated items as rows, plus the numeric features the scoring needs."""

    rows: list[dict[str, Any]]
    new_ids: list[str]
    type_index: np.ndarray = field(init=False)
    topics: np.ndarray = field(init=False)
    language: np.ndarray = field(init=False)
    quality: np.ndarray = field(init=False)
    is_kids: np.ndarray = field(init=False)
    created: np.ndarray = field(init=False)
    ids: np.ndarray = field(init=False)

    def finish(self, rng: np.random.Generator) -> Catalog:
        rows = self.rows
        self.type_index = np.array([CONTENT_TYPES.index(r["CONTENT_TYPE"]) for r in rows])
        self.topics = np.array(
            [[t in r["TOPICS"].split("|") for t in TOPICS] for r in rows], dtype=np.float32
        )
        self.language = np.array([LANGUAGES.index(r["LANGUAGE"]) for r in rows])
        self.quality = rng.normal(0.0, 0.6, len(rows)).astype(np.float32)
        self.is_kids = np.array([r["IS_KIDS"] == "true" for r in rows])
        self.created = np.array([r["CREATION_TIMESTAMP"] for r in rows], dtype=np.int64)
        self.ids = np.array([r["ITEM_ID"] for r in rows], dtype=object)
        return self


def build_catalog(rng: np.random.Generator, send: int) -> Catalog:
    """~2,000 items; `send` is the edition's send date as epoch seconds (00:00 UTC)."""
    specs: list[dict[str, Any]] = []
    for content_type, count in STANDALONE.items():
        for _ in range(count):
            specs.append(_standalone(rng, content_type, _language(rng, content_type)))
    for _ in range(KIDS_SLEEP_STORIES):
        spec = _standalone(rng, "kids", "en")
        specs.append({**spec, "type": "sleep_story"})
    for _ in range(COLLECTION_ROUNDS):
        for pattern, content_type, label, sizes in COLLECTIONS:
            parts = int(rng.choice(sizes))
            title = pattern.format(n=parts)
            specs.extend(_collection(rng, title, content_type, label, parts, "en"))
    created = send - rng.integers(9 * DAY, 3 * 365 * DAY, len(specs))
    for spec, when in zip(specs, created, strict=True):
        spec["created"] = int(when) + spec.get("offset", 0)
    new = _new_specs(rng, send)
    ids = rng.choice(np.arange(10_000, 100_000), len(specs) + len(new), replace=False)
    rows = [_row(spec, str(i), rng) for spec, i in zip(specs + new, ids, strict=True)]
    _number_collections(rows)
    return Catalog(rows=rows, new_ids=[r["ITEM_ID"] for r in rows[len(specs) :]]).finish(rng)


def _language(rng: np.random.Generator, content_type: str) -> str:
    if content_type in ("soundscape", "music", "kids"):
        return "en"
    return str(rng.choice(LANGUAGES, p=[0.72, 0.06, 0.05, 0.05, 0.06, 0.06]))


def _title(rng: np.random.Generator, content_type: str, language: str) -> str:
    first, second = LOCAL_TITLES.get(language) or EN_TITLES[content_type]
    joiner = "" if language in LOCAL_TITLES else " "
    return f"{rng.choice(first)}{joiner}{rng.choice(second)}"


def _standalone(rng: np.random.Generator, content_type: str, language: str) -> dict[str, Any]:
    return {
        "type": content_type,
        "language": language,
        "title": _title(rng, content_type, language),
        "narrator": str(rng.choice(NARRATORS[language])),
        "kids": content_type == "kids",
        "level": _level(rng, content_type),
    }


def _collection(
    rng: np.random.Generator, title: str, content_type: str, label: str, parts: int, language: str
) -> list[dict[str, Any]]:
    narrator = str(rng.choice(NARRATORS[language]))
    level = _level(rng, content_type)
    return [
        {
            "type": content_type,
            "language": language,
            "title": f"{title}: {label} {k}",
            "narrator": narrator,
            "kids": False,
            "level": level,
            "collection": title,
            "position": k,
            "offset": (k - 1) * DAY,
        }
        for k in range(1, parts + 1)
    ]


def _level(rng: np.random.Generator, content_type: str) -> str:
    if content_type in ("kids", "soundscape", "music", "sleep_story"):
        return "all"
    return str(
        rng.choice(("beginner", "intermediate", "advanced", "all"), p=(0.35, 0.33, 0.14, 0.18))
    )


def _new_specs(rng: np.random.Generator, send: int) -> list[dict[str, Any]]:
    """The edition's new items: a new collection, 2 per other language, 2 kids, the rest en."""
    title, content_type, label, parts = NEW_COLLECTION
    specs = _collection(rng, title, content_type, label, parts, "en")
    for language in LANGUAGES[1:]:
        specs += [
            _standalone(rng, str(rng.choice(("meditation", "sleep_story"))), language)
            for _ in range(2)
        ]
    specs += [_standalone(rng, "kids", "en") for _ in range(2)]
    for content_type, escaped in ESCAPE_TITLES:
        specs.append({**_standalone(rng, content_type, "en"), "title": escaped})
    english = int(rng.integers(26, 39)) - len(specs)
    types = ("meditation", "sleep_story", "soundscape", "music", "movement", "masterclass")
    specs += [_standalone(rng, str(rng.choice(types)), "en") for _ in range(english)]
    start = send - 7 * DAY
    for spec in specs:
        spec["created"] = int(rng.integers(start, send - 2 * DAY))
    return specs


def _row(spec: dict[str, Any], item_id: str, rng: np.random.Generator) -> dict[str, Any]:
    kind = "kids" if spec["kids"] else spec["type"]
    pool = TYPE_TOPICS[kind]
    topics = rng.choice(pool, size=int(rng.integers(1, min(3, len(pool)) + 1)), replace=False)
    minutes = int(rng.choice(MINUTES[kind]))
    return {
        "ITEM_ID": item_id,
        "CONTENT_TYPE": spec["type"],
        "TITLE": spec["title"],
        "NARRATOR": spec["narrator"],
        "DURATION_S": minutes * 60 + int(rng.integers(0, 60)),
        "LANGUAGE": spec["language"],
        "LEVEL": spec["level"],
        "IS_KIDS": "true" if spec["kids"] else "false",
        "TOPICS": "|".join(sorted(topics)),
        "COLLECTION_ID": spec.get("collection", ""),
        "COLLECTION_POSITION": spec.get("position", ""),
        "CREATION_TIMESTAMP": spec["created"],
        "IMAGE_URL": f"https://img.calm.example/items/{item_id}.jpg",
        "DEEP_LINK": f"calm://content/{item_id}",
    }


def _number_collections(rows: list[dict[str, Any]]) -> None:
    """Replace collection titles by ids ``col-001``...; equal titles are separate collections."""
    numbers: dict[tuple[str, int], str] = {}
    rounds: dict[str, int] = {}
    for row in rows:
        title = row["COLLECTION_ID"]
        if not title:
            continue
        if row["COLLECTION_POSITION"] == 1:
            rounds[title] = rounds.get(title, 0) + 1
        key = (title, rounds[title])
        row["COLLECTION_ID"] = numbers.setdefault(key, f"col-{len(numbers) + 1:03d}")


def write_catalog(catalog: Catalog, path: Path, quality_path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(catalog.rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(catalog.rows)
    with quality_path.open("w", encoding="utf-8", newline="") as out:
        out.write("item_id,quality\n")
        out.writelines(f"{i},{q:.4f}\n" for i, q in zip(catalog.ids, catalog.quality, strict=True))


# --------------------------------------------------------------------------- users


@dataclass(slots=True)
class Planted:
    """Global row indexes of the anomalies, chosen up front so chunks stay independent."""

    bad_email: np.ndarray
    empty_id: np.ndarray
    bad_number: np.ndarray
    missing: np.ndarray  # users left out of the Personalize output
    errors: np.ndarray  # users whose Personalize line carries an error

    @classmethod
    def choose(cls, rng: np.random.Generator, users: int) -> Planted:
        k = max(1, users // 1000) if users >= 20 else 0
        errors = max(users // 1000, 1 if users >= 100 else 0)  # 0.1%: under any sane limit
        missing = round(users * 0.01)
        picks = rng.permutation(users)
        cuts = np.cumsum([k, k, k, missing, errors])[:-1]
        return cls(*(np.sort(group) for group in np.split(picks[: cuts[-1] + errors], cuts)))


@dataclass(slots=True)
class UserChunk:
    """The attributes and hidden tastes of users ``start .. start+len``."""

    start: int
    ids: np.ndarray  # int64 user ids
    has_id: np.ndarray  # False where the row's id is planted empty
    language: np.ndarray  # index into LANGUAGES
    kids: np.ndarray
    last_active: np.ndarray  # epoch seconds, -1 = never
    type_taste: np.ndarray  # (n, types)
    topic_taste: np.ndarray  # (n, topics)
    open_propensity: np.ndarray
    completion_rate: np.ndarray
    table: pa.Table  # the users.csv rows


_ZONES = [
    (loc, lang, zone, country, weight * share)
    for loc, (weight, lang, zones) in LOCALES.items()
    for zone, country, share in zones
]


def make_users(
    rng: np.random.Generator, start: int, stop: int, planted: Planted, send: int
) -> UserChunk:
    n = stop - start
    index = np.arange(start, stop)
    ids = FIRST_USER_ID + index
    weights = np.array([z[4] for z in _ZONES])
    zone = rng.choice(len(_ZONES), n, p=weights / weights.sum())
    language = np.array([LANGUAGES.index(z[1]) for z in _ZONES])[zone]
    zones = np.array([z[2] for z in _ZONES], dtype=object)[zone]
    odd = rng.random(n)
    zones[odd < 0.005] = ""
    invalid = (odd >= 0.005) & (odd < 0.007)
    zones[invalid] = rng.choice(INVALID_ZONES, int(invalid.sum()))
    tenure = np.minimum(rng.exponential(420, n), 3650).astype(np.int64)
    seniority = np.log1p(tenure) / np.log(3650) + rng.normal(0, 0.15, n)
    level = np.where(
        seniority < 0.55, "beginner", np.where(seniority < 0.85, "intermediate", "advanced")
    )
    kids = rng.random(n) < 0.015
    status = rng.choice(SUBSCRIPTIONS, n, p=SUBSCRIPTION_WEIGHTS)
    opt_in = rng.random(n) < 0.85
    hour = rng.choice(HOURS, n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    no_hour = rng.random(n) < 0.10
    ago = np.minimum(rng.exponential(12 * DAY, n), 365 * DAY).astype(np.int64)
    last_active = np.where(rng.random(n) < 0.05, -1, send - DAY - ago)
    type_taste = rng.normal(0.0, 1.0, (n, len(CONTENT_TYPES))).astype(np.float32)
    topic_taste = rng.normal(0.0, 0.6, (n, len(TOPICS))).astype(np.float32)
    open_propensity = rng.beta(2, 5, n).astype(np.float32)
    completion_rate = rng.beta(2, 6, n).astype(np.float32)
    domain = rng.choice(("com", "net", "org"), n)

    uid = pc.cast(pa.array(ids), pa.string())
    email = pc.binary_join_element_wise("user", uid, "@example.", pa.array(domain), "")
    tenure_text = pc.cast(pa.array(tenure), pa.string())
    hour_text = pc.cast(pa.array(hour, mask=no_hour), pa.string())
    active = pa.array(last_active, type=pa.timestamp("s", tz="UTC"), mask=last_active < 0)
    table = pa.table(
        {
            "USER_ID": uid,
            "EMAIL": email,
            "LOCALE": pa.array([z[0] for z in _ZONES]).take(pa.array(zone)),
            "TIMEZONE": pa.array(zones, type=pa.string()),
            "PREFERRED_HOUR": hour_text,
            "COUNTRY": pa.array([z[3] for z in _ZONES]).take(pa.array(zone)),
            "TENURE_DAYS": tenure_text,
            "LEVEL": pa.array(level),
            "IS_KIDS_PROFILE": pa.array(kids),
            "SUBSCRIPTION_STATUS": pa.array(status),
            "EMAIL_OPT_IN": pa.array(opt_in),
            "LAST_ACTIVE_AT": pc.strftime(active, format="%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    table, has_id = _plant(table, index, planted)
    return UserChunk(
        start,
        ids,
        has_id,
        language,
        kids,
        last_active,
        type_taste,
        topic_taste,
        open_propensity,
        completion_rate,
        table,
    )


def _plant(table: pa.Table, index: np.ndarray, planted: Planted) -> tuple[pa.Table, np.ndarray]:
    """Overwrite the planted bad rows of this chunk (deterministic shapes, no randomness)."""
    start = int(index[0])

    def local(rows: np.ndarray) -> np.ndarray:
        return rows[(rows >= start) & (rows < start + len(index))] - start

    def replace(name: str, rows: np.ndarray, values: Sequence[str]) -> None:
        nonlocal table
        if len(rows):
            mask = np.zeros(len(index), bool)
            mask[rows] = True
            column = pc.replace_with_mask(table[name], pa.array(mask), pa.array(values))
            table = table.set_column(table.schema.get_field_index(name), name, column)

    bad_email, empty_id, bad_number = (
        local(planted.bad_email),
        local(planted.empty_id),
        local(planted.bad_number),
    )
    shapes = ("user{}@@example.com", "user{}.example.com", "user {}@example.org")
    ids = FIRST_USER_ID + start + bad_email
    replace("EMAIL", bad_email, [shapes[i % 3].format(u) for i, u in enumerate(ids)])
    replace("USER_ID", empty_id, [""] * len(empty_id))
    tenure_rows, hour_rows = bad_number[::2], bad_number[1::2]
    replace("TENURE_DAYS", tenure_rows, ["about a year"] * len(tenure_rows))
    replace("PREFERRED_HOUR", hour_rows, ["25"] * len(hour_rows))
    has_id = np.ones(len(index), bool)
    has_id[empty_id] = False
    return table, has_id


# --------------------------------------------------------------------------- scoring


LANGUAGE_TERM = 1.5  # an item in the user's own language; English is 0, any other -3
OTHER_LANGUAGE_TERM = -3.0
KIDS_TERM = (-1.0, 2.5)  # a kids item, for an adult / for a kids profile


def item_features(catalog: Catalog) -> np.ndarray:
    """(features x items) so that ``user_features @ item_features`` is the affinity."""
    n = len(catalog.rows)
    types = np.zeros((len(CONTENT_TYPES), n), np.float32)
    types[catalog.type_index, np.arange(n)] = 1.0
    language = np.full((len(LANGUAGES), n), OTHER_LANGUAGE_TERM, np.float32)
    language[:, catalog.language == 0] = 0.0
    language[catalog.language, np.arange(n)] = np.where(catalog.language == 0, 0.0, LANGUAGE_TERM)
    kids = np.outer(KIDS_TERM, catalog.is_kids).astype(np.float32)
    return np.vstack([types, catalog.topics.T, language, kids, catalog.quality[None, :]])


def _affinity(users: UserChunk, rows: slice, features: np.ndarray) -> np.ndarray:
    """The users' true affinity for every item (rows x items): tastes, quality, language, kids.

    type_<t> + sum(topic_<t>) + quality
    + (item in the user's language, if not English: +1.5 | English: 0 | other: -3)
    + (kids item: -1 for an adult, +2.5 for a kids profile).
    """
    n = rows.stop - rows.start
    language = np.zeros((n, len(LANGUAGES)), np.float32)
    language[np.arange(n), users.language[rows]] = 1.0
    kids = users.kids[rows]
    user = np.hstack(
        [
            users.type_taste[rows],
            users.topic_taste[rows],
            language,
            np.stack([~kids, kids], axis=1).astype(np.float32),
            np.ones((n, 1), np.float32),
        ]
    )
    return np.asarray(user @ features, dtype=np.float32)


def _softmax(score: np.ndarray) -> np.ndarray:
    top = score.max(axis=1, keepdims=True)
    weights: np.ndarray = np.exp(score - top)
    shares: np.ndarray = weights / weights.sum(axis=1, keepdims=True)
    return shares


def _top(probability: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indexes and scores of the k best items per row, best first."""
    if k < probability.shape[1]:
        part = np.argpartition(-probability, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(probability.shape[1]), probability.shape)
    values = np.take_along_axis(probability, part, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(values, order, axis=1)


# --------------------------------------------------------------------------- outputs


class Parts:
    """The Personalize part files: users are split evenly; the last part is gzip'd."""

    def __init__(self, folder: Path, users: int, parts: int, stack: ExitStack) -> None:
        self.folder, self.users, self.parts, self._stack = folder, users, parts, stack
        self.names: list[str] = []
        self._current = -1
        self._out: IO[bytes] | gzip.GzipFile | None = None

    def part_of(self, index: int) -> int:
        return min(self.parts - 1, index * self.parts // max(self.users, 1))

    def write(self, index: int, line: bytes) -> None:
        part = self.part_of(index)
        while part > self._current:
            self._open(self._current + 1)
        assert self._out is not None
        self._out.write(line)

    def close(self) -> None:
        while self._current < self.parts - 1:  # empty trailing parts still exist
            self._open(self._current + 1)
        if self._out is not None:
            self._out.close()

    def _open(self, part: int) -> None:
        if self._out is not None:
            self._out.close()
        gzipped = self.parts > 1 and part == self.parts - 1
        name = f"part-{part:05d}.json.out" + (".gz" if gzipped else "")
        raw = self._stack.enter_context((self.folder / name).open("wb"))
        self._out = (
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=1, mtime=0)
            if gzipped
            else raw
        )
        self.names.append(name)
        self._current = part


def _personalize_lines(
    users: UserChunk,
    rows: slice,
    probability: np.ndarray,
    catalog: Catalog,
    k: int,
    planted: Planted,
) -> Iterator[tuple[int, bytes]]:
    index, scores = _top(probability, k)
    ids = catalog.ids[index]
    numbers = np.arange(users.start + rows.start, users.start + rows.stop)
    errors = np.isin(numbers, planted.errors)
    skip = np.isin(numbers, planted.missing) | ~users.has_id[rows]
    user_ids = users.ids[rows].tolist()
    option = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
    for i, n in enumerate(numbers.tolist()):
        if skip[i]:
            continue
        user = {"userId": str(user_ids[i])}
        if errors[i]:
            message = ERROR_MESSAGES[n % len(ERROR_MESSAGES)]
            yield n, orjson.dumps({"input": user, "output": None, "error": message}, option=option)
            continue
        output = {"recommendedItems": ids[i].tolist(), "scores": scores[i]}
        yield n, orjson.dumps({"input": user, "output": output, "error": None}, option=option)


def _completions(
    rng: np.random.Generator,
    users: UserChunk,
    rows: slice,
    probability: np.ndarray,
    catalog: Catalog,
    send: int,
) -> pa.Table | None:
    """Completions over the 60 days before the send date, drawn from the true affinity."""
    active = (users.last_active[rows] >= 0) & users.has_id[rows]
    rate = 6.0 * users.completion_rate[rows] * active
    counts = rng.poisson(rate)
    who = np.repeat(np.arange(len(counts)), counts)
    if not len(who):
        return None
    cumulative = np.cumsum(probability, axis=1, dtype=np.float64)
    cumulative /= cumulative[:, -1:]
    offsets = np.arange(len(counts))[:, None]
    flat = (cumulative + offsets).ravel()
    draws = rng.random(len(who)) + who
    n_items = probability.shape[1]
    item = np.clip(np.searchsorted(flat, draws) - who * n_items, 0, n_items - 1)
    when = send - rng.integers(DAY, 60 * DAY, len(who))
    when = np.maximum(when, catalog.created[item] + 3600)
    order = np.lexsort((when, who))
    user_ids = users.ids[rows][who[order]]
    stamps = pa.array(when[order], type=pa.timestamp("s", tz="UTC"))
    return pa.table(
        {
            "user_id": pc.cast(pa.array(user_ids), pa.string()),
            "content_id": pa.array(catalog.ids[item[order]].tolist(), type=pa.string()),
            "completed_at": pc.strftime(stamps, format="%Y-%m-%dT%H:%M:%SZ"),
        }
    )


def _tastes_table(users: UserChunk) -> pa.Table:
    keep = users.has_id
    columns: dict[str, Any] = {
        "user_id": pc.cast(pa.array(users.ids[keep]), pa.string()),
        "open_propensity": users.open_propensity[keep],
        "completion_rate": users.completion_rate[keep],
        "language": pa.array(np.array(LANGUAGES)[users.language[keep]]),
        "kids_profile": users.kids[keep],
    }
    for i, name in enumerate(CONTENT_TYPES):
        columns[f"type_{name}"] = users.type_taste[keep, i]
    for i, name in enumerate(TOPICS):
        columns[f"topic_{name}"] = users.topic_taste[keep, i]
    return pa.table(columns)


def write_editorial(
    rng: np.random.Generator, catalog: Catalog, edition: str, path: Path
) -> dict[str, list[str]]:
    """8-10 new, non-kids items per locale: its own language first, then English."""
    by_id = {r["ITEM_ID"]: r for r in catalog.rows}
    candidates = [
        by_id[i]
        for i in catalog.new_ids
        if by_id[i]["IS_KIDS"] == "false" and by_id[i]["COLLECTION_POSITION"] in ("", 1)
    ]
    english = [r["ITEM_ID"] for r in candidates if r["LANGUAGE"] == "en"]
    escaped = [r["ITEM_ID"] for r in candidates if r["TITLE"] in dict(ESCAPE_TITLES).values()]
    picks: dict[str, list[str]] = {}
    lines = [
        f"# The editors' \"what's new\" picks for {edition}, in the order the email shows",
        "# them. Generated by `calm-mail data generate`.",
        f'edition = "{edition}"',
        "",
        "[locales]",
    ]
    for locale, (_, language, _) in LOCALES.items():
        own = [r["ITEM_ID"] for r in candidates if r["LANGUAGE"] == language != "en"]
        rest = [i for i in rng.permutation(english).tolist() if i not in escaped]
        chosen = (own + escaped + rest)[: int(rng.integers(8, 11))]
        picks[locale] = chosen
        lines.append(f'"{locale}" = [')
        lines += [f'    "{i}",  # {by_id[i]["TITLE"]}' for i in chosen]
        lines.append("]")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return picks


# --------------------------------------------------------------------------- the whole set


def generate(
    out: str | Path,
    *,
    users: int,
    seed: int = 2026,
    edition: str | None = None,
    recs: int = 500,
    parts: int = 4,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write the demo data set under `out` and return its manifest (also in manifest.json).

    Same arguments -> byte-identical files. `progress` gets one summary line per file.
    """
    if users < 1 or recs < 1 or parts < 1:
        raise ValueError("users, recs and parts must be at least 1")
    key = edition or Edition.upcoming().key
    send_date = Edition.parse(key).send_date
    send = int(datetime.combine(send_date, time(), UTC).timestamp())
    root = Path(out)
    for folder in (root / "personalize" / key, root / "editorial"):
        folder.mkdir(parents=True, exist_ok=True)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]
    catalog = build_catalog(rngs[0], send)
    write_catalog(catalog, root / "catalog.csv", root / "item_quality.csv")
    picks = write_editorial(rngs[1], catalog, key, root / "editorial" / f"{key}.toml")
    planted = Planted.choose(rngs[2], users)
    counts = _write_users_and_outputs(
        root, key, catalog, planted, rngs[3:], users, send, min(recs, len(catalog.rows)), parts
    )
    manifest = _manifest(root, key, seed, users, recs, parts, catalog, planted, picks, counts)
    (root / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    if progress:
        for entry in manifest["files"]:
            progress(f"{entry['path']}: {entry['summary']} ({_size(entry['bytes'])})")
        progress(f"manifest.json: seed {seed}, the counts above, under {root}")
    return manifest


def _write_users_and_outputs(
    root: Path,
    key: str,
    catalog: Catalog,
    planted: Planted,
    rngs: list[np.random.Generator],
    users: int,
    send: int,
    k: int,
    parts: int,
) -> dict[str, Any]:
    user_rng, score_rng, done_rng = rngs
    counts: dict[str, Any] = {"personalize_lines": 0, "completions": 0}
    csv_options = pacsv.WriteOptions(quoting_style="none")
    features = item_features(catalog)
    with ExitStack() as stack:
        part_files = Parts(root / "personalize" / key, users, parts, stack)
        users_csv: pacsv.CSVWriter | None = None
        done_csv: pacsv.CSVWriter | None = None
        tastes: pq.ParquetWriter | None = None
        for start in range(0, users, USER_CHUNK):
            chunk = make_users(user_rng, start, min(users, start + USER_CHUNK), planted, send)
            if users_csv is None:
                users_csv = stack.enter_context(
                    pacsv.CSVWriter(
                        root / "users.csv", chunk.table.schema, write_options=csv_options
                    )
                )
            users_csv.write_table(chunk.table)
            taste_table = _tastes_table(chunk)
            if tastes is None:
                tastes = stack.enter_context(
                    pq.ParquetWriter(root / "tastes.parquet", taste_table.schema)
                )
            tastes.write_table(taste_table)
            explore = np.where(
                catalog.created >= send - EXPLORATION_AGE_DAYS * DAY, EXPLORATION_BOOST, 0.0
            ).astype(np.float32)
            for first in range(0, len(chunk.ids), SCORE_CHUNK):
                rows = slice(first, min(len(chunk.ids), first + SCORE_CHUNK))
                affinity = _affinity(chunk, rows, features)
                noisy = score_rng.random(affinity.shape, dtype=np.float32)
                noisy -= 0.5
                noisy *= NOISE_WIDTH
                noisy += affinity
                noisy += explore
                for n, line in _personalize_lines(
                    chunk, rows, _softmax(noisy), catalog, k, planted
                ):
                    part_files.write(n, line)
                    counts["personalize_lines"] += 1
                done = _completions(done_rng, chunk, rows, _softmax(affinity), catalog, send)
                if done is not None:
                    if done_csv is None:
                        done_csv = stack.enter_context(
                            pacsv.CSVWriter(
                                root / "completions.csv", done.schema, write_options=csv_options
                            )
                        )
                    done_csv.write_table(done)
                    counts["completions"] += done.num_rows
        part_files.close()
        counts["parts"] = part_files.names
    if done_csv is None:
        (root / "completions.csv").write_text("user_id,content_id,completed_at\n")
    return counts


def _manifest(
    root: Path,
    key: str,
    seed: int,
    users: int,
    recs: int,
    parts: int,
    catalog: Catalog,
    planted: Planted,
    picks: dict[str, list[str]],
    counts: dict[str, Any],
) -> dict[str, Any]:
    new = len(catalog.new_ids)
    missing = len(planted.missing)
    errors = len(planted.errors)
    bad = {
        "bad_email": len(planted.bad_email),
        "empty_user_id": len(planted.empty_id),
        "bad_number": len(planted.bad_number),
    }
    folder = f"personalize/{key}"
    summaries = {
        "catalog.csv": f"{len(catalog.rows):,} items, {new} new in {key}",
        "users.csv": f"{users:,} users, {sum(bad.values()):,} bad rows planted "
        + ", ".join(f"{n} {reason}" for reason, n in bad.items()),
        "item_quality.csv": "hidden quality of every item",
        "tastes.parquet": f"hidden tastes of {users - bad['empty_user_id']:,} users",
        f"editorial/{key}.toml": f"{sum(map(len, picks.values()))} picks over {len(picks)} locales",
        "completions.csv": f"{counts['completions']:,} completions over 60 days",
    }
    for i, name in enumerate(counts["parts"]):
        summaries[f"{folder}/{name}"] = f"Personalize output part {i + 1} of {parts}"
    files = [
        {"path": p, "bytes": (root / p).stat().st_size, "summary": s} for p, s in summaries.items()
    ]
    return {
        "seed": seed,
        "users": users,
        "edition": key,
        "recs": min(recs, len(catalog.rows)),
        "parts": parts,
        "counts": {
            "items": len(catalog.rows),
            "new_items": new,
            "bad_rows_planted": bad,
            "error_lines": errors,
            "users_missing_from_output": missing,
            "personalize_lines": counts["personalize_lines"],
            "users_in_output": counts["personalize_lines"] - errors,
            "completions": counts["completions"],
        },
        "recommendations": f"{folder}/",
        "files": files,
    }


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"
