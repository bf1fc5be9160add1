"""Delivery tests: the real sandbox over HTTP, the real ledger, the real composer."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from calm_mail.demo.data import generate
from calm_mail.edition import Edition
from calm_mail.sandbox import SandboxConfig, SandboxHandle, run_sandbox
from tests.compose.conftest import campaign, catalog, composer, delivery  # noqa: F401

KEY = "SG.test-key"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sandbox_factory() -> Iterator[object]:
    """Start sandboxes with given options; all are stopped after the test."""
    started: list[object] = []
    contexts = []

    def start(**options: object) -> SandboxHandle:
        ctx = run_sandbox(SandboxConfig(**options))  # type: ignore[arg-type]
        handle = ctx.__enter__()
        contexts.append(ctx)
        started.append(handle)
        return handle

    yield start
    for ctx in reversed(contexts):
        ctx.__exit__(None, None, None)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Edition]:
    root = tmp_path_factory.mktemp("project")
    for folder in ("campaigns", "rules", "templates"):
        shutil.copytree(REPO / folder, root / folder)
    edition = Edition.of(datetime.now(UTC).date()).previous()  # send times in the past: valid
    generate(root / "data" / "demo", users=150, seed=5, edition=edition.key)
    return root, edition


def sender_env(
    root: Path, ledger_url: str, sandbox_url: str, *, key: str = KEY, **extra: str
) -> dict[str, str]:
    """The environment of a `calm-mail run` that sends to a sandbox (for subprocesses)."""
    return {
        **os.environ,
        "CALM_MAIL_ROOT": str(root),
        "CALM_MAIL_DATABASE_URL": ledger_url,
        "SENDGRID_API_KEY": key,
        "SENDGRID_API_HOST": sandbox_url,
        "NO_PROXY": "127.0.0.1,localhost",
        **extra,
    }


def run_command(edition: Edition, *options: str) -> list[str]:
    """`calm-mail run weekly_winddown --edition E ...` as a subprocess argv."""
    return [
        sys.executable,
        "-m",
        "calm_mail.cli",
        "run",
        "weekly_winddown",
        "--edition",
        edition.key,
        *options,
    ]
