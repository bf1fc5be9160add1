"""`calm-mail events serve` refuses to start unsafely; the bench runs the real command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
from click.testing import CliRunner, Result

from benchmarks.receiver import bench_receiver
from calm_mail.cli import main
from calm_mail.sandbox.webhook import WebhookSigner
from calm_mail.track.server import free_port, wait_healthy
from tests.track.conftest import sg_event


def serve(tmp_path: Path, *args: str, key: str | None = None) -> Result:
    runner = CliRunner(
        env={
            "SENDGRID_WEBHOOK_PUBLIC_KEY": key,
            "CALM_MAIL_DATABASE_URL": f"sqlite:///{tmp_path / 'l.db'}",
        }
    )
    return runner.invoke(main, ["--root", str(tmp_path), "events", "serve", *args])


def test_serve_refuses_to_start_without_a_public_key(tmp_path: Path):
    result = serve(tmp_path)
    assert result.exit_code == 2
    assert "SENDGRID_WEBHOOK_PUBLIC_KEY" in result.output and "--insecure-no-signature" in (
        result.output
    )


@pytest.mark.parametrize(
    ("args", "key", "message"),
    [
        ((), "bm90IGEga2V5", "public key cannot be read"),
        (("--basic-auth", "onlyuser"), None, "USER:PASS"),
        (("--port", "70000"), None, "70000"),
    ],
)
def test_serve_rejects_bad_settings_without_echoing_secrets(
    tmp_path: Path, args: tuple[str, ...], key: str | None, message: str
):
    result = serve(tmp_path, *args, key=key or WebhookSigner().public_key)
    assert result.exit_code == 2
    assert message in result.output
    assert "bm90IGEga2V5" not in result.output and "onlyuser" not in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_bench_runs_the_real_receiver(ledger_url: str):
    result = bench_receiver(ledger_url, n_events=1_000, batch=250)
    assert result["stored_via_receiver"] == 1_000
    assert isinstance(result["receiver_events_per_s"], int) and result["receiver_events_per_s"] > 0
    assert isinstance(result["bare_insert_events_per_s"], int)


def test_serve_insecure_warns_loudly_and_still_checks_basic_auth(tmp_path: Path):
    port = free_port()
    env = dict(
        os.environ,
        CALM_MAIL_DATABASE_URL=f"sqlite:///{tmp_path / 'l.db'}",
        CALM_MAIL_WEBHOOK_BASIC_AUTH="sendgrid:pa55",
    )
    env.pop("SENDGRID_WEBHOOK_PUBLIC_KEY", None)
    command = [
        sys.executable,
        "-m",
        "calm_mail.cli",
        "--root",
        str(tmp_path),
        "events",
        "serve",
        "--port",
        str(port),
        "--insecure-no-signature",
    ]
    body = orjson.dumps([sg_event(1)])
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE) as process:
        try:
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base, process)
            without = httpx.post(base + "/webhooks/sendgrid", content=body)
            with_auth = httpx.post(
                base + "/webhooks/sendgrid", content=body, auth=("sendgrid", "pa55")
            )
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=10)
    assert (without.status_code, with_auth.status_code) == (401, 200)
    assert with_auth.json()["stored"] == 1
    assert b"signatures are NOT checked" in stderr
    assert b"pa55" not in stderr
