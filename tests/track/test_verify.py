"""Signature (canonical base64, then SendGrid's check) and credential checks."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calm_mail.errors import ConfigError, WebhookError
from calm_mail.sandbox.webhook import WebhookSigner
from calm_mail.track.verify import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Credentials,
    SignatureVerifier,
    is_canonical_base64,
    parse_basic_auth,
)
from tests.track.conftest import MemorySink, ServeReceiver, sg_event

# sendgrid-python's own test vector (test/unit/test_eventwebhook.py, tag 6.12.5).
KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62g"
    "w+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
)
SIGNATURE = (
    "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15"
    "TluLtEZtM="
)
TIMESTAMP = "1600112502"
PAYLOAD = (
    json.dumps(
        [
            {
                "email": "hello@world.com",
                "event": "dropped",
                "reason": "Bounced Address",
                "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
                "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-"
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


def headers(signature: str = SIGNATURE, timestamp: str = TIMESTAMP) -> dict[str, str]:
    return {SIGNATURE_HEADER: signature, TIMESTAMP_HEADER: timestamp}


def status_of(
    verifier: SignatureVerifier, hdrs: dict[str, str], body: bytes, now: float | None
) -> int:
    with pytest.raises(WebhookError) as info:
        verifier.verify(hdrs, body, now=now)
    return info.value.status


def test_sendgrid_test_vector() -> None:
    verifier = SignatureVerifier(KEY, max_age_s=None)
    assert verifier.is_valid(PAYLOAD, SIGNATURE, TIMESTAMP)
    assert not verifier.is_valid(PAYLOAD.rstrip("\r\n"), SIGNATURE, TIMESTAMP)
    assert not verifier.is_valid(PAYLOAD, SIGNATURE, "1600112503")
    verifier.verify(headers(), PAYLOAD.encode())  # no exception


def test_stale_window_both_ways() -> None:
    verifier = SignatureVerifier(KEY, max_age_s=600)
    ts = int(TIMESTAMP)
    verifier.verify(headers(), PAYLOAD.encode(), now=ts + 599)
    verifier.verify(headers(), PAYLOAD.encode(), now=ts - 599)
    assert status_of(verifier, headers(), PAYLOAD.encode(), now=ts + 601) == 403
    assert status_of(verifier, headers(), PAYLOAD.encode(), now=ts - 601) == 403


@pytest.mark.parametrize(
    ("hdrs", "status"),
    [
        ({}, 401),
        ({SIGNATURE_HEADER: SIGNATURE}, 401),
        ({TIMESTAMP_HEADER: TIMESTAMP}, 401),
        (headers(signature="%%%not base64%%%"), 403),
        (headers(signature="QUJD"), 403),  # base64 of "ABC": not DER
        (headers(signature="MEUC"), 403),
        (headers(timestamp="16001125O2"), 403),
        (headers(timestamp="-1600112502"), 403),
    ],
)
def test_refusals(hdrs: dict[str, str], status: int) -> None:
    verifier = SignatureVerifier(KEY, max_age_s=600)
    assert status_of(verifier, hdrs, PAYLOAD.encode(), now=float(TIMESTAMP)) == status


def test_body_that_is_not_utf8_is_400() -> None:
    signer = WebhookSigner()
    body = b"[\xff\xfe]"
    verifier = SignatureVerifier(signer.public_key)
    assert status_of(verifier, signer.headers(body), body, now=None) == 400


def test_own_signer_round_trip_over_raw_bytes() -> None:
    signer = WebhookSigner()
    body = '[{"email":"zoë@example.com"}]\r\n'.encode()
    verifier = SignatureVerifier(signer.public_key)
    verifier.verify(signer.headers(body), body)
    other = WebhookSigner()
    assert status_of(SignatureVerifier(other.public_key), signer.headers(body), body, None) == 403


@pytest.mark.parametrize("bad", ["", "not a key", base64.b64encode(b"x" * 91).decode()])
def test_unreadable_public_key_is_a_config_error_without_the_key(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        SignatureVerifier(bad or " ")
    assert "Mail Settings" in str(info.value)
    if bad:
        assert bad not in str(info.value)


def test_rsa_key_is_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    der = (
        rsa.generate_private_key(public_exponent=65537, key_size=1024)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ConfigError, match="P-256"):
        SignatureVerifier(base64.b64encode(der).decode())


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credentials() -> None:
    Credentials().check(None)  # nothing configured: nothing needed
    creds = Credentials(bearer_tokens=("tok-1", "tok-2"), basic=("sg", "s3cret"))
    for good in ("Bearer tok-1", "bearer tok-2", basic("sg", "s3cret")):
        creds.check(good)
    for bad in (
        None,
        "",
        "Bearer",
        "Bearer tok-3",
        basic("sg", "wrong"),
        basic("x", "s3cret"),
        "Basic !!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Token tok-1",
    ):
        with pytest.raises(WebhookError) as info:
            creds.check(bad)
        assert info.value.status == 401
        assert "tok-1" not in str(info.value) and "s3cret" not in str(info.value)
    assert "tok-1" not in repr(creds) and "s3cret" not in repr(creds)


def test_bearer_validator_and_its_failures() -> None:
    def validator(token: str) -> bool:
        if token == "boom":
            raise RuntimeError("introspection down")
        return token == "good"

    creds = Credentials(bearer_validator=validator)
    creds.check("Bearer good")
    for bad in ("Bearer bad", "Bearer boom"):
        with pytest.raises(WebhookError):
            creds.check(bad)


def test_parse_basic_auth() -> None:
    assert parse_basic_auth("sg:pa:ss") == ("sg", "pa:ss")
    for bad in ("nopass", ":x", "x:"):
        with pytest.raises(ConfigError) as info:
            parse_basic_auth(bad)
        assert bad not in str(info.value)


# --------------------------------------------------------------------------- canonical base64

SIGNER = WebhookSigner()
STAMP = 1_700_000_000
# Each mutation takes a signature header (and a place in it) to another text that lax base64
# reads as the same signature, or nearly: none of them is the header as signed.
MUTATIONS: dict[str, Callable[[str, int], str]] = {
    "four more characters": lambda sig, _: sig + "AAAA",
    "twice": lambda sig, _: sig + sig,
    "a space inside": lambda sig, at: sig[:at] + " " + sig[at:],
    "a newline inside": lambda sig, at: sig[:at] + "\n" + sig[at:],
    "a tab at the end": lambda sig, _: sig + "\t",
    "no padding": lambda sig, _: sig.rstrip("="),
    "urlsafe alphabet": lambda sig, _: sig.translate(str.maketrans("+/", "-_")),
}


def padded_signature(signer: WebhookSigner, body: bytes, stamp: int) -> str:
    """A signature of `body` whose base64 ends in padding (ECDSA's DER length varies) and
    holds a ``+`` or ``/``, so that every mutation changes it."""
    signatures = (signer.signature(body, stamp) for _ in range(500))
    return next(s for s in signatures if "=" in s and ("+" in s or "/" in s))


@pytest.mark.parametrize("kind", sorted(MUTATIONS))
@settings(max_examples=25, deadline=None)
@given(body=st.text(max_size=80).map(str.encode), at=st.integers(0, 96))
def test_only_the_signature_header_as_signed_passes(kind: str, body: bytes, at: int) -> None:
    verifier = SignatureVerifier(SIGNER.public_key, max_age_s=None)
    hdrs = SIGNER.headers(body, STAMP)
    verifier.verify(hdrs, body)  # the original passes
    sig = hdrs[SIGNATURE_HEADER]
    mutated = MUTATIONS[kind](sig, at)
    if mutated != sig:  # a signature may have no padding to drop, no + or / to swap
        assert status_of(verifier, {**hdrs, SIGNATURE_HEADER: mutated}, body, None) == 403


@given(raw=st.binary(max_size=80), at=st.integers(0, 120))
def test_canonical_base64_is_what_b64encode_writes_and_nothing_else(raw: bytes, at: int) -> None:
    text = base64.b64encode(raw).decode()
    assert is_canonical_base64(text)
    for kind, mutate in MUTATIONS.items():
        mutated = mutate(text, at)
        if mutated == text or (kind in ("four more characters", "twice") and "=" not in text):
            continue  # unpadded: the longer text is the canonical form of longer bytes
        assert not is_canonical_base64(mutated), kind
    if text.endswith("="):  # stray bits in the last data character: not how b64encode writes
        last = text.rstrip("=")[-1]
        other = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        stray = other[other.index(last) ^ 1]
        assert not is_canonical_base64(
            text.rstrip("=")[:-1] + stray + text[len(text.rstrip("=")) :]
        )


@pytest.mark.parametrize("kind", ["four more characters", "twice", "a space inside"])
def test_sendgrids_verifier_alone_takes_a_reencoded_header(kind: str) -> None:
    """Why the canonical check exists: the package's lax base64 reads these as the signature."""
    body = b'[{"event":"open"}]'
    sig = padded_signature(SIGNER, body, STAMP)
    mutated = MUTATIONS[kind](sig, 10)
    verifier = SignatureVerifier(SIGNER.public_key, max_age_s=None)
    assert verifier._webhook.verify_signature(body.decode(), mutated, str(STAMP))
    assert not verifier.is_valid(body.decode(), mutated, str(STAMP))
    assert verifier.is_valid(body.decode(), sig, str(STAMP))


def test_the_running_receiver_takes_a_real_signature_and_refuses_its_reencodings(
    serve_receiver: ServeReceiver,
) -> None:
    body = orjson.dumps([sg_event(1, "open")])
    sink = MemorySink()
    with serve_receiver(sink) as receiver:
        stamp = int(receiver.signer.headers(body)[TIMESTAMP_HEADER])
        sig = padded_signature(receiver.signer, body, stamp)
        kinds = ("four more characters", "twice", "a space inside", "urlsafe alphabet")
        assert all(MUTATIONS[kind](sig, 10) != sig for kind in kinds)
        refused = {
            kind: receiver.post(
                body, sign=False, headers=headers(MUTATIONS[kind](sig, 10), str(stamp))
            ).status_code
            for kind in kinds
        }
        assert not sink.events.stored
        good = receiver.post(body, sign=False, headers=headers(sig, str(stamp)))
    assert refused == dict.fromkeys(kinds, 403)
    assert good.status_code == 200, good.text
    assert list(sink.events.stored) == ["ev-open-1"]
