"""The planner on hand-made audiences with known answers, and end to end on small files."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from calm_mail.campaign import Campaign
from calm_mail.errors import ConfigError, InputError
from calm_mail.plan import planner
from calm_mail.plan.assign import Assigner, MemoryStore, record_exposures
from calm_mail.plan.context import PlanContext, build_context
from calm_mail.plan.output import explain, write_plan
from calm_mail.plan.planner import plan_edition
from calm_mail.plan.summary import format_summary
from calm_mail.plan.user import plan_user
from calm_mail.records import (
    Completion,
    ContentSource,
    EditorialPicks,
    Exclusion,
    PlannedDelivery,
    Recommendation,
)
from calm_mail.store import Ledger

from .conftest import (
    EDITION,
    OLD,
    REPO,
    SEND,
    campaign_in,
    done,
    item,
    rec,
    user,
    write_catalog,
    write_completions,
    write_editorial,
    write_personalize,
    write_users,
)

TYPES = ["meditation", "sleep_story", "soundscape", "music", "masterclass", "movement"]
CATALOG = {
    i.item_id: i
    for i in [
        *(item(f"e{k}", content_type=TYPES[k % 6]) for k in range(1, 9)),
        *(item(f"s{k}", language="es", content_type=TYPES[k % 6]) for k in range(1, 5)),
        item("k1", content_type="kids", is_kids=True),
        *(item(f"o{k}", created=OLD) for k in range(1, 4)),
    ]
}
PICKS = EditorialPicks(
    edition=EDITION.key,
    by_locale={"en-US": ("e1", "k1", "e2", "e3", "e4", "e5"), "es-ES": ("s1", "s2", "s3", "s4")},
)
NOW = SEND - timedelta(hours=30)


def context(
    campaign: Campaign, sticky: dict[str, str], completions: Sequence[Completion] = ()
) -> PlanContext:
    return build_context(
        campaign,
        EDITION,
        catalog=CATALOG,
        editorial=PICKS,
        completions=completions,
        sticky=sticky,
        suppressed={"gone@example.com"},
    )


def planned(outcome: object) -> PlannedDelivery:
    assert isinstance(outcome, PlannedDelivery), outcome
    return outcome


def test_sources_and_fallback_on_known_users(campaign: Campaign) -> None:
    sticky = {u: "personalized" for u in ("p_ok", "p_missing", "p_old", "p_es")}
    sticky["c_en"] = "control"
    ctx = context(campaign, sticky)

    ok = planned(plan_user(user("p_ok"), rec("p_ok", ["o1", "e6", "e7", "e8", "k1"]), ctx)[0])
    assert ok.source is ContentSource.PERSONALIZE and not ok.fallback
    assert sorted(ok.item_ids) == ["e6", "e7", "e8"]  # old and kids items gone

    missing = planned(plan_user(user("p_missing"), None, ctx)[0])
    assert missing.fallback and missing.arm == "personalized"
    assert missing.source is ContentSource.PERSONALIZE  # intent to treat: stays in its arm
    assert set(missing.item_ids) <= {"e1", "e2", "e3", "e4", "e5"} and "k1" not in missing.item_ids

    old = planned(plan_user(user("p_old"), rec("p_old", ["o1", "o2", "e6"]), ctx)[0])
    assert old.fallback and len(old.item_ids) >= 3

    spanish = planned(
        plan_user(user("p_es", locale="es-ES", timezone="Europe/Madrid"), None, ctx)[0]
    )
    assert spanish.fallback and set(spanish.item_ids) <= {"s1", "s2", "s3", "s4"}
    assert spanish.send_at == datetime(2026, 11, 28, 7, tzinfo=UTC)

    control = planned(plan_user(user("c_en"), rec("c_en", ["e6", "e7", "e8"]), ctx)[0])
    assert control.source is ContentSource.EDITORIAL and not control.fallback
    assert set(control.item_ids) <= {"e1", "e2", "e3", "e4", "e5"}


def test_exclusions_on_known_users(campaign: Campaign) -> None:
    ctx = context(campaign, {"gone_arm": "retired-arm"})
    cases = {
        "kid": (user("kid", is_kids_profile=True), "kids_profile"),
        "gone": (user("gone", email="Gone@example.com"), "suppressed"),
        "optout": (user("optout", email_opt_in=False), "no_opt_in"),
        "gone_arm": (user("gone_arm"), "arm_removed"),
        "nothing": (user("nothing", locale="de-DE"), "too_few_items"),  # no German list
    }
    for person, reason in cases.values():
        outcome, _ = plan_user(person, None, ctx)
        assert isinstance(outcome, Exclusion) and outcome.reason == reason, person.user_id


def test_popular_and_holdout_arms(tmp_path: Path) -> None:
    camp = campaign_in(tmp_path, name="winddown_abc")
    history = [done(f"x{n}", "e8", days_ago=3) for n in range(5)]
    history += [done(f"x{n}", "e7", days_ago=3) for n in range(3)]
    history += [done("x1", "e6", days_ago=40)]  # outside the 28-day window
    ctx = context(camp, {"pop": "popular", "hold": "holdout"}, history)
    assert ctx.sources.popular[:2] == ("e8", "e7")
    pop = planned(plan_user(user("pop"), None, ctx)[0])
    assert pop.source is ContentSource.POPULAR and not pop.fallback and len(pop.item_ids) >= 3
    hold = planned(plan_user(user("hold"), None, ctx)[0])
    assert hold.is_holdout and hold.item_ids == () and hold.arm == "holdout"


def test_trace_explains_every_step(campaign: Campaign) -> None:
    ctx = context(campaign, {"p": "personalized"}, [done("p", "e6")])
    outcome, trace = plan_user(user("p"), rec("p", ["o1", "e6", "k1", "e7"]), ctx, explain=True)
    assert trace is not None and trace.fallback  # 1 item left: editorial list instead
    steps = {t.step: dict(t.dropped) for t in trace.steps}
    assert "released" in steps["only_new"]["o1"]
    assert steps["exclude_kids_for_adults"] == {"k1": "kids content, adult profile"}
    assert steps["exclude_completed"] == {"e6": "already completed"}
    assert "fewer than 3" in trace.fallback_why
    assert trace.item_ids == planned(outcome).item_ids
    hashed = plan_user(user("new-user"), None, ctx, explain=True)[1]
    assert hashed is not None and "hash v2" in hashed.arm_why
    assert hashed.arm == Assigner(campaign.experiment).arm_for("new-user")


# ----------------------------------------------------------------------------- end to end


def make_inputs(root: Path, n_users: int = 60) -> None:
    demo = root / "data" / "demo"
    write_catalog(demo / "catalog.csv", CATALOG.values())
    people = [
        user(
            f"u{k:03d}",
            locale="es-ES" if k % 5 == 0 else "en-US",
            email_opt_in=k % 11 != 0,
            preferred_hour=k % 24,
            timezone=["Europe/Madrid", "Asia/Tokyo", "Nowhere/City", ""][k % 4] or None,
        )
        for k in range(n_users)
    ]
    write_users(demo / "users.csv", people)
    recs = [
        rec(p.user_id, ["o1", "e8", "e7", "e6", "e5", "e4"][k % 3 :])
        for k, p in enumerate(people)
        if k % 7
    ]
    write_personalize(
        demo / "personalize" / EDITION.key,
        recs,
        [b'{"input":{"userId":"u001"},"output":null,"error":"boom"}'],
    )
    write_editorial(demo / "editorial" / f"{EDITION.key}.toml", EDITION.key, PICKS.by_locale)
    write_completions(
        demo / "completions.csv", [done("u001", "e8"), done("u002", "e4"), done("u003", "e7")]
    )


def e2e(root: Path, name: str = "weekly_winddown", **sections: dict[str, object]) -> Campaign:
    """The shipped campaign on the small files (which hold one bad line in 52 on purpose)."""
    inputs = {"max_bad_share": 0.1, **sections.pop("inputs", {})}
    return campaign_in(root, name=name, changes={"inputs": inputs, **sections})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_inputs(tmp_path)
    return tmp_path


def test_plan_is_byte_identical_and_complete(root: Path) -> None:
    camp = e2e(root, "winddown_abc")
    first = plan_edition(camp, EDITION, store=MemoryStore(), now=NOW)
    second = plan_edition(camp, EDITION.key, store=MemoryStore(), now=NOW + timedelta(hours=5))
    for name in ("plan.jsonl", "plan.parquet"):
        a = write_plan(first, root / "a" / name).read_bytes()
        b = write_plan(second, root / "b" / name).read_bytes()
        assert a == b and a
    s = first.summary
    assert s.audience == 60 and s.eligible + sum(s.excluded.values()) == 60
    assert len(first.deliveries) + len(first.exclusions) == 60
    assert [d.user_id for d in first.deliveries] == sorted(d.user_id for d in first.deliveries)
    assert s.kids_leaks == 0 and s.skips["recommendations"]["skipped"] == {"error_line": 1}
    assert set(s.arms) == {"editorial", "popular", "personalized", "holdout"}
    assert s.srm.p_value > 0.001
    personalized = s.arms["personalized"]
    fallbacks = sum(d.fallback for d in first.deliveries if d.arm == "personalized")
    assert personalized.fallback == fallbacks > 0  # users missing from the output fall back
    lines = (root / "a" / "plan.jsonl").read_text().splitlines()
    assert len(lines) == 60 and '"excluded":"no_opt_in"' in "".join(lines)
    text = io.StringIO()
    Console(file=text, width=120).print(format_summary(s))
    assert "personalized" in text.getvalue() and "kids content to adults: 0" in text.getvalue()


def test_the_plan_counts_personalize_coverage_for_preflight(root: Path) -> None:
    # Pre-flight takes the plan's count instead of reading the output a second time.
    from calm_mail.inputs import iter_recommendations
    from calm_mail.ops.checks import CheckContext
    from calm_mail.ops.preflight import check_coverage
    from calm_mail.records import SkipCounter

    camp = e2e(root, "winddown_abc")
    result = plan_edition(camp, EDITION, store=MemoryStore(), now=NOW)
    eligible = {d.user_id for d in result.deliveries}
    lines = iter_recommendations(
        camp.input_path("recommendations", EDITION),
        skips=SkipCounter(),
        known_items=result.catalog,
    )
    assert result.personalize_covered == len({r.user_id for r in lines} & eligible)
    assert result.personalize_covered is not None
    assert 0 < result.personalize_covered < len(eligible)  # the data leaves some users out
    detail = f"covers {result.personalize_covered:,} of {len(eligible):,} eligible users"
    lenient = e2e(root, "winddown_abc", inputs={"min_coverage": 0.0})
    shown = check_coverage(CheckContext(campaign=lenient, edition=EDITION), result)
    assert detail in shown


def test_a_retired_item_is_dropped_and_named_and_a_line_of_unknown_items_is_bad(
    root: Path,
) -> None:
    part = root / "data" / "demo" / "personalize" / EDITION.key / "part-00000.json.out"
    before = plan_edition(e2e(root), EDITION, store=MemoryStore(), now=NOW)
    reader = next(d.user_id for d in before.deliveries if d.source is ContentSource.PERSONALIZE)
    lines = part.read_bytes().replace(b'"o1"', b'"retired"').splitlines(keepends=True)
    lines = [  # the line of a user whose email reads it holds nothing the catalog knows
        re.sub(rb'"recommendedItems":\[[^\]]*\]', b'"recommendedItems":["x1","x2"]', raw)
        if f'"{reader}"'.encode() in raw
        else raw
        for raw in lines
    ]
    part.write_bytes(b"".join(lines))
    result = plan_edition(e2e(root), EDITION, store=MemoryStore(), now=NOW)
    skips = result.summary.skips["recommendations"]
    assert skips["skipped"]["unknown_items"] == 1  # that line; the retired item's lines stay
    dropped = skips["unknown_items_dropped"]
    assert skips["unknown_ids"] == {"retired": dropped - 2, "x1": 1, "x2": 1}
    assert 2 < dropped < skips["items_read"]
    assert reader not in {d.user_id for d in result.deliveries if not d.fallback}
    text = io.StringIO()
    Console(file=text, width=300).print(format_summary(result.summary))
    shown = text.getvalue()
    share = dropped / skips["items_read"]
    assert (
        f"{dropped:,} of the {skips['items_read']:,} recommended item ids read ({share:.2%})"
        in (shown)
    )
    assert f"most often retired (×{dropped - 2})" in shown
    # A catalog that misses more of the recommended ids than allowed stops the edition
    strict = e2e(root, inputs={"max_unknown_item_share": 0.01})
    with pytest.raises(InputError, match=r"not in .*catalog.*max_unknown_item_share.*retired"):
        plan_edition(strict, EDITION, store=MemoryStore(), now=NOW)


def test_a_plan_records_nothing_and_its_new_arms_are_sticky_once_recorded(root: Path) -> None:
    store = MemoryStore()
    camp = e2e(root)
    first = plan_edition(camp, EDITION, store=store, now=NOW)
    assert store.assignments.arms == {} and store.assignments.experiments == {}
    assert dict(first.new_assignments) == {d.user_id: d.arm for d in first.deliveries}
    record_exposures(store.assignments, camp.experiment, EDITION.key, first.new_assignments)
    recorded = store.assignments.get_assignments(
        camp.experiment.name, [d.user_id for d in first.deliveries]
    )
    assert recorded == {d.user_id: d.arm for d in first.deliveries}
    heavy = [
        {"name": "control", "weight": 99, "source": "editorial"},
        {"name": "personalized", "weight": 1, "source": "personalize"},
    ]
    changed = e2e(root, experiment={"arms": heavy})
    again = plan_edition(changed, EDITION, store=store, now=NOW)
    assert {d.user_id: d.arm for d in again.deliveries} == recorded
    assert again.new_assignments == ()  # everyone planned is sticky already
    reseeded = e2e(root, experiment={"seed": "another-seed"})
    with pytest.raises(ConfigError, match="re-randomize"):
        plan_edition(reseeded, EDITION, store=store, now=NOW)


def test_shards_partition_the_plan(root: Path) -> None:
    camp = e2e(root, inputs={"min_coverage": 0.0})
    whole = plan_edition(camp, EDITION, store=MemoryStore(), now=NOW)
    parts = [
        plan_edition(camp, EDITION, store=MemoryStore(), now=NOW, shard=(k, 4)) for k in range(4)
    ]
    merged = sorted((d for p in parts for d in p.deliveries), key=lambda d: d.user_id)
    assert merged == list(whole.deliveries)
    assert sum(p.summary.audience for p in parts) == whole.summary.audience


def test_explain_a_user(root: Path) -> None:
    camp = e2e(root)
    result = plan_edition(
        camp, EDITION, store=MemoryStore(), now=NOW, explain=["u001", "u011", "nobody"]
    )
    text = explain(result, "u001")
    assert "user u001: planned" in text and "only_new" in text and "send at" in text
    assert "no_opt_in" in explain(result, "u011")
    assert "not in the audience" in explain(result, "nobody")
    with pytest.raises(Exception, match="was not traced"):
        explain(result, "u002")
    assert result.absent == {"nobody"}  # typed, for `plan --explain` to refuse (exit 2)


def test_explain_a_user_of_another_shard(root: Path) -> None:
    camp = e2e(root)
    whole = plan_edition(camp, EDITION, store=MemoryStore(), now=NOW)
    users = [d.user_id for d in whole.deliveries]
    shard = plan_edition(
        camp, EDITION, store=MemoryStore(), now=NOW, shard=(0, 2), explain=[*users, "nobody"]
    )
    planned = {d.user_id for d in shard.deliveries}
    assert shard.absent == {"nobody", *(set(users) - planned)}
    assert all(u not in shard.absent for u in planned)
    outside = next(u for u in users if u not in planned)
    assert "not in the audience of this shard" in explain(shard, outside)


def test_bad_personalize_output_stops_the_plan(root: Path) -> None:
    camp = campaign_in(root)  # max_bad_share 1%: one error line in 52 is too many
    with pytest.raises(InputError, match="max_bad_share"):
        plan_edition(camp, EDITION, store=MemoryStore(), now=NOW)


def test_plan_against_the_real_ledger(root: Path, ledger: Ledger) -> None:
    camp = e2e(root)
    ledger.suppressions.add_suppressions([("u002@example.com", "bounce", "test")])
    first = plan_edition(camp, EDITION, store=ledger, now=NOW)
    assert "u002" in {x.user_id for x in first.exclusions if x.reason == "suppressed"}
    ids = [d.user_id for d in first.deliveries]
    assert ledger.assignments.get_assignments(camp.experiment.name, ids) == {}  # reads only
    record_exposures(ledger.assignments, camp.experiment, EDITION.key, first.new_assignments)
    assert ledger.assignments.get_assignments(camp.experiment.name, ids) == {
        d.user_id: d.arm for d in first.deliveries
    }
    again = plan_edition(camp, EDITION, store=ledger, now=NOW)
    assert again.deliveries == first.deliveries and again.new_assignments == ()


def test_the_plan_is_every_user_planned_on_their_first_usable_line(tmp_path: Path) -> None:
    """Streaming the Personalize output and joining it to the audience plans each user as
    `plan_user` does on that user's first usable line, and counts each step's drops alike."""
    from benchmarks.data import bench_campaign
    from calm_mail.demo.data import generate
    from calm_mail.edition import Edition
    from calm_mail.inputs import iter_recommendations
    from calm_mail.plan.rules import load_campaign_rules
    from calm_mail.records import SkipCounter

    generate(tmp_path, users=1500, seed=11, edition="2026-W48", recs=120, parts=2)
    campaign = bench_campaign(REPO, tmp_path)
    ed = Edition.parse("2026-W48")
    result = plan_edition(campaign, ed, store=MemoryStore(), now=NOW)

    inputs = planner._read_tables(campaign, ed, None)
    ctx = planner._context(campaign, ed, MemoryStore(), inputs, load_campaign_rules(campaign))
    first: dict[str, Recommendation] = {}
    for r in iter_recommendations(
        campaign.input_path("recommendations", ed),
        skips=SkipCounter(),
        known_items=inputs.catalog.keys(),
    ):
        first.setdefault(r.user_id, r)
    reference = [plan_user(u, first.get(uid), ctx)[0] for uid, u in inputs.audience.items()]
    assert result.deliveries == tuple(
        sorted((o for o in reference if isinstance(o, PlannedDelivery)), key=lambda d: d.user_id)
    )
    assert result.exclusions == tuple(
        sorted((o for o in reference if isinstance(o, Exclusion)), key=lambda x: x.user_id)
    )
    assert result.summary.dropped_by_step == ctx.rules.drops_in_order()
    assert result.summary.dropped_by_step["only_new"] > 0
    skips = result.summary.skips["recommendations"]
    assert "items_checked" not in skips
    kept = sum(len(r.item_ids) for r in first.values())
    assert skips["items_read"] == kept + skips.get("unknown_items_dropped", 0)
