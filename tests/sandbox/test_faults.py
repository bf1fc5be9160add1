"""Fault injection: seeded and repeatable; 5xx and drops store nothing unless told to."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest
from click.testing import CliRunner

from calm_mail.commands.sandbox import parse_outage
from calm_mail.commands.sandbox import sandbox as sandbox_command
from calm_mail.errors import UsageError
from calm_mail.sandbox import SandboxConfig, SandboxHandle, run_sandbox
from tests.sandbox.conftest import AUTH, mail


def outcomes(handle: SandboxHandle, n: int) -> Counter[str]:
    """Send n mails sequentially on fresh connections; count statuses and dropped ones."""
    counts: Counter[str] = Counter()
    with httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as http:
        for i in range(n):
            try:
                response = http.post(
                    f"{handle.url}/v3/mail/send", headers=AUTH, json=mail(to=f"u{i}@example.com")
                )
                counts[str(response.status_code)] += 1
            except (httpx.RemoteProtocolError, httpx.ReadError):
                counts["dropped"] += 1
    return counts


def test_fault_counts_are_seeded_and_roughly_as_configured() -> None:
    config = SandboxConfig(seed=7, fail_rate=0.2, drop_rate=0.1)
    runs = []
    for _ in range(2):
        with run_sandbox(config) as handle:
            counts = outcomes(handle, 120)
            assert len(handle.messages()) == counts["202"]
            runs.append(counts)
    assert runs[0] == runs[1]  # exactly repeatable for a seed
    counts = runs[0]
    assert 12 <= counts["500"] + counts["503"] <= 40
    assert counts["500"] > 0 and counts["503"] > 0
    assert 4 <= counts["dropped"] <= 24
    assert counts["202"] == 120 - counts["500"] - counts["503"] - counts["dropped"]


def test_dropped_connection_is_a_client_error_and_stores_nothing() -> None:
    with run_sandbox(SandboxConfig(drop_rate=1.0)) as handle, httpx.Client() as http:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            http.post(f"{handle.url}/v3/mail/send", headers=AUTH, json=mail())
        assert handle.messages() == []
        assert handle.stats()["by_status"]["dropped"] == 1


def test_accept_then_fail_stores_the_message() -> None:
    with run_sandbox(SandboxConfig(accept_then_fail_rate=1.0, seed=1)) as handle:
        counts = outcomes(handle, 20)
        assert counts["500"] + counts["dropped"] == 20
        assert counts["500"] > 0 and counts["dropped"] > 0
        assert len(handle.messages()) == 20  # fate unknown to the client, yet kept


def test_latency_is_injected_without_blocking() -> None:
    with run_sandbox(SandboxConfig(latency_ms=200)) as handle, httpx.Client() as http:
        start = time.monotonic()
        http.post(f"{handle.url}/v3/mail/send", headers=AUTH, json=mail())
        assert time.monotonic() - start >= 0.2

        async def burst() -> float:
            async with httpx.AsyncClient() as client:
                import asyncio

                begin = time.monotonic()
                await asyncio.gather(
                    *(
                        client.post(
                            f"{handle.url}/v3/mail/send",
                            headers=AUTH,
                            json=mail(to=f"b{i}@example.com"),
                        )
                        for i in range(20)
                    )
                )
                return time.monotonic() - begin

        import asyncio

        assert asyncio.run(burst()) < 1.5  # 20 x 200 ms would take 4 s if sleeps blocked


def test_outage_window_answers_503() -> None:
    with run_sandbox(SandboxConfig(outages=((0.0, 0.4),))) as handle, httpx.Client() as http:
        during = http.post(f"{handle.url}/v3/mail/send", headers=AUTH, json=mail())
        assert during.status_code == 503
        assert during.json()["errors"][0]["message"] == "service unavailable"
        time.sleep(0.45)
        assert http.post(f"{handle.url}/v3/mail/send", headers=AUTH, json=mail()).status_code == 202
        assert len(handle.messages()) == 1


def test_rate_limit_headers_and_reset() -> None:
    with run_sandbox(SandboxConfig(rate_limit=3)) as handle, httpx.Client() as http:
        responses = [
            http.post(f"{handle.url}/v3/mail/send", headers=AUTH, json=mail(to=f"r{i}@example.com"))
            for i in range(6)
        ]
        codes = [r.status_code for r in responses]
        assert codes.count(429) >= 2
        limited = next(r for r in responses if r.status_code == 429)
        assert limited.headers["X-RateLimit-Remaining"] == "0"
        reset = int(limited.headers["X-RateLimit-Reset"])
        assert time.time() - 1 <= reset <= time.time() + 1.5
        assert len(handle.messages()) == codes.count(202)


def test_parse_outage() -> None:
    assert parse_outage("5:10") == (5.0, 10.0)
    for bad in ("5", "10:5", "a:b", "-1:3"):
        with pytest.raises(UsageError):
            parse_outage(bad)


def test_cli_refuses_bad_options() -> None:
    result = CliRunner().invoke(sandbox_command, ["--fail-rate", "2"])
    assert result.exit_code != 0
    assert "between 0 and 1" in str(result.exception) + result.output
