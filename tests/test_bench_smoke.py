"""`make bench`'s harness runs and writes its figures: a smoke test, not a timed assertion."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from benchmarks.child import run_child
from benchmarks.core import DEFAULT_BASELINE, Figure, Goal

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", "--root", str(ROOT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_quick_render_and_plan_write_every_figure_with_its_baseline(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cache = tmp_path / "cache"
    args = ["--quick", "--only", "render,plan", "--users", "2000", "--small-users", "1000"]
    done = _bench(*args, "--cache", str(cache), "--json", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = orjson.loads(out.read_bytes())
    assert set(report["sections"]) == {"data", "plan", "render"}
    figures = {f["key"]: f for f in report["figures"]}
    keys = ("plan.users_per_s", "plan.us_per_user", "plan.peak_rss_mb", "render.emails_per_s")
    for key in keys:
        figure = figures[key]
        assert figure["value"] > 0 and figure["baseline"] > 0 and figure["ratio"] > 0, figure
    for key in ("plan.users_per_s", "plan.us_per_user", "render.emails_per_s"):
        assert figures[key]["status"] in ("PASS", "MISS")
    # The data sets were generated into the given cache and are keyed for reuse.
    assert figures["data.generate_2k_s"]["value"] > 0
    assert (cache / "data-2k" / "bench-key.json").exists()
    assert "Summary" in done.stdout and "plan: users/s" in done.stdout


def _has_baseline_commit() -> bool:
    if shutil.which("git") is None:
        return False
    found = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{DEFAULT_BASELINE}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    return found.returncode == 0


def test_quick_edition_writes_its_figures_next_to_the_baseline_commits(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["--quick", "--only", "edition", "--edition-users", "1000"]
    done = _bench(*args, "--cache", str(tmp_path / "cache"), "--json", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = orjson.loads(out.read_bytes())
    assert list(report["sections"]) == ["edition"]  # it makes its own data set
    edition = report["sections"]["edition"]
    assert edition["details"]["users"] == 1000
    rounds = edition["details"]["rounds"]
    assert rounds["after"][0]["sent"] > 0 and rounds["after"][0]["failed_or_unknown"] == 0
    figures = {f["key"]: f for f in report["figures"]}
    whole = figures["edition.cpu_us_per_recipient"]
    assert whole["value"] > 0 and figures["edition.plan_us_per_user"]["value"] > 0
    stages = [k for k in figures if k.startswith("edition.stage")]
    assert stages, "the per-stage figures, or the row saying the runner has none"
    assert "Whole edition" in done.stdout
    if not _has_baseline_commit():
        assert whole["baseline"] is None and whole["note"].startswith("no baseline:")
        pytest.skip(f"git or commit {DEFAULT_BASELINE} missing: the baseline part is unchecked")
    assert whole["baseline"] > 0 and whole["ratio"] > 0, whole
    assert whole["baseline_label"].startswith(DEFAULT_BASELINE[:7])
    assert len(rounds["before"]) == len(rounds["after"]) == 1
    assert figures["edition.plan_difference_1m_users_cpu_s"]["value"] is not None


def test_an_unknown_section_is_a_usage_error() -> None:
    done = _bench("--only", "plan,nonsense")
    assert done.returncode == 2
    assert "nonsense" in done.stderr and "receiver" in done.stderr


def test_a_child_reports_its_own_peak_memory_not_its_parents() -> None:
    # ru_maxrss survives fork+exec on Linux; a child of a large parent must not inherit it.
    ballast = b"\1" * (300 * 1024 * 1024)  # written, so resident
    child = run_child("idle")
    assert 0 < child["peak_rss_kb"] < 200 * 1024
    assert len(ballast) > 0


@pytest.mark.parametrize(
    ("value", "baseline", "goal", "status", "ratio"),
    [
        (25_000.0, 50_000.0, Goal(target=20_000, text=""), "PASS", 0.5),
        (15_000.0, 50_000.0, Goal(target=20_000, text=""), "MISS", 0.3),
        (3.0, 1.0, Goal(target=2.5, at_least=False, on_ratio=True, text=""), "MISS", 3.0),
        (2.0, 1.0, Goal(target=2.5, at_least=False, on_ratio=True, text=""), "PASS", 2.0),
        (2.0, None, None, "-", None),
        (None, 1.0, Goal(target=1, text=""), "SKIP", None),
    ],
)
def test_figure_ratio_and_status(
    value: float | None,
    baseline: float | None,
    goal: Goal | None,
    status: str,
    ratio: float | None,
) -> None:
    figure = Figure(key="k", label="k", value=value, unit="", baseline=baseline, goal=goal)
    assert figure.status == status
    assert figure.ratio == (None if ratio is None else pytest.approx(ratio))
