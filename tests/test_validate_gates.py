"""`validate` applies the run's own gates to what it samples of the Personalize output, and
says how much it sampled: what it calls valid, the run does not refuse for those lines."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from calm_mail.demo.data import generate
from tests.test_cli import EDITION, invoke, make_root, mistake, ok


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("gates-data") / "demo"
    generate(data, users=1000, seed=5, edition=EDITION, parts=2)
    return data


@pytest.fixture
def root(tmp_path: Path, demo_data: Path) -> Path:
    return make_root(tmp_path, demo_data, copy_data=True)


def _first_part(root: Path) -> Path:
    folder = root / "data" / "demo" / "personalize" / EDITION
    return sorted(p for p in folder.iterdir() if p.name.endswith((".out", ".out.gz")))[0]


def _truncate_lines(part: Path, *, count: int, within: int) -> None:
    """Cut `count` of the first `within` lines of `part` in half (a truncated write)."""
    packed = part.name.endswith(".gz")
    lines = (gzip.decompress(part.read_bytes()) if packed else part.read_bytes()).splitlines()
    assert len(lines) >= within
    step = within // count
    for i in range(0, count * step, step):
        lines[i] = lines[i][: len(lines[i]) // 2]
    body = b"\n".join(lines) + b"\n"
    part.write_bytes(gzip.compress(body) if packed else body)


def _gate(message: str) -> str:
    return " ".join(message.split())


def test_validate_refuses_what_plan_refuses(root: Path) -> None:
    _truncate_lines(_first_part(root), count=20, within=210)
    planned = mistake(invoke(root, "plan", "weekly_winddown", "--edition", EDITION))
    assert "(inputs.max_bad_share)" in _gate(planned)
    validated = mistake(invoke(root, "validate", "weekly_winddown", "--edition", EDITION))
    assert "(inputs.max_bad_share)" in _gate(validated)
    assert "in the first 1,000 lines of each part" in _gate(validated)
    assert "bad_json 20" in _gate(validated)


def test_a_clean_output_is_valid_and_says_how_much_was_sampled(root: Path) -> None:
    output = _gate(ok(invoke(root, "validate", "weekly_winddown", "--edition", EDITION)))
    found = re.search(r"personalize output: ([\d,]+) lines of (\d+) part\(s\) sampled", output)
    assert found, output
    assert int(found[1].replace(",", "")) >= 900 and found[2] == "2"
    assert "valid" in output
