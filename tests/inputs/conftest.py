"""Fixtures for the input readers: fixture-file paths, small generated data, the S3 server."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import strategies as st

from calm_mail.demo.data import generate
from tests.s3server import s3_server  # noqa: F401

DATA = Path(__file__).resolve().parent.parent / "data"


def line(user: str, items: list[str], scores: list[float] | None = None) -> bytes:
    """A Personalize output line as Personalize writes it (compact, keys in its order)."""
    output: dict[str, object] = {"recommendedItems": items}
    if scores is not None:
        output["scores"] = scores
    return orjson.dumps({"input": {"userId": user}, "output": output, "error": None}) + b"\n"


# What breaks a line's usual shape, planted at JSON seams or anywhere by the shape tests
FRAGMENTS = st.sampled_from(
    [b" ", b'"error":"x",', b'"error":null,', b',"error":1', b"\\", b'"', b"}", b"{", b"]",
     b"[", b"\r", b"\n", b"\x01", b"\x7f", "é".encode(), b'"userId":"z",', b"null", b'""',
     b',"scores":[1]', b":", b"\\u0041"]
)  # fmt: skip


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated data set (300 users x 40 recs, 3 parts), made once per session."""
    out = tmp_path_factory.mktemp("demo")
    generate(out, users=300, seed=7, edition="2026-W48", recs=40, parts=3)
    return out
