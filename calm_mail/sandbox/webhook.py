"""The sandbox's Event Webhook: what recipients do, and how SendGrid tells you about it.

- `recipient_events` turns one released recipient into SendGrid-shaped events (processed,
  delivered / deferred / bounce / blocked / dropped, open with `sg_machine_open`, click,
  unsubscribe or group_unsubscribe, spamreport) with timestamps on the sandbox clock.
  Addresses whose local part starts with `drop`, `bounce`, `block` or `defer` get those fates;
  engagement follows the arm's `ArmBehaviour`, deterministic for a seed and recipient.
- `WebhookSigner` signs like SendGrid: ECDSA P-256 over SHA-256(timestamp + raw body), base64
  DER in `X-Twilio-Email-Event-Webhook-Signature`; the public key is base64 DER
  SubjectPublicKeyInfo, as SendGrid shows it.
- `WebhookEmitter` posts JSON-array batches, retries non-2xx and connection errors with capped
  exponential backoff, duplicates a share of batches and shuffles events, as SendGrid may.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import heapq
import logging
import os
import random
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from calm_mail.sandbox.config import BehaviourModel, Recipient, SandboxConfig
from calm_mail.sandbox.store import StoredMessage

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
_HREF = re.compile(r"""href=["'](https?://[^"'\s>]+)["']""", re.IGNORECASE)
_HUMAN_AGENTS = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Mobile/15E148",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
)
_MACHINE_AGENT = "Mozilla/5.0"


# --------------------------------------------------------------------------- signing


class WebhookSigner:
    """An ECDSA P-256 key pair that signs webhook bodies exactly as SendGrid does."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey | None = None) -> None:
        private_key = private_key or ec.generate_private_key(ec.SECP256R1())
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ValueError("the Event Webhook key must be on the P-256 curve")
        self._key = private_key

    def __repr__(self) -> str:  # the private key never reaches logs
        return f"WebhookSigner(public_key={self.public_key_b64[:16]}...)"

    @classmethod
    def generate(cls) -> WebhookSigner:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_file(cls, path: str | Path) -> WebhookSigner:
        """Load a PEM private key, or create one there (mode 0600) when the file is missing."""
        path = Path(path)
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{path}: not an EC private key")
            return cls(key)
        signer = cls.generate()
        pem = signer._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        return signer

    @property
    def public_key_b64(self) -> str:
        """Base64 DER SubjectPublicKeyInfo, no PEM armour (what SendGrid's settings show)."""
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode("ascii")

    @property
    def public_key(self) -> str:
        """The same as `public_key_b64` (the name the receiver's settings use)."""
        return self.public_key_b64

    def signature(self, body: bytes, timestamp: int | str) -> str:
        """base64(DER(ECDSA-SHA256(timestamp bytes + raw body bytes))), as SendGrid signs."""
        der = self._key.sign(str(timestamp).encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(der).decode("ascii")

    def headers(self, body: bytes, timestamp: int | str | None = None) -> dict[str, str]:
        """The two signature headers for `body` (the timestamp defaults to now)."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        return {SIGNATURE_HEADER: self.signature(body, stamp), TIMESTAMP_HEADER: stamp}


# --------------------------------------------------------------------------- events


def sg_message_id(message_id: str, index: int) -> str:
    """`<X-Message-Id>.filterdrecv-...`, the observed shape of an event's sg_message_id."""
    suffix = hashlib.sha1(message_id.encode()).hexdigest()
    return (
        f"{message_id}.filterdrecv-p3mdw1-{suffix[:10]}-{suffix[10:15]}-18-"
        f"{suffix[15:23].upper()}-{index}.0"
    )


def _recipient_rng(seed: int, email: str, custom_args: dict[str, str]) -> random.Random:
    """Same seed, address and custom args -> same behaviour, whatever the arrival order."""
    key = f"{seed}\x00{email.lower()}\x00{sorted(custom_args.items())}".encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


class _EventMaker:
    """Builds the events of one recipient; fields follow shared/reference/sendgrid.md §3.2."""

    def __init__(self, message: StoredMessage, index: int, email: str) -> None:
        p = message.personalizations[index]
        self.message = message
        self.email = email
        self.custom_args = p.custom_args
        self.sg_message_id = sg_message_id(message.message_id, index)
        self.events: list[dict[str, Any]] = []

    def add(self, kind: str, timestamp: float, **fields: Any) -> dict[str, Any]:
        event: dict[str, Any] = dict(self.custom_args)  # reserved keys below win on a clash
        event.update(
            email=self.email,
            timestamp=int(timestamp),
            event=kind,
            sg_event_id=secrets.token_urlsafe(18),
            sg_message_id=self.sg_message_id,
        )
        if kind in ("processed", "dropped", "delivered", "deferred", "bounce"):
            event["smtp-id"] = f"<{self.message.message_id}@ismtpd0001p1iad2.sendgrid.net>"
        if self.message.categories and kind not in ("group_unsubscribe", "group_resubscribe"):
            cats = self.message.categories
            event["category"] = cats[0] if len(cats) == 1 else list(cats)
        if self.message.asm_group_id is not None and kind not in ("spamreport", "unsubscribe"):
            event["asm_group_id"] = self.message.asm_group_id
        event.update(fields)
        self.events.append(event)
        return event


def recipient_events(
    message: StoredMessage,
    index: int,
    email: str,
    *,
    released_at: float,
    behaviour: BehaviourModel,
    seed: int,
) -> list[dict[str, Any]]:
    """Every event this recipient will cause, in time order of their simulated timestamps."""
    p = message.personalizations[index]
    rng = _recipient_rng(seed, email, p.custom_args)
    maker = _EventMaker(message, index, email)
    local = email.split("@", 1)[0].lower()
    maker.add("processed", released_at)
    if local.startswith("drop"):
        maker.add("dropped", released_at, reason="Bounced Address", status="5.0.0")
        return maker.events
    if local.startswith(("bounce", "block")):
        blocked = local.startswith("block")
        maker.add(
            "bounce",
            released_at + rng.uniform(1, 5),
            ip="149.72.1.1",
            tls=1,
            type="blocked" if blocked else "bounce",
            status="5.7.1" if blocked else "5.1.1",
            bounce_classification="Reputation" if blocked else "Invalid Address",
            reason=(
                "550 5.7.1 Message rejected due to local policy"
                if blocked
                else "550 5.1.1 The email account that you tried to reach does not exist."
            ),
        )
        return maker.events
    delivered_at = released_at + rng.uniform(1, 5)
    if local.startswith("defer") or rng.random() < behaviour.deferred_rate:
        maker.add(
            "deferred",
            delivered_at,
            attempt="1",
            ip="149.72.1.1",
            response="421 4.7.0 Try again later",
            reason="421 4.7.0 Try again later",
        )
        delivered_at += rng.uniform(300, 1800)
    maker.add("delivered", delivered_at, ip="149.72.1.1", tls=1, response="250 OK")
    _engagement(maker, rng, behaviour, delivered_at, p.subject)
    return maker.events


def _engagement(
    maker: _EventMaker, rng: random.Random, model: BehaviourModel, delivered_at: float, subject: str
) -> None:
    """Opens, clicks, unsubscribes and spam reports after delivery (simulated time)."""
    recipient = Recipient(
        email=maker.email,
        custom_args=maker.custom_args,
        message_id=maker.message.message_id,
        subject=subject,
        categories=maker.message.categories,
    )
    arm, multiplier = model.for_recipient(recipient)
    draws = [rng.random() for _ in range(5)]
    if draws[0] < min(1.0, arm.open_rate * multiplier):
        machine = draws[1] < arm.machine_open_share
        opened_at = delivered_at + (
            rng.uniform(1, 60) if machine else min(60 + rng.expovariate(1 / 3600), 3 * 86400)
        )
        maker.add(
            "open",
            opened_at,
            sg_machine_open=machine,
            ip=_ip(rng, machine),
            useragent=_MACHINE_AGENT if machine else rng.choice(_HUMAN_AGENTS),
        )
        if not machine and draws[2] < min(1.0, arm.click_rate * multiplier):
            url = _click_url(maker.message, rng)
            maker.add(
                "click",
                opened_at + rng.uniform(5, 120),
                url=url,
                ip=_ip(rng, False),
                url_offset={"index": 0, "type": "html"},
                useragent=rng.choice(_HUMAN_AGENTS),
            )
    if draws[3] < arm.unsubscribe_rate:
        at = delivered_at + rng.uniform(60, 7200)
        if maker.message.asm_group_id is not None:
            maker.add(
                "group_unsubscribe", at, ip=_ip(rng, False), useragent=rng.choice(_HUMAN_AGENTS)
            )
        else:
            maker.add("unsubscribe", at)
    if draws[4] < arm.spam_rate:
        maker.add("spamreport", delivered_at + rng.uniform(60, 86400))


def _ip(rng: random.Random, machine: bool) -> str:
    # Apple's proxies for machine opens; TEST-NET-3 for people (never real addresses).
    return (
        f"17.58.{rng.randrange(256)}.{rng.randrange(256)}"
        if machine
        else f"203.0.113.{rng.randrange(1, 255)}"
    )


def _click_url(message: StoredMessage, rng: random.Random) -> str:
    urls = _HREF.findall(message.html or "")[:50]
    return rng.choice(urls) if urls else "https://example.com/"


# --------------------------------------------------------------------------- delivery


class WebhookEmitter:
    """Posts due events in signed JSON-array batches from the sandbox's event loop."""

    def __init__(
        self, config: SandboxConfig, signer: WebhookSigner, now: Callable[[], float]
    ) -> None:
        self._config = config
        self._signer = signer
        self._now = now
        self._rng = random.Random(config.seed + 1)
        self._due: list[tuple[float, int, dict[str, Any]]] = []
        self._seq = 0
        self._outbox: asyncio.Queue[list[dict[str, Any]]] | None = None
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight = 0
        self.stats: Counter[str] = Counter()

    @property
    def enabled(self) -> bool:
        return self._config.webhook_url is not None

    def add(self, events: list[dict[str, Any]], *, released_at: float) -> None:
        """Queue one recipient's events: now in simulate mode, else at their own timestamps."""
        for event in events:
            self._seq += 1
            due = released_at if self._config.simulate else float(event["timestamp"])
            heapq.heappush(self._due, (due, self._seq, event))
        self.stats["events"] += len(events)
        if self._wake is not None and len(self._due) >= self._config.webhook_batch_size:
            self._wake.set()

    def idle(self) -> bool:
        """Nothing due is waiting and nothing is being posted."""
        now = self._now()
        nothing_due = not self._due or self._due[0][0] > now
        return (
            nothing_due and self._inflight == 0 and (self._outbox is None or self._outbox.empty())
        )

    async def start(self) -> None:
        self._outbox = asyncio.Queue()
        self._wake = asyncio.Event()
        self._client = httpx.AsyncClient(timeout=self._config.webhook_timeout_s)
        self._tasks = [asyncio.create_task(self._batcher())]
        self._tasks += [
            asyncio.create_task(self._poster())
            for _ in range(max(1, self._config.webhook_concurrency))
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()

    async def _batcher(self) -> None:
        assert self._outbox is not None and self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._config.webhook_flush_ms / 1000)
            self._wake.clear()
            self._flush()

    def _flush(self) -> None:
        assert self._outbox is not None
        now, ready = self._now(), []
        while self._due and self._due[0][0] <= now:
            ready.append(heapq.heappop(self._due)[2])
        if self._config.webhook_shuffle:
            self._rng.shuffle(ready)
        size = max(1, self._config.webhook_batch_size)
        for start in range(0, len(ready), size):
            self._outbox.put_nowait(ready[start : start + size])

    async def _poster(self) -> None:
        assert self._outbox is not None
        while True:
            batch = await self._outbox.get()
            self._inflight += 1
            try:
                await self._deliver(batch)
                if self._rng.random() < self._config.webhook_duplicate_rate:
                    self.stats["duplicated_batches"] += 1
                    self._outbox.put_nowait(batch)  # posted again, after later batches
            finally:
                self._inflight -= 1

    async def _deliver(self, batch: list[dict[str, Any]]) -> None:
        """POST one batch until a 2xx or `webhook_max_attempts`; SendGrid's body has CRLF."""
        assert self._config.webhook_url is not None
        body = orjson.dumps(batch) + b"\r\n"
        for attempt in range(self._config.webhook_max_attempts):
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "SendGrid Event API",
                **self._signer.headers(body, int(time.time())),
            }
            self.stats["posts"] += 1
            try:
                response = await self._client.post(
                    self._config.webhook_url, content=body, headers=headers
                )
                if 200 <= response.status_code < 300:
                    self.stats["delivered_batches"] += 1
                    return
                self.stats[f"status_{response.status_code}"] += 1
            except httpx.HTTPError as exc:
                self.stats["connection_errors"] += 1
                log.debug("webhook post failed: %s", type(exc).__name__)
            self.stats["retries"] += 1
            await asyncio.sleep(self._backoff(attempt))
        self.stats["abandoned_batches"] += 1
        log.warning(
            "webhook batch of %d events abandoned after %d attempts",
            len(batch),
            self._config.webhook_max_attempts,
        )

    def _backoff(self, attempt: int) -> float:
        base = self._config.webhook_retry_base_s * 2.0**attempt
        jitter = float(self._rng.uniform(0.5, 1.0))
        return min(self._config.webhook_retry_max_s, base) * jitter
