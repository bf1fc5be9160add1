"""Fixtures for the preview tests: a project root in a tmp folder with the shipped campaign,
rules and templates, and a demo data set made by the real generator."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from calm_mail.campaign import Campaign, load_campaign
from calm_mail.cli import main
from calm_mail.edition import Edition

REPO = Path(__file__).resolve().parents[2]
EDITION = Edition.parse("2026-W10")
USERS = 800
CAMPAIGN = "weekly_winddown"


def make_root(target: Path) -> Path:
    """A project root: the repo's campaigns/, rules/, templates/ and a generated data/demo."""
    from calm_mail.demo.data import generate

    for folder in ("campaigns", "rules", "templates"):
        shutil.copytree(REPO / folder, target / folder)
    generate(target / "data" / "demo", users=USERS, seed=7, edition=EDITION.key)
    return target


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only for tests: copy it (`copy_root`) before editing anything in it."""
    return make_root(tmp_path_factory.mktemp("preview-root"))


@pytest.fixture
def copy_root(demo_root: Path, tmp_path: Path) -> Path:
    """A private copy of the demo root this test may edit."""
    target = tmp_path / "root"
    shutil.copytree(demo_root, target)
    return target


@pytest.fixture(scope="session")
def campaign(demo_root: Path) -> Campaign:
    return load_campaign(CAMPAIGN, demo_root)


Cli = Callable[..., Result]


@pytest.fixture
def cli(demo_root: Path, tmp_path: Path) -> Cli:
    """Run `calm-mail --root <demo root> ...` in-process; the ledger is this test's own."""
    env = {"CALM_MAIL_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}

    def run(*args: str, root: Path = demo_root) -> Result:
        runner = CliRunner()
        return runner.invoke(main, ["--root", str(root), *args], env=env, catch_exceptions=False)

    return run


@dataclass(frozen=True)
class DryRun:
    """A dry-run edition of the demo root: its outbox and the manifest rows by user id."""

    outbox: Path
    ledger_url: str
    rows: dict[str, dict[str, Any]]


@pytest.fixture(scope="session")
def dry_run(campaign: Campaign, tmp_path_factory: pytest.TempPathFactory) -> DryRun:
    """`calm-mail run --dry-run` of the edition, as the real send composes it."""
    from calm_mail.ops.pipeline import RunOptions, run_edition
    from calm_mail.store import Ledger

    folder = tmp_path_factory.mktemp("dry-run")
    url = f"sqlite:///{folder / 'ledger.db'}"
    outbox = folder / "outbox"
    with Ledger.connect(url) as ledger:
        run_edition(campaign, EDITION, ledger, RunOptions(dry_run=True, outbox=outbox))
    rows = {}
    for line in (outbox / "manifest.jsonl").read_bytes().splitlines():
        row = orjson.loads(line)
        rows[row["user_id"]] = row
    return DryRun(outbox=outbox, ledger_url=url, rows=rows)
