"""Fixtures for the input readers: fixture-file paths, small generated data, the S3 server."""

from __future__ import annotations

from pathlib import Path

import pytest

from calm_mail.inputs.generate import generate
from tests.s3server import s3_server  # noqa: F401

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated data set (300 users x 40 recs, 3 parts), made once per session."""
    out = tmp_path_factory.mktemp("demo")
    generate(out, users=300, seed=7, edition="2026-W48", recs=40, parts=3)
    return out
