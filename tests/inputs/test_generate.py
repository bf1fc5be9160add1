"""The demo data generator: paths, determinism, realism, and its planted anomalies."""

from __future__ import annotations

import gzip
import hashlib
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow.parquet as pq
from click.testing import CliRunner

from calm_mail.cli import main
from calm_mail.demo.data import CONTENT_TYPES, LOCALES, generate
from calm_mail.edition import Edition
from calm_mail.inputs import (
    check_recommendation_quality,
    iter_audience,
    iter_completions,
    iter_recommendations,
    read_catalog,
    read_editorial,
)
from calm_mail.records import SkipCounter

SEND = datetime(2026, 11, 28, tzinfo=UTC)  # 2026-W48's Saturday


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_bytes(demo: Path, tmp_path: Path) -> None:
    generate(tmp_path / "a", users=300, seed=7, edition="2026-W48", recs=40, parts=3)
    generate(tmp_path / "b", users=300, seed=8, edition="2026-W48", recs=40, parts=3)
    same, other = digests(tmp_path / "a"), digests(tmp_path / "b")
    assert same == digests(demo)
    assert other.keys() == same.keys()
    assert other["catalog.csv"] != same["catalog.csv"]


def test_files_are_where_the_shipped_campaign_looks(demo: Path) -> None:
    assert sorted(digests(demo)) == [
        "catalog.csv",
        "completions.csv",
        "editorial/2026-W48.toml",
        "item_quality.csv",
        "manifest.json",
        "personalize/2026-W48/part-00000.json.out",
        "personalize/2026-W48/part-00001.json.out",
        "personalize/2026-W48/part-00002.json.out.gz",
        "tastes.parquet",
        "users.csv",
    ]
    gzip.decompress((demo / "personalize/2026-W48/part-00002.json.out.gz").read_bytes())


def test_catalog_is_realistic(demo: Path) -> None:
    items = read_catalog(str(demo / "catalog.csv"))
    assert 1900 <= len(items) <= 2100
    assert {i.content_type for i in items.values()} == set(CONTENT_TYPES)
    assert {i.language for i in items.values()} == {"en", "es", "fr", "de", "pt", "ja"}
    assert {i.level for i in items.values()} == {"beginner", "intermediate", "advanced", "all"}
    new = [i for i in items.values() if SEND - timedelta(days=7) <= i.created_at < SEND]
    assert 20 <= len(new) <= 40
    assert all(i.created_at < SEND - timedelta(days=8) for i in items.values() if i not in new)
    titles = " ".join(i.title for i in new)
    assert "&" in titles and '"' in titles and "<script>" in titles
    collections: dict[str, list[int]] = {}
    for item in items.values():
        if item.collection_id:
            collections.setdefault(item.collection_id, []).append(item.collection_position or 0)
    assert len(collections) >= 20
    assert all(sorted(p) == list(range(1, len(p) + 1)) for p in collections.values())
    assert any(i.is_kids and i.content_type == "sleep_story" for i in items.values())
    some = next(iter(items.values()))
    assert some.image_url == f"https://img.calm.example/items/{some.item_id}.jpg"
    assert some.deep_link == f"calm://content/{some.item_id}"


def test_planted_anomalies_are_what_the_readers_count(demo: Path) -> None:
    manifest = orjson.loads((demo / "manifest.json").read_bytes())
    counts = manifest["counts"]
    assert manifest["seed"] == 7 and manifest["edition"] == "2026-W48"
    skips = SkipCounter()
    users = list(iter_audience(str(demo / "users.csv"), skips=skips))
    planted = counts["bad_rows_planted"]
    assert skips.counts["empty_user_id"] == planted["empty_user_id"] > 0
    assert skips.skipped == planted["empty_user_id"] + planted["bad_number"]
    assert len(users) == 300 - skips.skipped
    assert (
        sum("@" not in u.email or " " in u.email or "@@" in u.email for u in users)
        == planted["bad_email"]
        > 0
    )
    assert all(
        u.email.split("@")[-1] in {"example.com", "example.net", "example.org"}
        or "@@" in u.email
        or "@" not in u.email
        for u in users
    )
    assert {u.locale for u in users} <= set(LOCALES)
    catalog = read_catalog(str(demo / "catalog.csv"))
    recs_skips = SkipCounter()
    recs = list(
        iter_recommendations(
            str(demo / "personalize/2026-W48"), skips=recs_skips, known_items=catalog
        )
    )
    assert recs_skips.as_dict()["skipped"] == {"error_line": counts["error_lines"]}
    assert len(recs) == counts["users_in_output"]
    assert counts["users_missing_from_output"] == 3  # 1% of 300
    assert all(len(r.item_ids) == 40 for r in recs)
    lines = (demo / "personalize/2026-W48/part-00000.json.out").read_bytes().splitlines()
    scores = [(orjson.loads(raw).get("output") or {}).get("scores") for raw in lines]
    assert all(s is None or s == sorted(s, reverse=True) for s in scores)
    assert sum(s is not None for s in scores) > len(scores) // 2  # best first, as Personalize
    check_recommendation_quality(
        recs_skips,
        covered_users=len(recs),
        audience_size=len(users),
        max_bad_share=0.01,
        min_coverage=0.5,
        source="demo",
    )


def test_editorial_and_completions_read_back(demo: Path) -> None:
    catalog = read_catalog(str(demo / "catalog.csv"))
    picks = read_editorial(str(demo / "editorial/2026-W48.toml"), "2026-W48", known_items=catalog)
    assert set(picks.by_locale) == set(LOCALES)
    for locale, ids in picks.by_locale.items():
        assert 8 <= len(ids) <= 10
        items = [catalog[i] for i in ids]
        assert all(SEND - timedelta(days=7) <= i.created_at < SEND and not i.is_kids for i in items)
        language = LOCALES[locale][1]
        assert items[0].language == language
    skips = SkipCounter()
    done = list(iter_completions(str(demo / "completions.csv"), skips=skips))
    assert done and skips.skipped == 0
    assert all(SEND - timedelta(days=61) < c.completed_at < SEND for c in done)
    assert all(c.completed_at > catalog[c.item_id].created_at for c in done)


def test_tastes_cover_every_user_with_an_id(demo: Path) -> None:
    tastes = pq.read_table(demo / "tastes.parquet")
    names = tastes.column_names
    assert names[:5] == [
        "user_id",
        "open_propensity",
        "completion_rate",
        "language",
        "kids_profile",
    ]
    assert {f"type_{t}" for t in CONTENT_TYPES} <= set(names)
    manifest = orjson.loads((demo / "manifest.json").read_bytes())
    assert tastes.num_rows == 300 - manifest["counts"]["bad_rows_planted"]["empty_user_id"]


def test_personalized_ranking_follows_the_hidden_tastes(demo: Path) -> None:
    tastes = pq.read_table(demo / "tastes.parquet").to_pylist()
    catalog = read_catalog(str(demo / "catalog.csv"))
    favourite = {}
    for row in tastes:
        weights = {t: row[f"type_{t}"] for t in CONTENT_TYPES if t != "kids"}
        favourite[row["user_id"]] = max(weights, key=weights.__getitem__)
    recs = iter_recommendations(str(demo / "personalize/2026-W48"), skips=SkipCounter())
    hits = total = 0
    for rec in recs:
        top = [catalog[i].content_type for i in rec.item_ids[:10]]
        hits += top.count(favourite[rec.user_id])
        total += len(top)
    assert hits / total > 0.3  # six adult types: chance would be about 1/6


def test_command_line(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(
        main,
        [
            "data",
            "generate",
            "--users",
            "30",
            "--out",
            str(out),
            "--recs",
            "5",
            "--parts",
            "1",
            "--seed",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    edition = Edition.upcoming().key
    assert f"personalize/{edition}/part-00000.json.out:" in result.output
    assert len(result.output.strip().splitlines()) == 8
    assert tomllib.loads((out / f"editorial/{edition}.toml").read_text())["edition"] == edition
    bad = runner.invoke(
        main, ["data", "generate", "--users", "3", "--out", str(out), "--edition", "2026-W99"]
    )
    assert bad.exit_code == 2 and "no such ISO week" in bad.output
