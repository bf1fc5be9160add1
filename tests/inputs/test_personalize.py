"""The Personalize batch-output reader and the quality gate."""

from __future__ import annotations

import gzip
import io
import tracemalloc
from pathlib import Path

import orjson
import pytest
import simdjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calm_mail.errors import InputError
from calm_mail.inputs import check_recommendation_quality, iter_recommendations
from calm_mail.inputs.idscan import IdScanner
from calm_mail.inputs.personalize import _line, _scanned, _shape
from calm_mail.records import Recommendation, SkipCounter

from .conftest import FRAGMENTS, line

KNOWN = frozenset({"i1", "i2", "i3"})


def read(path: Path | str, **kwargs: object) -> tuple[list, SkipCounter]:
    skips = SkipCounter()
    return list(iter_recommendations(str(path), skips=skips, **kwargs)), skips  # type: ignore[arg-type]


def test_good_file(data_dir: Path) -> None:
    recs, skips = read(data_dir / "personalize/good.out")
    assert [(r.user_id, r.item_ids, r.scores) for r in recs] == [
        ("u1", ("i1", "i2", "i3"), (0.5, 0.3, 0.2)),
        ("u2", ("i3", "i1"), None),
        ("u3", ("i2",), (0.9,)),
    ]
    assert skips.total == 3 and skips.skipped == 0


def test_bad_lines_are_counted_by_reason_with_file_and_line(data_dir: Path) -> None:
    path = data_dir / "personalize/error_lines.out"
    recs, skips = read(path, known_items=KNOWN)
    assert [(r.user_id, r.item_ids, r.scores) for r in recs] == [
        ("u1", ("i1", "i2"), (0.6, 0.4)),
        ("u7", ("i1", "i2"), (0.5, 0.2)),
        ("u9", ("i3",), None),
    ]
    assert dict(skips.counts) == {
        "error_line": 1,
        "missing_output": 1,
        "empty_output": 1,
        "missing_user_id": 1,
        "bad_json": 2,
        "duplicate_user": 1,
        "unknown_items": 1,  # u8: no known item left; u7 and u9 stay, minus the unknown ids
    }
    assert skips.unknown_ids == {"zz9": 1, "7": 1, "zz1": 1, "zz2": 1}
    assert skips.items_read == 2 + 3 + 2 + 2  # u1, u7, u8, u9 (not u1's duplicate line)
    assert skips.examples["error_line"] == [f"{path}:2"]
    assert skips.examples["bad_json"] == [f"{path}:6", f"{path}:9"]  # line 7 is blank
    assert skips.examples["duplicate_user"] == [f"{path}:8"]
    assert skips.total == 11


def test_without_known_items_non_string_ids_are_bad_items(data_dir: Path) -> None:
    recs, skips = read(data_dir / "personalize/error_lines.out")
    assert skips.counts["bad_items"] == 1
    assert "unknown_items" not in skips.counts
    assert [r.user_id for r in recs] == ["u1", "u7", "u8"]


def test_known_items_may_be_any_container(data_dir: Path) -> None:
    class OnlyContains:
        def __contains__(self, item: object) -> bool:
            return item in KNOWN

    fast, _ = read(data_dir / "personalize/error_lines.out", known_items=KNOWN)
    slow, _ = read(data_dir / "personalize/error_lines.out", known_items=OnlyContains())
    as_dict, _ = read(data_dir / "personalize/error_lines.out", known_items=dict.fromkeys(KNOWN))
    assert fast == slow == as_dict


def test_parts_are_read_in_order_gzip_included_and_duplicates_span_parts(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "part-00000.json.out").write_bytes(line("a", ["i1"]) + line("b", ["i2"]))
    with gzip.open(tmp_path / "part-00001.json.out.gz", "wb") as out:
        out.write(line("c", ["i3"]) + line("a", ["i2"]))
    (tmp_path / "sub" / "part-00002.json.out").write_bytes(line("d", ["i1"]))
    (tmp_path / "notes.txt").write_text("ignored")
    recs, skips = read(tmp_path)
    assert [r.user_id for r in recs] == ["a", "b", "c", "d"]
    assert skips.examples["duplicate_user"] == [f"{tmp_path}/part-00001.json.out.gz:2"]


def test_gzip_is_found_by_magic_bytes_too(tmp_path: Path) -> None:
    (tmp_path / "x.out").write_bytes(gzip.compress(line("a", ["i1"])))
    recs, _ = read(tmp_path)
    assert [r.user_id for r in recs] == ["a"]


def test_truncated_gzip_is_an_input_error(tmp_path: Path) -> None:
    data = gzip.compress(b"".join(line(f"u{i}", ["i1"]) for i in range(2000)))
    (tmp_path / "x.out.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"x\.out\.gz.*cannot read"):
        read(tmp_path)


def test_corrupt_deflate_data_is_an_input_error(tmp_path: Path) -> None:
    # A bad deflate block raises the inflater's own error (not an OSError): it must still end
    # as an InputError naming the part and the line, never a traceback.
    data = bytearray(gzip.compress(b"".join(line(f"u{i}", ["i1"]) for i in range(2000))))
    data[20:24] = b"xxxx"  # inside the first deflate block: "invalid ... block"
    (tmp_path / "x.out.gz").write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"x\.out\.gz:\d+.*cannot read"):
        read(tmp_path)


def test_a_gzip_part_is_closed_with_its_file(tmp_path: Path) -> None:
    from calm_mail.inputs.sources import open_source

    (tmp_path / "x.out.gz").write_bytes(gzip.compress(line("a", ["i1"])))
    stream = open_source(str(tmp_path / "x.out.gz"))
    under = stream._file  # type: ignore[attr-defined]
    assert stream.readline().startswith(b'{"input"')
    stream.close()
    assert under.closed


def test_no_parts_and_no_folder_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no Personalize output"):
        read(tmp_path)
    with pytest.raises(InputError, match="no such folder"):
        read(tmp_path / "missing")


def test_scores_that_do_not_match_the_items_are_dropped(tmp_path: Path) -> None:
    body = (
        b'{"input":{"userId":"a"},"output":{"recommendedItems":["i1","i2"],"scores":[0.1]}}\n'
        b'{"input":{"userId":"b"},"output":{"recommendedItems":["i1"],"scores":["x"]}}\n'
        b'{"input":{"userId":5},"output":{"recommendedItems":["i1"],"scores":[1]}}\n'
    )
    (tmp_path / "x.out").write_bytes(body)
    recs, skips = read(tmp_path)
    assert [(r.user_id, r.scores) for r in recs] == [("a", None), ("b", None), ("5", (1,))]
    assert skips.skipped == 0


junk_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
ids = st.sampled_from(["i1", "i2", "i3", "zz", ""]) | junk_value
plausible = st.fixed_dictionaries(
    {},
    optional={
        "input": st.fixed_dictionaries({}, optional={"userId": st.text(max_size=3) | junk_value}),
        "output": st.none()
        | st.fixed_dictionaries(
            {},
            optional={
                "recommendedItems": st.lists(ids, max_size=4) | junk_value,
                "scores": st.lists(st.floats(), max_size=4) | junk_value,
            },
        ),
        "error": st.none() | st.text(max_size=5) | junk_value,
    },
).map(orjson.dumps)
# Raw bytes, minus a leading gzip magic number: such a file is (rightly) read as gzip.
raw_bytes = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ").replace(b"\x1f", b" "))
junk_line = plausible | raw_bytes


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(junk_line, max_size=12), use_known=st.booleans())
def test_junk_lines_never_crash_and_counts_add_up(
    tmp_path: Path, lines: list[bytes], use_known: bool
) -> None:
    path = tmp_path / "junk.out"
    path.write_bytes(b"\n".join(lines) + b"\n")
    recs, skips = read(path, known_items=KNOWN if use_known else None)
    assert skips.total == sum(1 for raw in lines if raw.strip())
    assert len(recs) + skips.skipped == skips.total  # every line is yielded or skipped
    for rec in recs:
        assert rec.user_id and isinstance(rec.user_id, str)
        assert rec.item_ids and all(isinstance(i, str) for i in rec.item_ids)
        assert not use_known or set(rec.item_ids) <= KNOWN
        assert rec.scores is None or len(rec.scores) == len(rec.item_ids)
    assert len({r.user_id for r in recs}) == len(recs)


def test_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    items = [f"{10000 + i}" for i in range(200)]
    scores = [round(1 / (i + 1), 6) for i in range(200)]
    body = b"".join(line(str(100000 + u), items, scores) for u in range(400))

    def peak(copies: int) -> int:
        folder = tmp_path / f"x{copies}"
        folder.mkdir()
        with (folder / "part.out").open("wb") as out:
            for _ in range(copies):
                out.write(body)  # duplicates after the first copy: still parsed line by line
        tracemalloc.start()
        try:
            for _ in iter_recommendations(str(folder), skips=SkipCounter()):
                pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(1), peak(5)  # ~0.8 MB vs ~4 MB of JSON
    assert large < small * 1.3 + 64 * 1024, (small, large)
    assert large < 3 * 1024 * 1024  # the 1 MB read buffer included


def counter(total: int, **reasons: int) -> SkipCounter:
    skips = SkipCounter()
    skips.seen(total)
    for reason, n in reasons.items():
        for i in range(n):
            skips.add(reason, f"x.out:{i + 1}")
    return skips


def test_quality_passes_at_the_limits() -> None:
    check_recommendation_quality(
        counter(1000, error_line=10),
        covered_users=500,
        audience_size=1000,
        max_bad_share=0.01,
        min_coverage=0.5,
        source="s3://b/out/",
    )


def test_quality_stops_when_the_catalog_misses_too_many_recommended_ids() -> None:
    skips = counter(1000)
    skips.items_read = 10_000
    skips.unknown_ids.update({"retired-1": 400, "retired-2": 99, "gone": 1})
    limits = {"covered_users": 900, "audience_size": 1000, "max_bad_share": 0.0}
    check_recommendation_quality(  # 500 of 10,000: exactly the limit passes
        skips, **limits, min_coverage=0.5, source="out/", max_unknown_share=0.05
    )
    skips.unknown_ids["gone"] += 1
    with pytest.raises(InputError) as caught:
        check_recommendation_quality(
            skips, **limits, min_coverage=0.5, source="out/", max_unknown_share=0.05,
            catalog="data/catalog.csv",
        )  # fmt: skip
    message = str(caught.value)
    assert "501 of the 10,000 recommended item ids read (5.01%) are not in data/catalog.csv" in (
        message
    )
    assert "3 distinct id(s), most often retired-1 (×400), retired-2 (×99), gone (×2)" in message
    assert "inputs.max_unknown_item_share" in message


def test_quality_stops_on_too_many_bad_lines() -> None:
    with pytest.raises(InputError) as exc:
        check_recommendation_quality(
            counter(1000, error_line=8, bad_json=3),
            covered_users=900,
            audience_size=1000,
            max_bad_share=0.01,
            min_coverage=0.5,
            source="s3://b/out/",
        )
    message = str(exc.value)
    assert message.startswith("s3://b/out/: 11 of 1,000 Personalize lines (1.10%) are bad")
    assert "max_bad_share" in message and "error_line 8 (first at x.out:1)" in message
    assert exc.value.exit_code == 2


def test_quality_stops_on_low_coverage_and_on_no_lines() -> None:
    with pytest.raises(InputError, match=r"covers 499 of 1,000 users \(49.9%\).*min_coverage"):
        check_recommendation_quality(
            counter(499),
            covered_users=499,
            audience_size=1000,
            max_bad_share=0.01,
            min_coverage=0.5,
            source="out/",
        )
    with pytest.raises(InputError, match="no lines"):
        check_recommendation_quality(
            SkipCounter(),
            covered_users=0,
            audience_size=10,
            max_bad_share=0.01,
            min_coverage=0.5,
            source="out/",
        )


# --------------------------------------------------------------------------- wanted users only


# Lines in the usual shape: the unread ones skip the parse, the read ones (without scores) the
# scores, when every id is known; the others go the full parse's way.
USUAL_LINES = [
    line("u1", ["i1", "zz"]),
    line("u2", ["zz"]),
    line("u1", ["i1", "i2"], [0.5, 0.4]),
    line("u2", ["i3"]),
    line("a", ["i2", "i1", "i3"], [0.1, 0.2, 0.3]),
    line("b", ["i2", "i1"], [0.1]),
    line("a", ["i3", 7]).replace(b"7", b"[7]"),
    line("b", ["i1"]).replace(b'"i1"]', b'"i1","\\u0069\\u0032"]'),
]


USERS = ["u1", "u2", "a", "b", "", "0"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(junk_line | st.sampled_from(USUAL_LINES)),
    wanted=st.sets(st.sampled_from(USERS)),
    scores=st.booleans(),
    keep=st.none() | st.frozensets(st.sampled_from(sorted(KNOWN))),
    unfiltered=st.sets(st.sampled_from(USERS)),
)
def test_wanted_users_read_exactly_as_a_full_read_and_others_only_checked(
    tmp_path: Path,
    lines: list[bytes],
    wanted: set[str],
    scores: bool,
    keep: frozenset[str] | None,
    unfiltered: set[str],
) -> None:
    path = tmp_path / "junk.out"
    path.write_bytes(b"\n".join(lines) + b"\n")
    full, full_skips = read(path, known_items=KNOWN, scores=scores)
    part, part_skips = read(
        path, known_items=KNOWN, wanted=wanted, scores=scores, keep=keep, unfiltered=unfiltered
    )
    firsts = _first_good_lines(lines)  # user -> its first structurally good line's items
    # the same lines are counted and the same structural problems found
    assert part_skips.total == full_skips.total
    assert _structural(part_skips) == _structural(full_skips)
    # wanted users get exactly what a full read gives them, or, with `keep`, what the rules'
    # first step would leave of it, with the count of the rest
    got = [r for r in part if not r.unread]
    expected = [r for r in full if r.user_id in wanted]
    assert [r.user_id for r in got] == [r.user_id for r in expected]
    for r, e in zip(got, expected, strict=True):
        if keep is None or scores or r.user_id in unfiltered or not r.ahead:
            assert r == e
        else:
            assert r.item_ids == tuple(i for i in e.item_ids if i in keep)
            assert len(r.item_ids) + r.ahead == len(e.item_ids) and r.scores is None
    # every other user with a good line comes back unread, with no items, once
    unread = [r for r in part if r.unread]
    assert [r.user_id for r in unread] == [u for u in firsts if u not in wanted]
    assert all(r.item_ids == () and r.scores is None for r in unread)
    # item problems are looked for, and rated, on the wanted users' lines only
    assert part_skips.items_checked == sum(1 for u in firsts if u in wanted)
    no_known = sum(1 for u, items in firsts.items() if u in wanted and not _known(items))
    assert part_skips.counts["unknown_items"] == no_known
    read_ids = [i for u, items in firsts.items() if u in wanted for i in items]
    assert part_skips.items_read == len(read_ids)
    assert part_skips.unknown_dropped == sum(1 for i in read_ids if i not in _known(read_ids))


def _known(items: list[object]) -> list[object]:
    return [i for i in items if isinstance(i, str) and i in KNOWN]


def _structural(skips: SkipCounter) -> dict[str, int]:
    return {k: v for k, v in skips.counts.items() if k not in ("unknown_items", "bad_items")}


def _first_good_lines(lines: list[bytes]) -> dict[str, list[object]]:
    """A model of the reader's structure checks: each user's first good line's items."""
    firsts: dict[str, list[object]] = {}
    for raw in lines:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(doc, dict) or doc.get("error") is not None:
            continue
        out, inp = doc.get("output"), doc.get("input")
        items = out.get("recommendedItems") if isinstance(out, dict) else None
        user = inp.get("userId") if isinstance(inp, dict) else None
        user = str(user) if type(user) is int else user
        if isinstance(items, list) and items and isinstance(user, str) and user:
            firsts.setdefault(user, items)
    return firsts


def test_a_wanted_line_keeps_only_what_the_rules_first_step_keeps(tmp_path: Path) -> None:
    path = tmp_path / "p.out"
    path.write_bytes(
        line("u1", ["i1", "i2", "i3", "i2"])
        + line("u2", ["i3", "i1"])
        + line("u3", ["i2", "zz"])  # an unknown id: read in full, the unknown one dropped
        + line("u4", ["i2", "i1"])
    )
    recs, skips = read(
        path,
        known_items=KNOWN,
        wanted={"u1", "u2", "u3", "u4"},
        scores=False,
        keep=frozenset({"i2"}),
        unfiltered={"u4"},  # a traced user: the whole list
    )
    assert [(r.user_id, r.item_ids, r.ahead) for r in recs] == [
        ("u1", ("i2", "i2"), 2),
        ("u2", (), 2),
        ("u3", ("i2",), 0),
        ("u4", ("i2", "i1"), 0),
    ]
    assert skips.items_read == 4 + 2 + 2 + 2 and skips.unknown_dropped == 1


def test_scores_are_left_out_when_not_asked_for(data_dir: Path) -> None:
    recs, _ = read(data_dir / "personalize/good.out", scores=False)
    assert [(r.user_id, r.scores) for r in recs] == [("u1", None), ("u2", None), ("u3", None)]
    assert recs[0].item_ids == ("i1", "i2", "i3")


def test_item_problems_found_on_part_of_the_lines_are_rated_over_that_part() -> None:
    skips = counter(100, bad_json=5, unknown_items=2)
    assert skips.share() == pytest.approx(0.07)
    skips.items_checked = 10  # items were read on 10 of the 100 lines
    assert skips.share() == pytest.approx(0.05 + 0.2)
    assert skips.as_dict()["items_checked"] == 10
    other = counter(50, unknown_items=1)  # every line checked
    skips.merge(other)
    assert skips.items_checked == 60 and skips.total == 150
    assert skips.share() == pytest.approx(5 / 150 + 3 / 60)


# --------------------------------------------------------------------------- the usual shape


@settings(max_examples=400, deadline=None)
@given(
    user=st.text(max_size=6),
    items=st.lists(st.sampled_from(["i1", "i2", "zz"]), max_size=3),
    cuts=st.lists(st.tuples(st.integers(0, 10**6), FRAGMENTS), max_size=3),
)
def test_a_line_taken_by_its_shape_is_one_the_full_parse_finds_well_formed(
    user: str, items: list[str], cuts: list[tuple[int, bytes]]
) -> None:
    raw = line(user, items)
    for at, fragment in cuts:  # mostly where JSON has a seam: after { [ , : and before } ]
        seams = [k + 1 for k, c in enumerate(raw) if c in b"{[,:"]
        seams += [k for k, c in enumerate(raw) if c in b"}]"]
        at = seams[at % len(seams)] if at % 4 else at % len(raw)
        raw = raw[:at] + fragment + raw[at:]
    shape = _shape(raw)
    user_id = shape[0] if shape else None
    reason, rec, parsed_user, _ = _line(simdjson.Parser(), raw, None, False, frozenset())
    plain = user.isascii() and user.isprintable() and not set(user) & {'"', "\\"}
    if not cuts and items and user and plain:
        assert user_id == user  # Personalize's own lines take the fast path
    if user_id is None or reason == "bad_json":
        return  # another shape (parsed in full), or the documented gap: a broken middle
    assert reason is None and rec is not None and rec.unread
    assert parsed_user == user_id


def test_lines_of_users_no_email_reads_are_checked_for_shape_only(tmp_path: Path) -> None:
    broken = line("u2", ["i1"]).replace(b'"i1"', b'"i1" junk')
    path = tmp_path / "x.out"
    path.write_bytes(line("u1", ["i2"]) + broken + line("u3", ["i3"]).replace(b"null", b'"x"'))
    recs, skips = read(path, known_items=KNOWN, wanted={"u1"})
    assert [(r.user_id, r.unread) for r in recs] == [("u1", False), ("u2", True)]
    assert dict(skips.counts) == {"error_line": 1}  # another shape: read in full
    recs, skips = read(path, known_items=KNOWN, wanted={"u2"})  # its email reads it: parsed
    assert [(r.user_id, r.unread) for r in recs] == [("u1", True)]
    assert dict(skips.counts) == {"bad_json": 1, "error_line": 1}


@pytest.mark.parametrize(
    ("raw", "taken"),
    [
        (line("u1", ["i1"]), "u1"),
        (line("u1", ["i1"]).replace(b"\n", b"\r\n"), "u1"),
        (line("u1", ["i1"]).rstrip(), "u1"),  # the last line of a part may lack its newline
        (line("u1", ["i1"]).replace(b',"error"', b',"error":"x","z":{},"error"'), None),
        (line("u1", ["i1"]).replace(b'"]', b'"],"error":"x"'), None),  # in output: parsed
        (line("u1", ["i1"]).replace(b"}\n", b"} \n"), None),
        (line("u1", []), None),
        (line("", ["i1"]), None),
        (line("é", ["i1"]), None),
        (line("u1", ["i1"]).replace(b'"u1"', b'"u\\u0031"'), None),
        (line("u1", ["i1"]).replace(b'"u1"', b"1"), None),
    ],
)
def test_the_usual_shape_is_exactly_that(raw: bytes, taken: str | None) -> None:
    shape = _shape(raw)
    assert (shape[0] if shape else None) == taken
    reason, _, user, _ = _line(simdjson.Parser(), raw, None, False, frozenset())
    if taken is not None:  # the full parse agrees
        assert (reason, user) == (None, taken)


@pytest.mark.parametrize(
    "raw",
    [
        line("u1", ["i1", "i2"], [0.5, 0.25]),
        line("u1", ["i1", "i2"]),
        line("u1", ["i1", "i2"]).replace(b"\n", b"\r\n"),
        line("u1", ["i1", "i2"], [0.5, 0.25]).replace(b'"]', b'"],"x":1'),
    ],
)
def test_the_ids_array_ends_where_the_shape_says(raw: bytes) -> None:
    shape = _shape(raw)
    assert shape is not None and shape[0] == "u1"
    end = shape[1]
    if b'"x"' in raw:  # another key after the ids: the line is read in full
        assert end == -1
        return
    assert raw[end - 1 : end] == b"]"
    assert orjson.loads(raw[:end] + b"}}")["output"]["recommendedItems"] == ["i1", "i2"]
    read = _scanned(raw, shape, IdScanner(KNOWN, KNOWN))  # the short cut, not the full parse
    assert read == Recommendation(user_id="u1", item_ids=("i1", "i2"))
    assert _scanned(raw, shape, IdScanner(frozenset({"i1"}), KNOWN)) is None  # an unknown id


# --------------------------------------------------------------------------- a whole line read

FULL_LINES = [
    line("u1", ["i1", "i2"], [0.5, 0.25]),
    line("u2", ["i3"]),
    line("u3", ["i1", "zz"], [0.1, 0.2]),  # an unknown id
    line("u4", ["i2"], [0.1, 0.2]),  # scores that do not match
    line("u5", ["i1"], [0.5]).replace(b"0.5", b'"x"'),  # a score that is not a number
    line("u6", ["i1"], [0.5]).replace(b"0.5]", b'0.5],"more":1'),  # a key after the scores
    line("u7", ["i1"], [0.5]).replace(b"0.5", b"[0.5]"),  # nested
    line("u8", ["i1"], [0.5]).replace(b"0.5", b"true"),
    line("u9", ["i1"], [0.5]).replace(b"0.5", b"1e999"),
    line("u1", ["i3"], [0.7]),  # a duplicate user
    line("v1", ["i1", "i2"], [1, -0.0]),
    line("v2", ["i1"], [0.5]).replace(b"[0.5]", b"[ 0.5 ]"),
    line("v3", ["i2"], [0.5]).replace(b'"i2"', b'"i\\u0032"'),  # an escaped id
    line("v4", ["i2", 3], [0.5, 0.1]),
    line("v5", ["i1"], [0.5]).replace(b"0.5", b"0.5,"),
    line("w1", ["i1"], [0.5]).replace(b"\n", b"\r\n"),
    line("w2", ["i3", "i1"], [0.5, 0.4]).rstrip(b"\n"),
]


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(st.sampled_from(FULL_LINES) | junk_line, max_size=10),
    use_known=st.booleans(),
)
def test_a_full_read_gives_what_the_strict_parse_of_each_line_gives(
    tmp_path: Path, lines: list[bytes], use_known: bool
) -> None:
    """A full read (every line's ids and scores) takes the usual lines the short way
    (`_usual_full`); line by line, it must give what the full simdjson parse (`_line`) gives."""
    path = tmp_path / "full.out"
    path.write_bytes(b"\n".join(lines) + b"\n")
    known = KNOWN if use_known else None
    got, skips = read(path, known_items=known)
    parser = simdjson.Parser()
    expected: list[Recommendation] = []
    reasons: dict[str, int] = {}
    users: set[str] = set()
    for raw in io.BytesIO(b"\n".join(lines) + b"\n"):  # lines as the reader splits them
        reason, rec, user_id, _ = _line(parser, raw, known, use_known, None)
        if reason == "blank":
            continue
        if user_id is not None:
            if user_id in users:
                reason, rec = "duplicate_user", None
            users.add(user_id)
        if reason is not None:
            reasons[reason] = reasons.get(reason, 0) + 1
        if rec is not None:
            expected.append(rec)
    assert got == expected
    assert dict(skips.counts) == reasons
