"""The Personalize batch-output reader and the quality gate."""

from __future__ import annotations

import gzip
import io
import tracemalloc
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calm_mail.errors import InputError
from calm_mail.inputs import check_recommendation_quality, iter_recommendations
from calm_mail.inputs.personalize import _odd, _usual
from calm_mail.records import Recommendation, SkipCounter

from .conftest import FRAGMENTS, line

KNOWN = frozenset({"i1", "i2", "i3"})


def read(path: Path | str, **kwargs: object) -> tuple[list[Recommendation], SkipCounter]:
    skips = SkipCounter(keep=1000)
    return list(iter_recommendations(str(path), skips=skips, **kwargs)), skips  # type: ignore[arg-type]


def test_good_file(data_dir: Path) -> None:
    recs, skips = read(data_dir / "personalize/good.out")
    assert [(r.user_id, r.item_ids) for r in recs] == [
        ("u1", ("i1", "i2", "i3")),
        ("u2", ("i3", "i1")),
        ("u3", ("i2",)),
    ]
    assert skips.total == 3 and skips.skipped == 0


def test_bad_lines_are_counted_by_reason_with_file_and_line(data_dir: Path) -> None:
    path = data_dir / "personalize/error_lines.out"
    recs, skips = read(path, known_items=KNOWN)
    assert recs == [
        Recommendation(user_id="u1", item_ids=("i1", "i2")),
        Recommendation(user_id="u7", item_ids=("i1", "i2")),
        Recommendation(user_id="u9", item_ids=("i3",)),
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
    assert skips.items_read == 0 and not skips.unknown_ids  # no catalog: nothing to drop


def test_known_items_may_be_any_collection_of_ids(data_dir: Path) -> None:
    path = data_dir / "personalize/error_lines.out"
    as_set, _ = read(path, known_items=set(KNOWN))
    as_frozen, _ = read(path, known_items=KNOWN)
    as_keys, _ = read(path, known_items=dict.fromkeys(KNOWN).keys())
    as_list, _ = read(path, known_items=sorted(KNOWN))
    assert as_set == as_frozen == as_keys == as_list


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


def test_scores_are_not_read(tmp_path: Path) -> None:
    body = (
        b'{"input":{"userId":"a"},"output":{"recommendedItems":["i1","i2"],"scores":[0.1]}}\n'
        b'{"input":{"userId":"b"},"output":{"recommendedItems":["i1"],"scores":["x"]}}\n'
        b'{"input":{"userId":"c"},"output":{"recommendedItems":["i1"]}}\n'
    )
    (tmp_path / "x.out").write_bytes(body)
    recs, skips = read(tmp_path)
    assert [(r.user_id, r.item_ids) for r in recs] == [
        ("a", ("i1", "i2")),
        ("b", ("i1",)),
        ("c", ("i1",)),
    ]
    assert skips.skipped == 0


@pytest.mark.parametrize(
    ("raw", "user", "reason"),
    [
        (line("u1", ["i1"]), "u1", None),
        (line("u1", ["i1"]).replace(b"\n", b"\r\n"), "u1", None),
        (line("u1", ["i1"]).rstrip(), "u1", None),  # the last line of a part may lack "\n"
        (line("u1", ["i1"]).replace(b'"u1"', b"5"), "5", None),  # an integer id, as text
        (line("u1", ["i1"]).replace(b'"u1"', b'"u\\u0031"'), "u1", None),  # escaped
        (
            line("u1", ["i1"]).replace(b'"error":null', b'"error":null,"error":"x"'),
            None,
            "error_line",
        ),
        (line("u1", ["i1"]).replace(b'"u1"', b"true"), None, "missing_user_id"),
        (line("u1", ["i1"]).replace(b'"u1"', b"18446744073709551616"), None, "missing_user_id"),
        (line("u1", ["i1"]).replace(b'"u1"', b'""'), None, "missing_user_id"),
        (line("u1", ["i1"]).replace(b'"i1"', b"NaN"), None, "bad_json"),
        (line("u1", ["i1"]).replace(b'"i1"', b"1e999"), None, "bad_json"),
        (b"\xff\n", None, "bad_json"),
        (
            line("u1", ["i1"]).replace(b'"output":{', b'"output":[{').replace(b"]},", b"]}],"),
            None,
            "missing_output",
        ),
        (line("u1", []), None, "empty_output"),
        (line("u1", ["i1", 7]), None, "bad_items"),
    ],
)
def test_an_odd_line_is_read_or_counted_with_its_reason(
    tmp_path: Path, raw: bytes, user: str | None, reason: str | None
) -> None:
    (tmp_path / "x.out").write_bytes(raw)
    recs, skips = read(tmp_path)
    assert [r.user_id for r in recs] == ([user] if user else [])
    assert dict(skips.counts) == ({reason: 1} if reason else {})
    assert skips.examples.get(reason or "", [f"{tmp_path}/x.out:1"]) == [f"{tmp_path}/x.out:1"]


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


# Personalize's own lines, with what breaks their usual shape planted at JSON seams or anywhere
@st.composite
def planted_lines(draw: st.DrawFn) -> bytes:
    user = draw(st.sampled_from(["u1", "u2", "a", "5", ""]))
    ids = draw(st.lists(st.sampled_from(["i1", "i2", "i3", "zz"]), max_size=3))
    scores = draw(st.none() | st.lists(st.floats(0, 1), min_size=len(ids), max_size=len(ids)))
    raw = line(user, ids, scores).rstrip(b"\n")
    for at, fragment in draw(st.lists(st.tuples(st.integers(0, 10**6), FRAGMENTS), max_size=2)):
        seams = [k + 1 for k, c in enumerate(raw) if c in b"{[,:"]
        seams += [k for k, c in enumerate(raw) if c in b"}]"]
        at = seams[at % len(seams)] if at % 4 else at % len(raw)
        raw = raw[:at] + fragment + raw[at:]
    return raw.replace(b"\n", b" ").replace(b"\r", b" ")


planted_line = planted_lines()


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(junk_line | planted_line, max_size=12),
    use_known=st.booleans(),
    gzipped=st.booleans(),
)
def test_junk_lines_are_read_or_counted_with_their_file_and_line(
    tmp_path: Path, lines: list[bytes], use_known: bool, gzipped: bool
) -> None:
    body = b"\n".join(lines) + b"\n"
    path = tmp_path / ("junk.out.gz" if gzipped else "junk.out")
    path.write_bytes(gzip.compress(body) if gzipped else body)
    recs, skips = read(path, known_items=KNOWN if use_known else None)
    numbered = [n for n, raw in enumerate(io.BytesIO(body), 1) if raw.strip()]  # split at "\n"
    assert skips.total == len(numbered)
    places = [where for found in skips.examples.values() for where in found]
    assert len(places) == skips.skipped  # each skipped line once, with its file and line
    lines_skipped = {int(where.rsplit(":", 1)[1]) for where in places}
    assert len(lines_skipped) == skips.skipped and lines_skipped <= set(numbered)
    assert all(where.rsplit(":", 1)[0] == str(path) for where in places)
    assert len(recs) + skips.skipped == skips.total  # every other line is read
    for rec in recs:
        assert rec.user_id and isinstance(rec.user_id, str)
        assert rec.item_ids and all(isinstance(i, str) for i in rec.item_ids)
        assert not use_known or set(rec.item_ids) <= KNOWN
    assert len({r.user_id for r in recs}) == len(recs)


@settings(max_examples=300, deadline=None)
@given(raw=junk_line | planted_line, use_known=st.booleans())
def test_the_usual_path_takes_only_what_the_strict_path_reads_alike(
    raw: bytes, use_known: bool
) -> None:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    known = KNOWN if use_known else None
    usual = _usual(doc, known)
    if usual is not None:
        strict = _odd(doc, known)
        assert strict.reason is None and strict.rec == usual and not strict.dropped


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
