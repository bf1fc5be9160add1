"""`calm-mail sandbox` runs until Ctrl-C and prints how to point calm-mail at it."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx

from tests.sandbox.conftest import AUTH, mail


def test_cli_serves_until_interrupted() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "calm_mail.cli", "sandbox", "--port", "0", "--seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("SendGrid sandbox listening on http://127.0.0.1:")
        url = first.rsplit(" ", 1)[1].strip()
        key_line = proc.stdout.readline()
        assert key_line.startswith("Event Webhook public key (base64 DER): MFkw")
        rest = [proc.stdout.readline() for _ in range(4)]
        assert any(f"SENDGRID_API_HOST={url}" in line for line in rest)
        response = httpx.post(f"{url}/v3/mail/send", json=mail(), headers=AUTH)
        assert response.status_code == 202
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert proc.returncode == 0
