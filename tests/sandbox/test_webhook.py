"""Event Webhook: signed like SendGrid, verified with the official helper, retried, duplicated."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sendgrid.helpers.eventwebhook import EventWebhook, EventWebhookHeader

from calm_mail.sandbox import (
    ArmBehaviour,
    BehaviourModel,
    Recipient,
    SandboxConfig,
    WebhookSigner,
    run_sandbox,
)
from tests.sandbox.conftest import AUTH, Receiver, mail

ALWAYS = ArmBehaviour(
    open_rate=1.0, click_rate=1.0, unsubscribe_rate=0.0, spam_rate=0.0, machine_open_share=0.0
)
NEVER = ArmBehaviour(open_rate=0.0, click_rate=0.0, unsubscribe_rate=0.0, spam_rate=0.0)


def send_all(url: str, bodies: list[dict[str, Any]]) -> list[str]:
    with httpx.Client(timeout=10) as http:
        ids = []
        for body in bodies:
            response = http.post(f"{url}/v3/mail/send", json=body, headers=AUTH)
            assert response.status_code == 202, response.text
            ids.append(response.headers["X-Message-Id"])
        return ids


def wait_for(receiver: Receiver, predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate(receiver.events()):
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out; got {len(receiver.events())} events")


def with_args(to: str, **args: str) -> dict[str, Any]:
    body = mail(to=to, categories=["weekly_winddown"])
    body["personalizations"][0]["custom_args"] = {"delivery_id": to.split("@")[0], **args}
    return body


def test_signed_bytes_match_sendgrids_own_test_vector() -> None:
    """The sandbox signs SHA-256(timestamp + raw body); SendGrid's vector must verify that way."""
    key = (
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3G"
        "Rqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
    )
    signature = (
        "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqH"
        "h89M15TluLtEZtM="
    )
    body = (
        json.dumps(
            [
                {
                    "email": "hello@world.com",
                    "event": "dropped",
                    "reason": "Bounced Address",
                    "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
                    "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-"
                    "18-"
                    "5F5FC76C-9.0",
                    "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
                    "timestamp": 1600112492,
                }
            ],
            sort_keys=True,
            separators=(",", ":"),
        )
        + "\r\n"
    )
    public = serialization.load_der_public_key(base64.b64decode(key))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert isinstance(public.curve, ec.SECP256R1)
    # The same byte layout WebhookSigner.headers signs: str(timestamp) + raw body.
    public.verify(
        base64.b64decode(signature), b"1600112502" + body.encode(), ec.ECDSA(hashes.SHA256())
    )
    signer = WebhookSigner.generate()
    headers = signer.headers(body.encode(), 1600112502)
    assert headers[EventWebhookHeader.TIMESTAMP] == "1600112502"
    assert (
        EventWebhook(signer.public_key_b64).verify_signature(
            body, headers[EventWebhookHeader.SIGNATURE], "1600112502"
        )
        is True
    )
    assert (
        EventWebhook(key).verify_signature(
            body, headers[EventWebhookHeader.SIGNATURE], "1600112502"
        )
        is False
    )


def test_signed_batches_verify_with_the_official_helper(receiver: Receiver) -> None:
    signer = WebhookSigner.generate()
    config = SandboxConfig(
        webhook_url=receiver.url,
        behaviour=BehaviourModel(default=ALWAYS),
        webhook_duplicate_rate=0.0,
    )
    with run_sandbox(config, signer=signer) as handle:
        assert handle.public_key_b64 == signer.public_key_b64
        [message_id] = send_all(handle.url, [with_args("ana@example.com", arm="a")])
        wait_for(
            receiver,
            lambda events: (
                {"processed", "delivered", "open", "click"} <= {e["event"] for e in events}
            ),
        )
    verifier = EventWebhook(handle.public_key_b64)
    for post in receiver.accepted():
        assert post.body.endswith(b"\r\n")
        assert (
            verifier.verify_signature(
                post.body.decode(),
                post.headers[EventWebhookHeader.SIGNATURE],
                post.headers[EventWebhookHeader.TIMESTAMP],
            )
            is True
        )
        assert (
            verifier.verify_signature(
                post.body.decode() + " ",
                post.headers[EventWebhookHeader.SIGNATURE],
                post.headers[EventWebhookHeader.TIMESTAMP],
            )
            is False
        )
    events = {e["event"]: e for e in receiver.events()}
    delivered, opened, clicked = events["delivered"], events["open"], events["click"]
    assert delivered["sg_message_id"].startswith(f"{message_id}.filterdrecv-")
    assert delivered["delivery_id"] == "ana" and delivered["arm"] == "a"  # custom args on top
    assert delivered["category"] == "weekly_winddown"
    assert delivered["timestamp"] >= events["processed"]["timestamp"]
    assert opened["sg_machine_open"] is False
    assert opened["timestamp"] >= delivered["timestamp"] + 60  # simulated, not waited for
    assert clicked["url"] == "https://app.example/x"
    ids = [e["sg_event_id"] for e in receiver.events()]
    assert len(set(ids)) == len(ids)


def test_addresses_choose_their_fate(receiver: Receiver) -> None:
    config = SandboxConfig(
        webhook_url=receiver.url,
        behaviour=BehaviourModel(default=NEVER),
        webhook_duplicate_rate=0.0,
    )
    with run_sandbox(config) as handle:
        send_all(
            handle.url,
            [
                mail(to=a)
                for a in (
                    "bounce1@example.com",
                    "block1@example.com",
                    "drop1@example.com",
                    "defer1@example.com",
                    "fine@example.com",
                )
            ],
        )
        wait_for(receiver, lambda events: len(events) >= 11)
    by_email: dict[str, list[dict[str, Any]]] = {}
    for event in receiver.events():
        by_email.setdefault(event["email"], []).append(event)
    kinds = {email: sorted(e["event"] for e in evs) for email, evs in by_email.items()}
    assert kinds["bounce1@example.com"] == ["bounce", "processed"]
    assert kinds["block1@example.com"] == ["bounce", "processed"]
    assert kinds["drop1@example.com"] == ["dropped", "processed"]
    assert kinds["defer1@example.com"] == ["deferred", "delivered", "processed"]
    assert kinds["fine@example.com"] == ["delivered", "processed"]
    types = {e["email"]: e.get("type") for e in receiver.events() if e["event"] == "bounce"}
    assert types == {"bounce1@example.com": "bounce", "block1@example.com": "blocked"}


def test_retries_after_receiver_errors(receiver: Receiver) -> None:
    receiver.fail_first = 2
    config = SandboxConfig(
        webhook_url=receiver.url, webhook_duplicate_rate=0.0, webhook_retry_base_s=0.02
    )
    with run_sandbox(config) as handle:
        send_all(handle.url, [mail()])
        wait_for(receiver, lambda events: len(events) >= 2)
        assert handle.wait_webhooks_idle(5)
        assert handle.stats()["webhook"]["retries"] >= 2
    assert receiver.failed == 2


def test_duplicates_and_disorder_and_arms(receiver: Receiver) -> None:
    config = SandboxConfig(
        webhook_url=receiver.url,
        seed=5,
        webhook_duplicate_rate=0.5,
        webhook_batch_size=7,
        behaviour=BehaviourModel(arms={"hot": ALWAYS, "cold": NEVER}),
    )
    bodies = [with_args(f"u{i}@example.com", arm="hot" if i % 2 else "cold") for i in range(40)]
    with run_sandbox(config) as handle:
        send_all(handle.url, bodies)
        assert handle.wait_webhooks_idle(10)
    events = receiver.events()
    ids = Counter(e["sg_event_id"] for e in events)
    assert max(ids.values()) >= 2  # some batches arrived twice
    opens = Counter(
        e["arm"] for e in {e["sg_event_id"]: e for e in events}.values() if e["event"] == "open"
    )
    assert opens == {"hot": 20}
    order = [(e["email"], e["timestamp"]) for e in events]
    assert order != sorted(order, key=lambda pair: pair[1])  # not in time order


def test_propensity_hook_and_machine_opens_are_deterministic(receiver: Receiver) -> None:
    def likes_even(recipient: Recipient) -> float:
        return 0.0 if int(recipient.custom_args["delivery_id"][1:]) % 2 else 1.0

    behaviour = BehaviourModel(
        default=ArmBehaviour(open_rate=1.0, machine_open_share=0.5), propensity=likes_even
    )
    config = SandboxConfig(
        webhook_url=receiver.url, seed=9, webhook_duplicate_rate=0.0, behaviour=behaviour
    )
    with run_sandbox(config) as handle:
        send_all(handle.url, [with_args(f"u{i}@example.com") for i in range(30)])
        assert handle.wait_webhooks_idle(10)
    opens = [e for e in receiver.events() if e["event"] == "open"]
    assert {int(e["delivery_id"][1:]) % 2 for e in opens} == {0}
    assert len(opens) == 15
    machine = sorted(e["email"] for e in opens if e["sg_machine_open"])
    assert 0 < len(machine) < 15
    assert all(e["useragent"] == "Mozilla/5.0" for e in opens if e["sg_machine_open"])
    first_run = machine
    receiver.posts.clear()
    with run_sandbox(config) as handle:
        send_all(handle.url, [with_args(f"u{i}@example.com") for i in range(30)])
        assert handle.wait_webhooks_idle(10)
    again = sorted(
        e["email"] for e in receiver.events() if e["event"] == "open" and e["sg_machine_open"]
    )
    assert again == first_run


def test_scheduled_mail_posts_events_only_once_released(receiver: Receiver) -> None:
    config = SandboxConfig(
        webhook_url=receiver.url,
        webhook_duplicate_rate=0.0,
        behaviour=BehaviourModel(default=NEVER),
    )
    with run_sandbox(config) as handle, httpx.Client() as http:
        batch_id = http.post(f"{handle.url}/v3/mail/batch", headers=AUTH).json()["batch_id"]
        send_at = int(time.time()) + 3600
        send_all(handle.url, [mail(batch_id=batch_id, send_at=send_at)])
        time.sleep(0.3)
        assert receiver.events() == []
        handle.advance_clock(3600)
        wait_for(receiver, lambda events: len(events) >= 2)
    delivered = next(e for e in receiver.events() if e["event"] == "delivered")
    assert send_at <= delivered["timestamp"] <= send_at + 10


def test_key_file_is_created_then_reused(tmp_path: Any) -> None:
    path = tmp_path / "webhook.pem"
    first = WebhookSigner.from_file(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert WebhookSigner.from_file(path).public_key_b64 == first.public_key_b64
    assert "PRIVATE" not in repr(first)
