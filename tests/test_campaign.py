"""The campaign loader: shipped campaigns load; every mistake is reported at once, by key."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calm_mail.campaign import (
    Campaign,
    campaign_path,
    list_campaigns,
    load_campaign,
    parse_campaign,
    read_toml,
)
from calm_mail.errors import ConfigError, UsageError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.stem for p in (REPO / "campaigns").glob("*.toml"))
WINDDOWN = REPO / "campaigns" / "weekly_winddown.toml"
FAKE_PATH = Path("/campaigns/fake.toml")


def shipped_data() -> dict[str, Any]:
    return read_toml(WINDDOWN)


def problems_of(data: dict[str, Any], path: Path = FAKE_PATH) -> list[str]:
    """The problem lines of loading `data`; fails the test when it loads."""
    with pytest.raises(ConfigError) as info:
        parse_campaign(data, path=path, root=REPO)
    return info.value.problems


# ----------------------------------------------------------------------------- shipped


def test_there_are_shipped_campaigns() -> None:
    assert "weekly_winddown" in SHIPPED
    assert list_campaigns(REPO) == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_campaign_loads(name: str) -> None:
    campaign = load_campaign(name, REPO)
    assert isinstance(campaign, Campaign)
    assert campaign.name == name  # the file name and [campaign] name agree
    assert campaign.path == REPO / "campaigns" / f"{name}.toml"
    assert campaign.root == REPO
    assert abs(sum(campaign.experiment.weights.values()) - 1) < 1e-9
    assert campaign.experiment.control_arm in campaign.experiment.weights
    assert campaign.rules_path.is_file()
    assert campaign.template_dir.is_dir()


def test_campaign_by_path(tmp_path: Path) -> None:
    copied = tmp_path / "elsewhere.toml"
    shutil.copy(WINDDOWN, copied)
    assert load_campaign(str(copied), REPO).path == copied


def test_unknown_campaign_lists_the_known_ones() -> None:
    with pytest.raises(UsageError) as info:
        load_campaign("weekly_windown", REPO)
    message = str(info.value)
    assert "weekly_windown" in message
    assert all(name in message for name in SHIPPED)


def test_missing_campaign_file_by_path(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"nope\.toml"):
        campaign_path(str(tmp_path / "nope.toml"), REPO)


def test_no_campaigns_folder_says_so(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="There are none"):
        load_campaign("weekly_winddown", tmp_path)


# ----------------------------------------------------------------------------- one mistake each


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[part]
        del node[last]

    return mutate


def _duplicate_arm(data: dict[str, Any]) -> None:
    data["experiment"]["arms"][1]["name"] = data["experiment"]["arms"][0]["name"]


MISTAKES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "missing section": (_delete("inputs"), "inputs: required, but missing"),
    "missing key": (_delete("sender.from_email"), "sender.from_email: required, but missing"),
    "unknown key": (_set("campaign.tempalte", "x"), "campaign.tempalte: unknown key (a typo?)"),
    "unknown section": (_set("sendr", {}), "sendr: unknown key (a typo?)"),
    "loader's key in the file": (_set("root", "/"), "root: unknown key (a typo?)"),
    "wrong type": (_set("audience.locales", "en-US"), "audience.locales: must be an array"),
    "wrong type in a list": (
        _set("audience.locales", ["en-US", 3]),
        "audience.locales[1]: must be a string (got an integer)",
    ),
    "section not a table": (_set("content", 3), "content: must be a table"),
    "negative weight": (
        _set("experiment.arms.1.weight", -5),
        "experiment.arms[1].weight: must be greater than 0",
    ),
    "infinite weight": (
        _set("experiment.arms.0.weight", float("inf")),
        "experiment.arms[0].weight",
    ),
    "duplicate arm names": (_duplicate_arm, "experiment.arms: arm names repeat: control"),
    "no arms": (_set("experiment.arms", []), "experiment.arms: needs at least one"),
    "unknown control": (_set("experiment.control", "ctrl"), "experiment.control: 'ctrl' is not"),
    "min_items > max_items": (
        _set("content.min_items", 9),
        "content.min_items: 9 exceeds max_items (6)",
    ),
    "max_items too large": (_set("content.max_items", 50), "content.max_items: must be less"),
    "invalid time zone": (
        _set("schedule.fallback_timezone", "Mars/Olympus"),
        "schedule.fallback_timezone: unknown time zone 'Mars/Olympus'",
    ),
    "time zone that is a folder": (
        _set("schedule.fallback_timezone", "America"),
        "schedule.fallback_timezone: unknown time zone 'America'",
    ),
    "bad from_email": (_set("sender.from_email", "calm"), "sender.from_email: not an email"),
    "non-https unsubscribe_url": (
        _set("sender.unsubscribe_url", "http://calm.example/u/{token}"),
        "sender.unsubscribe_url: must start with https://",
    ),
    "11 categories": (
        _set("sender.categories", [f"c{i}" for i in range(11)]),
        "sender.categories: at most 10 unique categories",
    ),
    "unknown content source": (
        _set("experiment.arms.1.source", "telepathy"),
        "experiment.arms[1].source: must be 'personalize', 'editorial', 'popular' or 'holdout'",
    ),
    "bad arm name": (_set("experiment.arms.0.name", "Control Arm"), "experiment.arms[0].name"),
    "bad weekday": (_set("schedule.weekday", "friday"), "schedule.weekday: must be"),
    "bad local_time": (_set("schedule.local_time", "8am"), "schedule.local_time:"),
    "no locales": (_set("audience.locales", []), "audience.locales: needs at least 1 item(s)"),
    "empty experiment name": (_set("experiment.name", ""), "experiment.name: needs at least 1"),
    "unsubscribe_url without token": (
        _set("sender.unsubscribe_url", "https://calm.example/u"),
        "sender.unsubscribe_url: must contain {token}",
    ),
    "empty input path": (_set("inputs.catalog", ""), "inputs.catalog: needs at least 1 character"),
    "unknown placeholder": (
        _set("inputs.history", "{root}/{week}/x.csv"),
        "inputs.history: unknown placeholder {week}; use {root} or {edition}",
    ),
    "share above 1": (_set("inputs.max_bad_share", 2), "inputs.max_bad_share: must be less"),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_each_mistake_names_its_key(mistake: str) -> None:
    mutate, expected = MISTAKES[mistake]
    data = shipped_data()
    mutate(data)
    problems = problems_of(data)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{FAKE_PATH}: {expected}"), problems


# Mistakes that touch different keys, so all of them can be made in one file.
COMPATIBLE = [
    "missing section",
    "unknown key",
    "unknown section",
    "loader's key in the file",
    "wrong type",
    "negative weight",
    "duplicate arm names",
    "unknown content source",
    "min_items > max_items",
    "invalid time zone",
    "bad from_email",
    "non-https unsubscribe_url",
    "11 categories",
    "bad weekday",
]


def test_every_mistake_at_once_in_one_error() -> None:
    data = shipped_data()
    for name in COMPATIBLE:
        MISTAKES[name][0](data)
    problems = problems_of(data)
    assert len(problems) == len(COMPATIBLE), problems
    for name in COMPATIBLE:
        expected = f"{FAKE_PATH}: {MISTAKES[name][1]}"
        assert any(line.startswith(expected) for line in problems), (name, problems)


SEVERAL_MISTAKES = """\
[campaign]
name = "bad"
title = "Bad"
template = "weekly_winddown"
rules = "weekly_winddown"
tempalte = "oops"

[audience]
locales = "en-US"

[experiment]
name = "e"
seed = "s"

[[experiment.arms]]
name = "a"
weight = -1
source = "editorial"

[[experiment.arms]]
name = "a"
weight = 1
source = "telepathy"

[content]
min_items = 8
max_items = 4

[sender]
from_email = "nope"
from_name = "Calm"
categories = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"]
postal_address = "Calm Example Inc., 100 Quiet Lane"
unsubscribe_url = "http://calm.example/u/{token}"

[schedule]
fallback_timezone = "Mars/Olympus"
"""


def test_a_file_with_several_mistakes_lists_them_all(tmp_path: Path) -> None:
    (tmp_path / "campaigns").mkdir()
    path = tmp_path / "campaigns" / "bad.toml"
    path.write_text(SEVERAL_MISTAKES)
    with pytest.raises(ConfigError) as info:
        load_campaign("bad", tmp_path)
    expected = [
        "campaign.tempalte: unknown key",
        "inputs: required, but missing",
        "audience.locales: must be an array (got a string)",
        "experiment.arms[0].weight: must be greater than 0",
        "experiment.arms[1].source: must be",
        "experiment.arms: arm names repeat: a",
        "content.min_items: 8 exceeds max_items (4)",
        "sender.from_email: not an email address",
        "sender.categories: at most 10",
        "sender.unsubscribe_url: must start with https://",
        "schedule.fallback_timezone: unknown time zone",
    ]
    problems = info.value.problems
    assert len(problems) == len(expected), problems
    for line, want in zip(problems, expected, strict=True):
        assert line.startswith(f"{path}: {want}"), (line, want)
    assert str(info.value) == "\n".join(problems)


# ----------------------------------------------------------------------------- the file itself


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    text = WINDDOWN.read_text().replace('title = "Weekly Winddown"', 'title = "Weekly Winddown')
    path.write_text(text)
    line = text.splitlines().index('title = "Weekly Winddown') + 1
    with pytest.raises(ConfigError) as info:
        load_campaign(str(path), REPO)
    assert str(info.value).startswith(f"{path}: not valid TOML")
    assert f"line {line}" in str(info.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "campaign: required, but missing"),
        (b"\xff\xfe\x00junk", "not UTF-8 text"),
        (b"a = " + b"[" * 5000 + b"]" * 5000, "nested too deep"),
        (b"a = 1\na = 2\n", "not valid TOML"),
    ],
    ids=["empty", "not utf-8", "deep nesting", "duplicate key"],
)
def test_unusable_files(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "x.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_campaign(str(path), REPO)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_a_directory_as_campaign_file(tmp_path: Path) -> None:
    (tmp_path / "campaigns" / "dir.toml").mkdir(parents=True)
    with pytest.raises(ConfigError, match="cannot read"):
        load_campaign("dir", tmp_path)


# ----------------------------------------------------------------------------- junk


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.datetimes(timezones=st.just(UTC))
    | st.dates()
    | st.times()
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def _tables(node: Any, found: list[Any]) -> list[Any]:
    """Every table and array inside `node` (itself included), to pick a mutation spot."""
    if isinstance(node, dict | list):
        found.append(node)
        for child in node.values() if isinstance(node, dict) else node:
            _tables(child, found)
    return found


@st.composite
def mutated_campaigns(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(SHIPPED_DATA)
    for _ in range(draw(st.integers(1, 4))):
        node = draw(st.sampled_from(_tables(data, [])))
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        action = draw(st.sampled_from(["delete", "replace", "add"]))
        if action == "add" and isinstance(node, dict):
            node[draw(st.text(min_size=1, max_size=12))] = draw(_VALUES)
        elif keys and action == "delete":
            del node[draw(st.sampled_from(keys))]
        elif keys:
            node[draw(st.sampled_from(keys))] = draw(_VALUES)
    return data


SHIPPED_DATA = read_toml(WINDDOWN)
_JUNK = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _loads_or_config_error(load: Callable[[], Campaign], path: Path) -> None:
    try:
        load()
    except ConfigError as exc:
        assert exc.problems
        for line in exc.problems:
            assert line.startswith(f"{path}: "), line
            assert "Traceback" not in line


@_JUNK
@given(mutated_campaigns())
def test_mutated_campaign_gives_config_error_or_loads(data: dict[str, Any]) -> None:
    _loads_or_config_error(lambda: parse_campaign(data, path=FAKE_PATH, root=REPO), FAKE_PATH)


@_JUNK
@given(st.binary(max_size=300))
def test_random_bytes_as_a_campaign_file(
    tmp_path_factory: pytest.TempPathFactory, junk: bytes
) -> None:
    path = tmp_path_factory.mktemp("junk") / "junk.toml"
    path.write_bytes(junk)
    _loads_or_config_error(lambda: load_campaign(str(path), REPO), path)


WINDDOWN_TEXT = WINDDOWN.read_text()


@_JUNK
@given(
    st.lists(
        st.tuples(st.integers(0, len(WINDDOWN_TEXT)), st.integers(0, 40), st.text(max_size=5)),
        min_size=1,
        max_size=4,
    )
)
def test_edited_campaign_text(
    tmp_path_factory: pytest.TempPathFactory, edits: list[tuple[int, int, str]]
) -> None:
    """The shipped file with a few characters cut or typed in: an editor's slips."""
    text = WINDDOWN_TEXT
    for at, cut, typed in edits:
        text = text[:at] + typed + text[at + cut :]
    path = tmp_path_factory.mktemp("edited") / "edited.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _loads_or_config_error(lambda: load_campaign(str(path), REPO), path)


def test_toml_values_of_every_kind_are_named_by_their_toml_type() -> None:
    for value, got in [
        (date(2026, 1, 1), "a date"),
        (time(8), "a time"),
        (datetime(2026, 1, 1, tzinfo=UTC), "a date-time"),
        ({"a": 1}, "a table"),
        (1.5, "a float"),
    ]:
        data = shipped_data()
        data["campaign"]["title"] = value
        (line,) = problems_of(data)
        assert line.startswith(f"{FAKE_PATH}: campaign.title: must be a string (got {got})")


# ----------------------------------------------------------------------------- bounds (#16)
# Every count, address, URL, header text and path the file carries is bounded, so an absurd
# value is refused here by its key instead of overflowing or hanging the edition later.

HUGE_DAYS = ["audience.active_within_days", "content.popular_days", "inputs.max_age_days"]
HUGE_DAYS += ["audience.min_days_between_editions"]


@pytest.mark.parametrize("key", HUGE_DAYS)
@pytest.mark.parametrize("days", [3_000_000, 10**30])
def test_day_counts_past_ten_years_are_refused(key: str, days: int) -> None:
    data = shipped_data()
    _set(key, days)(data)
    (line,) = problems_of(data)
    assert line == f"{FAKE_PATH}: {key}: must be less than or equal to 3650"


def test_ten_years_of_days_load() -> None:
    data = shipped_data()
    for key in HUGE_DAYS:
        _set(key, 3650)(data)
    parse_campaign(data, path=FAKE_PATH, root=REPO)


LONG = "x" * 300_000
OVERSIZE: list[tuple[str, Any, str]] = [
    ("sender.reply_to", LONG + "@calm.example", "at most 254 character(s)"),
    ("sender.from_email", "a" * 250 + "@calm.example", "at most 254 character(s)"),
    ("sender.unsubscribe_mailto", LONG + "@calm.example", "at most 254 character(s)"),
    ("sender.from_name", LONG, "at most 200 character(s)"),
    ("sender.postal_address", LONG, "at most 998 character(s)"),
    ("sender.unsubscribe_url", f"https://calm.example/{LONG}/{{token}}", "at most 2048"),
    ("sender.preferences_url", f"https://calm.example/{LONG}", "at most 2048 character(s)"),
    ("sender.app_link_base", f"https://calm.example/{LONG}", "at most 2048 character(s)"),
    ("sender.unsubscribe_group", 10**30, "must be less than or equal to 2147483647"),
    ("campaign.title", LONG, "at most 998 character(s)"),
    ("campaign.name", "x" * 101, "at most 100 character(s)"),
    ("experiment.seed", LONG, "at most 200 character(s)"),
    ("experiment.name", LONG, "at most 200 character(s)"),
    ("schedule.prepare", LONG, "at most 200 character(s)"),
    ("schedule.fallback_timezone", LONG, "at most 64 character(s)"),
    ("schedule.max_rate", 1e300, "must be less than or equal to 100000"),
    ("alerts.slack_webhook_url", f"https://hooks.example/{LONG}", "at most 2048 character(s)"),
    ("inputs.recommendations", "{root}/" + "x" * 256 + "/", "a path component is 256 bytes"),
    ("inputs.catalog", "{root}/" + "é" * 128 + ".csv", "a path component is 260 bytes"),
    ("inputs.audience", "{root}/users\x00.csv", "contains a NUL character"),
    ("inputs.editorial", "{root}/picks\r\n.toml", "contains a control character"),
    ("inputs.history", "/".join(["x"] * 3000), "at most 4096 character(s)"),
    ("campaign.template", "../../etc", "a file name"),
    ("campaign.rules", "x" * 300, "at most 250 character(s)"),
    ("sender.from_name", "Calm\r\nBcc: x@example.com", "must be one line of printable text"),
    ("experiment.seed", "seed\x00", "contains a NUL character"),
]


@pytest.mark.parametrize(("key", "value", "expected"), OVERSIZE, ids=[k for k, _, _ in OVERSIZE])
def test_oversize_values_are_refused_by_their_key(key: str, value: Any, expected: str) -> None:
    data = shipped_data()
    data.setdefault("alerts", {})
    _set(key, value)(data)
    (line,) = problems_of(data)
    assert line.startswith(f"{FAKE_PATH}: {key}: {expected}"), line[:300]
    assert len(line) < 1000  # the value itself is never echoed whole


def test_a_from_name_may_hold_any_space_but_no_line_break() -> None:
    data = shipped_data()
    data["sender"]["from_name"] = "Calm\u00a0Équipe\u202f: 静か\u3000"
    parse_campaign(data, path=FAKE_PATH, root=REPO)
    data["sender"]["from_name"] = "Calm\u2028Bcc: x@example.com"
    (line,) = problems_of(data)
    assert line.startswith(f"{FAKE_PATH}: sender.from_name: must be one line")


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("x" * 300, "at most 32 character(s)"),
        ("../../../etc/passwd", "a locale such as en-US"),
        ("en US", "a locale such as en-US"),
        ("", "a locale such as en-US"),
    ],
)
def test_a_locale_must_be_a_short_file_name(locale: str, expected: str) -> None:
    data = shipped_data()
    data["audience"]["locales"] = ["en-US", locale]
    (line,) = problems_of(data)
    assert line.startswith(f"{FAKE_PATH}: audience.locales[1]: {expected}"), line[:300]


def test_an_integer_past_pythons_digit_limit_names_file_and_line(tmp_path: Path) -> None:
    text = WINDDOWN.read_text().replace("popular_days = 28", "popular_days = " + "9" * 5000)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if s.startswith("popular_days"))
    path = tmp_path / "huge.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_campaign(str(path), REPO)
    assert str(info.value) == (
        f"{path}: not valid TOML: an integer of more than 4300 digits (at line {line})"
    )


def test_every_toml_reader_names_the_file_of_a_huge_integer(tmp_path: Path) -> None:
    from calm_mail.plan.rules.loading import load_rules

    path = tmp_path / "rules.toml"
    path.write_text('description = "x"\n\nlimit = ' + "1" * 4301 + "\n")
    with pytest.raises(ConfigError, match=r"rules\.toml: not valid TOML: .* \(at line 3\)"):
        load_rules(path)
    with pytest.raises(ConfigError, match=r"rules\.toml: not valid TOML"):
        read_toml(path)


def test_a_path_too_long_to_read_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / ("x" * 300 + ".toml")
    with pytest.raises(ConfigError, match=r"cannot read: File name too long"):
        read_toml(path)
