"""Who may post events: SendGrid's signed webhook, plus optional OAuth bearer or basic auth.

The signature is ECDSA P-256 over the timestamp header followed by the RAW body bytes; checking
it is left to the ``sendgrid`` package's `EventWebhook` verifier (which takes text, so the body is
decoded as UTF-8 first — SendGrid posts JSON, and bytes that are not UTF-8 cannot be its JSON).
SendGrid's helper does no freshness check, so a replayed old request is refused here by a
configurable window around now. Nor does it decode the signature header strictly (Python's lax
base64 drops what follows the padding and any character outside the alphabet), so a header is
first required to be canonical standard base64: one header text per signature, never a
re-encoding of it.

Status codes (`WebhookError.status`): 401 when credentials or signature headers are missing or
the credentials are wrong, 403 when a signature is present but wrong, garbled or stale (a stale
signature is a valid signature we refuse, like a wrong one: 403), 400 for a body that is not
UTF-8. Messages are deliberately vague and never contain keys, tokens or passwords.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from sendgrid.helpers.eventwebhook import EventWebhook, EventWebhookHeader

from calm_mail.errors import ConfigError, WebhookError

SIGNATURE_HEADER: str = EventWebhookHeader.SIGNATURE
TIMESTAMP_HEADER: str = EventWebhookHeader.TIMESTAMP
DEFAULT_MAX_AGE_S = 600.0

_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class SignatureVerifier:
    """Checks SendGrid's signature headers against the raw body with one public key."""

    def __init__(self, public_key: str, *, max_age_s: float | None = DEFAULT_MAX_AGE_S) -> None:
        """`public_key`: base64 DER SubjectPublicKeyInfo, as SendGrid shows it (no PEM armour).

        `max_age_s`: how far the timestamp may lie from now, either way; None disables the check.
        Raises `ConfigError` (without echoing the key) when the key cannot be loaded.
        """
        self._webhook = EventWebhook()
        try:
            key = self._webhook.convert_public_key_to_ecdsa(public_key.strip())
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigError(
                "the Event Webhook public key cannot be read: give the base64 key SendGrid shows"
                " under Mail Settings > Signed Event Webhook (without PEM lines)"
            ) from exc
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise ConfigError("the Event Webhook public key is not an ECDSA P-256 key")
        self._webhook.public_key = key
        self.max_age_s = max_age_s

    def __repr__(self) -> str:
        return f"SignatureVerifier(max_age_s={self.max_age_s})"

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> None:
        """Return quietly when the headers sign `body`; else raise `WebhookError` (401/403/400)."""
        signature = headers.get(SIGNATURE_HEADER) or headers.get(SIGNATURE_HEADER.lower())
        timestamp = headers.get(TIMESTAMP_HEADER) or headers.get(TIMESTAMP_HEADER.lower())
        if not signature or not timestamp:
            raise WebhookError("missing Event Webhook signature headers", status=401)
        if not _TIMESTAMP.fullmatch(timestamp):
            raise WebhookError("signature verification failed", status=403)
        if self.max_age_s is not None:
            skew = abs((time.time() if now is None else now) - int(timestamp))
            if skew > self.max_age_s:
                raise WebhookError("signature timestamp outside the accepted window", status=403)
        payload = decode_body(body)
        if not self.is_valid(payload, signature, timestamp):
            raise WebhookError("signature verification failed", status=403)

    def is_valid(self, payload: str, signature: str, timestamp: str) -> bool:
        """SendGrid's own check of a canonical base64 signature; garbage (a header that is not
        canonical base64, or not DER) is simply not valid."""
        if not is_canonical_base64(signature):
            return False
        try:
            return bool(self._webhook.verify_signature(payload, signature, timestamp))
        except (binascii.Error, ValueError, TypeError, UnicodeError):
            return False


def is_canonical_base64(text: str) -> bool:
    """True when `text` is the standard base64 encoding (with padding) of some bytes, exactly
    as `base64.b64encode` writes it: no whitespace, no urlsafe alphabet, no missing or extra
    padding, no data after it, no stray bits in the last character."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):  # ValueError: text that is not ASCII
        return False
    return base64.b64encode(raw).decode("ascii") == text


def decode_body(body: bytes) -> str:
    """The raw body as text for the verifier; `WebhookError` 400 if it is not UTF-8."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookError("request body is not UTF-8", status=400) from exc


@dataclass(frozen=True, slots=True)
class Credentials:
    """Optional request credentials, as SendGrid can send them. Secrets are kept out of repr.

    `bearer_tokens`: accepted OAuth bearer tokens; `bearer_validator`: a callable deciding a token
    (e.g. introspection against your OAuth server); `basic`: (user, password). When several are
    configured, any one of them admits the request. None configured: no credentials needed.
    """

    bearer_tokens: Sequence[str] = field(default=(), repr=False)
    bearer_validator: Callable[[str], bool] | None = field(default=None, repr=False)
    basic: tuple[str, str] | None = field(default=None, repr=False)

    @property
    def required(self) -> bool:
        return bool(self.bearer_tokens) or self.bearer_validator is not None or bool(self.basic)

    def check(self, authorization: str | None) -> None:
        """Raise `WebhookError` 401 unless the Authorization header satisfies one configured way."""
        if not self.required:
            return
        scheme, _, value = (authorization or "").strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value and self._bearer_ok(value):
            return
        if scheme.lower() == "basic" and value and self._basic_ok(value):
            return
        raise WebhookError("missing or wrong credentials", status=401)

    def _bearer_ok(self, token: str) -> bool:
        given = token.encode()
        if any(hmac.compare_digest(given, t.encode()) for t in self.bearer_tokens):
            return True
        if self.bearer_validator is None:
            return False
        try:
            return bool(self.bearer_validator(token))
        except Exception:  # a failing validator means "not admitted", never a 500
            return False

    def _basic_ok(self, value: str) -> bool:
        if self.basic is None:
            return False
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(":")
        expected_user, expected_password = self.basic
        # Both comparisons always run, so timing does not tell which part was wrong.
        user_ok = hmac.compare_digest(user.encode(), expected_user.encode())
        password_ok = hmac.compare_digest(password.encode(), expected_password.encode())
        return bool(sep) and user_ok and password_ok


def parse_basic_auth(value: str) -> tuple[str, str]:
    """``USER:PASS`` -> (user, password); `ConfigError` (without the value) if malformed."""
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ConfigError("basic auth must be given as USER:PASS (both parts non-empty)")
    return user, password
