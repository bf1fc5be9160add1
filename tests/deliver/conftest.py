"""Delivery tests: the real sandbox over HTTP, the real ledger, the real composer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from calm_mail.sandbox import SandboxConfig, SandboxHandle, run_sandbox
from tests.compose.conftest import campaign, catalog, composer, delivery  # noqa: F401

KEY = "SG.test-key"


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
