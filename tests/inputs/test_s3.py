"""Reading inputs from s3:// through moto's S3 server (real HTTP on 127.0.0.1, real boto3)."""

from __future__ import annotations

import gzip
from pathlib import Path

import boto3
import pytest

from calm_mail.errors import InputError
from calm_mail.inputs import (
    iter_completions,
    iter_recommendations,
    list_prefix,
    open_source,
    read_catalog,
    read_editorial,
)
from calm_mail.records import SkipCounter
from tests.s3server import BUCKET


def put(key: str, body: bytes) -> str:
    boto3.client("s3").put_object(Bucket=BUCKET, Key=key, Body=body)
    return f"s3://{BUCKET}/{key}"


@pytest.fixture
def personalize_prefix(s3_server: str, data_dir: Path) -> str:
    good = (data_dir / "personalize/good.out").read_bytes()
    put("wk48/out/users-1.json.out", good)
    put(
        "wk48/out/users-2.json.out.gz",
        gzip.compress(
            b'{"input":{"userId":"u9"},"output":{"recommendedItems":["i1"]},"error":null}\n'
        ),
    )
    put("wk48/out/_manifest.json", b"{}")
    put("wk48/out_old/users-1.json.out", good)
    return f"s3://{BUCKET}/wk48/out/"


def test_personalize_parts_from_s3(personalize_prefix: str) -> None:
    assert list_prefix(personalize_prefix, (".out", ".out.gz")) == [
        f"{personalize_prefix}users-1.json.out",
        f"{personalize_prefix}users-2.json.out.gz",
    ]
    skips = SkipCounter()
    recs = list(
        iter_recommendations(personalize_prefix, skips=skips, known_items={"i1", "i2", "i3"})
    )
    assert [r.user_id for r in recs] == ["u1", "u2", "u3", "u9"]
    assert skips.total == 4 and skips.skipped == 0


def test_s3_prefix_matches_like_s3_does(personalize_prefix: str) -> None:
    parts = list_prefix(f"s3://{BUCKET}/wk48/out", (".out",))
    assert f"s3://{BUCKET}/wk48/out_old/users-1.json.out" in parts


def test_big_object_is_streamed_in_lines(s3_server: str) -> None:
    lines = [
        b'{"input":{"userId":"%d"},"output":{"recommendedItems":["i1"]},"error":null}\n' % i
        for i in range(30_000)
    ]
    uri = put("big/part.out", b"".join(lines))
    with open_source(uri) as stream:
        assert sum(1 for _ in stream) == 30_000
    recs = list(iter_recommendations(f"s3://{BUCKET}/big/", skips=SkipCounter()))
    assert len(recs) == 30_000


def test_completions_catalog_and_editorial_from_s3(s3_server: str, data_dir: Path) -> None:
    put("hist/a.csv", (data_dir / "completions/good.csv").read_bytes())
    put("hist/b.jsonl.gz", gzip.compress((data_dir / "completions/good.jsonl").read_bytes()))
    skips = SkipCounter()
    assert len(list(iter_completions(f"s3://{BUCKET}/hist/", skips=skips))) == 4 + 3
    catalog = read_catalog(put("catalog.csv", (data_dir / "catalog/good.csv").read_bytes()))
    assert list(catalog) == ["i1", "i2", "i3"]
    uri = put("editorial/2026-W48.toml", (data_dir / "editorial/2026-W48.toml").read_bytes())
    assert read_editorial(uri, "2026-W48", known_items=catalog).for_locale("en-US") == ("i2", "i1")


def test_parquet_from_s3(s3_server: str, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table(
            {"user_id": ["u1"], "content_id": ["i1"], "completed_at": ["2026-11-20T08:00:00Z"]}
        ),
        tmp_path / "c.parquet",
    )
    uri = put("pq/c.parquet", (tmp_path / "c.parquet").read_bytes())
    assert [c.item_id for c in iter_completions(uri, skips=SkipCounter())] == ["i1"]


def test_missing_objects_and_buckets_are_input_errors(s3_server: str) -> None:
    with pytest.raises(InputError, match=f"s3://{BUCKET}/nope.csv: cannot read from S3: no such"):
        read_catalog(f"s3://{BUCKET}/nope.csv")
    with pytest.raises(InputError, match="no such bucket"):
        list_prefix("s3://no-such-bucket/x/", (".out",))
    with pytest.raises(InputError, match="no editorial list for edition 2026-W48"):
        read_editorial(f"s3://{BUCKET}/editorial/missing.toml", "2026-W48")
    with pytest.raises(InputError, match="not an S3 URI"):
        open_source("s3:///key")
