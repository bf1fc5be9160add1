"""The rules engine: properties that hold for any input, each built-in step, and file errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calm_mail.campaign import Campaign, Content
from calm_mail.errors import RuleError
from calm_mail.plan.rules import (
    STEPS,
    BoundRules,
    EditionData,
    RuleSet,
    UserView,
    check_rules,
    load_campaign_rules,
    load_rules,
    parse_steps,
)
from calm_mail.records import Item, TraceStep, User

from .conftest import EDITION, OLD, REPO, campaign_in, item, user

SHIPPED = load_rules(REPO / "rules" / "weekly_winddown.toml")
TYPES = ["meditation", "sleep_story", "soundscape", "music", "masterclass", "movement", "kids"]


@st.composite
def catalogs(draw: st.DrawFn) -> dict[str, Item]:
    n = draw(st.integers(min_value=1, max_value=40))
    items = {}
    for k in range(n):
        content_type = draw(st.sampled_from(TYPES))
        collection = draw(st.sampled_from([None, None, "c1", "c2", "c3"]))
        items[f"i{k}"] = item(
            f"i{k}",
            content_type=content_type,
            language=draw(st.sampled_from(["en", "es", "fr", ""])),
            level=draw(st.sampled_from(["beginner", "intermediate", "advanced", "all"])),
            is_kids=content_type == "kids" or draw(st.booleans()),
            topics=draw(
                st.lists(
                    st.sampled_from(["sleep", "focus", "rain", "anxiety"]), max_size=2, unique=True
                )
            ),
            collection=collection,
            position=k if collection else None,
            created=draw(st.sampled_from([OLD, OLD.replace(year=2026, month=11, day=25)])),
            minutes=draw(st.integers(min_value=1, max_value=90)),
        )
    return items


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, Item], User, list[str], frozenset[str]]:
    catalog = draw(catalogs())
    ids = sorted(catalog)
    candidates = draw(st.lists(st.sampled_from(ids), max_size=60))
    completed = frozenset(draw(st.lists(st.sampled_from(ids), max_size=10)))
    person = user(
        "u1",
        locale=draw(st.sampled_from(["en-US", "es-ES", "fr-FR"])),
        level=draw(st.sampled_from(["beginner", "intermediate", "advanced"])),
        tenure_days=draw(st.integers(min_value=0, max_value=1000)),
    )
    return catalog, person, candidates, completed


def apply(
    rules: RuleSet,
    catalog: dict[str, Item],
    person: User,
    candidates: list[str],
    completed: frozenset[str],
    trace: list[TraceStep] | None = None,
) -> list[str]:
    data = EditionData.build(EDITION.key, EDITION.send_date, catalog)
    bound = rules.bind(data, Content())
    view = UserView.of(person, completed, EDITION.key, trace=trace is not None)
    return bound.apply(candidates, view, trace)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_shipped_rules_properties(
    case: tuple[dict[str, Item], User, list[str], frozenset[str]],
) -> None:
    catalog, person, candidates, completed = case
    out = apply(SHIPPED, catalog, person, candidates, completed)
    assert not any(catalog[i].is_kids or catalog[i].content_type == "kids" for i in out)
    assert not set(out) & completed
    assert len(out) == len(set(out))
    collections = [catalog[i].collection_id for i in out if catalog[i].collection_id]
    assert len(collections) == len(set(collections))
    assert len(out) <= 6
    assert out == apply(SHIPPED, catalog, person, list(candidates), completed)
    traced: list[TraceStep] = []
    assert out == apply(SHIPPED, catalog, person, candidates, completed, traced)
    assert [t.step for t in traced][: len(SHIPPED.steps)] == [s.name for s in SHIPPED.steps]


@settings(max_examples=100, deadline=None)
@given(cases())
def test_kids_guard_holds_without_the_kids_step(
    case: tuple[dict[str, Item], User, list[str], frozenset[str]],
) -> None:
    catalog, person, candidates, completed = case
    bare = RuleSet(path="bare.toml", steps=())
    out = apply(bare, catalog, person, candidates, completed)
    assert not any(catalog[i].is_kids for i in out)
    assert len(out) == len(set(out)) <= Content().max_items


def test_each_step_drops_what_it_should() -> None:
    catalog = {
        i.item_id: i
        for i in [
            item("new"),
            item("old", created=OLD),
            item("kid", is_kids=True, content_type="kids"),
            item("done"),
            item("es", language="es"),
            item("beg", level="beginner"),
            item("rain", content_type="soundscape", minutes=60),
            *(
                item(f"p{k}", collection="c", position=k, content_type="sleep_story")
                for k in (1, 2, 3)
            ),
        ]
    }
    trace: list[TraceStep] = []
    expert = user("u1", level="advanced")
    out = apply(
        SHIPPED,
        catalog,
        expert,
        ["old", "kid", "done", "es", "beg", "rain", "p2", "p3", "new"],
        frozenset({"done", "p1"}),
        trace,
    )
    why = {i: (t.step, reason) for t in trace for i, reason in t.dropped}
    assert why["old"][0] == "only_new" and why["kid"][0] == "exclude_kids_for_adults"
    assert why["done"][0] == "exclude_completed" and why["es"][0] == "locale"
    assert why["beg"] == ("level_fit", "beginner course for an experienced meditator")
    assert why["p3"][0] == "roll_up_collections"  # p2 is the next unfinished part
    assert sorted(out) == ["new", "p2", "rain"]
    beginner = apply(
        SHIPPED,
        catalog,
        user("u2", level="beginner", tenure_days=10),
        ["rain", "beg", "p3", "new"],
        frozenset(),
        None,
    )
    assert "rain" not in beginner and "beg" in beginner
    assert "p1" in beginner and "p3" not in beginner  # not started: the first part


def test_locale_puts_english_after_the_users_language() -> None:
    catalog = {
        i.item_id: i
        for i in [
            item("en1"),
            item("es1", language="es"),
            item("fr1", language="fr"),
            item("any", language=""),
        ]
    }
    rules = RuleSet(path="r", steps=tuple(s for s in SHIPPED.steps if s.name == "locale"))
    out = apply(
        rules, catalog, user("u1", locale="es-ES"), ["en1", "fr1", "es1", "any"], frozenset()
    )
    assert out == ["es1", "any", "en1"]


def test_diversify_is_seeded_by_edition_and_user() -> None:
    catalog = {
        f"m{k}": item(f"m{k}", topics=(f"t{k}",), content_type=TYPES[k % 6]) for k in range(12)
    }
    rules = RuleSet(path="r", steps=tuple(s for s in SHIPPED.steps if s.name == "diversify"))
    ids = sorted(catalog)
    orders = {tuple(apply(rules, catalog, user(f"u{k}"), ids, frozenset())) for k in range(20)}
    assert len(orders) > 1  # users see different shuffles...
    again = apply(rules, catalog, user("u3"), ids, frozenset())
    assert again == apply(rules, catalog, user("u3"), ids, frozenset())  # ...reproducibly
    for order in orders:  # and the shuffle stays within tiers of 3
        assert all(ids.index(i) // 3 == pos // 3 for pos, i in enumerate(order))


STEP_POOL: list[dict[str, object]] = [
    {"name": "only_new", "days": 7},
    {"name": "only_new", "days": 366},
    {"name": "only_types", "types": ["meditation", "sleep_story", "kids", "music"]},
    {"name": "exclude_types", "types": ["soundscape"]},
    {"name": "exclude_kids_for_adults"},
    {"name": "exclude_completed"},
    {"name": "locale", "allow_english_fallback": True},
    {"name": "locale", "allow_english_fallback": False},
    {"name": "level_fit"},
    {"name": "level_fit", "experienced_levels": ["intermediate"], "max_unguided_minutes": 5},
    {"name": "roll_up_collections"},
    {"name": "diversify", "tier_size": 2, "max_per_type": 1},
    {"name": "take", "max": 4, "min": 1},
]


@st.composite
def rule_sets(draw: st.DrawFn) -> RuleSet:
    raw = draw(st.lists(st.sampled_from(STEP_POOL), min_size=1, max_size=9))
    specs, problems = parse_steps("drawn.toml", {"steps": raw})
    assert not problems
    return RuleSet(path="drawn.toml", steps=tuple(specs))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_sets(), cases(), st.lists(cases(), max_size=3))
def test_a_trace_never_changes_what_the_rules_keep_or_count(
    rules: RuleSet,
    case: tuple[dict[str, Item], User, list[str], frozenset[str]],
    more: list[tuple[dict[str, Item], User, list[str], frozenset[str]]],
) -> None:
    # Same items, same order, same drop counts per step, traced or not, for several users in
    # a row on one bound rule set; and the trace names every item dropped, once.
    catalog = case[0]
    data = EditionData.build(EDITION.key, EDITION.send_date, catalog)
    plain, traced = rules.bind(data, Content()), rules.bind(data, Content())
    ids = sorted(catalog)
    users = [case[1:]] + [(p, [i for i in c if i in catalog], d & set(ids)) for _, p, c, d in more]
    for person, candidates, completed in users:
        quick = plain.apply(candidates, UserView.of(person, completed, EDITION.key))
        trace: list[TraceStep] = []
        full = traced.apply(
            candidates, UserView.of(person, completed, EDITION.key, trace=True), trace
        )
        assert quick == full
        assert plain.dropped_by_step == traced.dropped_by_step
        assert plain.guard_hits == traced.guard_hits
        assert [t.step for t in trace if t.step != BoundRules.GUARD] == [n for n, _ in plain.steps]


def test_without_only_new_first_the_catalog_check_comes_first() -> None:
    catalog = {"new": item("new"), "old": item("old", created=OLD)}
    data = EditionData.build(EDITION.key, EDITION.send_date, catalog)
    assert SHIPPED.bind(data, Content()).steps[0][0] == "only_new"
    no_new = RuleSet(path="r", steps=tuple(s for s in SHIPPED.steps if s.name != "only_new"))
    first = no_new.bind(data, Content())
    assert first.steps[0][0] == "in_catalog"
    trace: list[TraceStep] = []
    reader = user("u1")
    first.apply(["gone", "old", "new"], UserView.of(reader, frozenset(), "e", trace=True), trace)
    assert first.dropped_by_step["in_catalog"] == 1
    assert trace[0].dropped == (("gone", "not in the catalog"),)


def test_locale_keeps_english_after_the_users_language() -> None:
    catalog = {
        i.item_id: i
        for i in [
            item("en1"),
            item("es1", language="es"),
            item("fr1", language="fr"),
            item("kid", language="es", is_kids=True),
            item("any", language=""),
            item("es2", language="es"),
        ]
    }
    rules = RuleSet(
        path="r",
        steps=tuple(s for s in SHIPPED.steps if s.name in ("exclude_kids_for_adults", "locale")),
    )
    data = EditionData.build(EDITION.key, EDITION.send_date, catalog)
    bound = rules.bind(data, Content())
    reader = user("u1", locale="es-ES")
    out = bound.apply(
        ["en1", "kid", "fr1", "es1", "any", "es2"], UserView.of(reader, frozenset(), "e")
    )
    assert out == ["es1", "any", "es2", "en1"]
    assert bound.dropped_by_step == {"exclude_kids_for_adults": 1, "locale": 1}
    again = rules.bind(data, Content())
    again.apply(["en1", "fr1"], UserView.of(reader, frozenset(), "e"))  # only locale drops
    again.apply(["kid", "es1"], UserView.of(reader, frozenset(), "e"))
    assert list(again.dropped_by_step) == ["locale", "exclude_kids_for_adults"]
    assert list(again.drops_in_order()) == ["exclude_kids_for_adults", "locale"]  # the file's


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return path


def test_unknown_step_names_file_index_and_known_steps(tmp_path: Path) -> None:
    path = write(tmp_path, '[[steps]]\nname = "only_new"\n\n[[steps]]\nname = "only_nwe"\n')
    with pytest.raises(RuleError) as err:
        load_rules(path)
    message = str(err.value)
    assert f"{path}: step 2: name: unknown step 'only_nwe'" in message
    assert all(name in message for name in STEPS)


@pytest.mark.parametrize(
    ("step", "fragment"),
    [
        ('name = "only_new"\ndays = 0', "step 1 (only_new): days: Input should be greater"),
        ('name = "only_new"\nday = 7', "step 1 (only_new): day: unknown parameter"),
        ('name = "take"\nmax = 2\nmin = 5', "step 1 (take): min: min (5) exceeds max (2)"),
        (
            'name = "only_types"\ntypes = ["podcast"]',
            "step 1 (only_types): types: unknown content type(s) ['podcast']",
        ),
        ('name = "diversify"\nmax_per_type = "two"', "step 1 (diversify): max_per_type:"),
        ("days = 7", "step 1: name: every step needs a name"),
    ],
)
def test_bad_parameters_name_file_step_and_key(tmp_path: Path, step: str, fragment: str) -> None:
    path = write(tmp_path, f"[[steps]]\n{step}\n")
    with pytest.raises(RuleError, match=None) as err:
        load_rules(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, 'colour = 1\n[[steps]]\nname = "x"\n[[steps]]\nname = "take"\nmax = 0\n')
    with pytest.raises(RuleError) as err:
        load_rules(path)
    assert len(err.value.problems) == 3


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="not valid TOML"):
        load_rules(write(tmp_path, "[[steps]\n"))
    with pytest.raises(RuleError, match="cannot read"):
        load_rules(tmp_path / "missing.toml")
    with pytest.raises(RuleError, match="no \\[\\[steps\\]\\]"):
        load_rules(write(tmp_path, 'description = "empty"\n'))


def test_rules_that_contradict_the_campaign(tmp_path: Path) -> None:
    text = (
        '[[steps]]\nname = "only_types"\ntypes = ["music"]\n'
        '[[steps]]\nname = "exclude_types"\ntypes = ["music"]\n'
        '[[steps]]\nname = "take"\nmax = 8\nmin = 2\n'
    )
    camp = campaign_in(tmp_path, rules=text)
    problems = check_rules(camp)
    assert any(
        "step 3 (take): max: 8 exceeds the campaign's content.max_items (6)" in p for p in problems
    )
    assert any(
        "step 3 (take): min: 2 is below the campaign's content.min_items (3)" in p for p in problems
    )
    assert any("leave no content type" in p for p in problems)
    with pytest.raises(RuleError):
        load_campaign_rules(camp)


def test_shipped_rules_fit_the_shipped_campaigns(campaign: Campaign, tmp_path: Path) -> None:
    assert check_rules(campaign) == []
    assert check_rules(campaign_in(tmp_path / "abc", name="winddown_abc")) == []
    assert SHIPPED.steps[0].name == "only_new"
