"""Signing Event Webhook requests exactly as SendGrid does, for the sandbox, tests and benches.

SendGrid signs SHA-256(timestamp bytes + raw body bytes) with ECDSA P-256 and sends the DER
signature base64-encoded; the public key is published as base64 DER SubjectPublicKeyInfo.
"""

from __future__ import annotations

import base64
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from calm_mail.track.verify import SIGNATURE_HEADER, TIMESTAMP_HEADER


class WebhookSigner:
    """Holds a P-256 private key (a fresh one by default); never shows it in repr."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey | None = None) -> None:
        self._key = private_key or ec.generate_private_key(ec.SECP256R1())

    def __repr__(self) -> str:
        return "WebhookSigner(<P-256 key>)"

    @property
    def public_key(self) -> str:
        """The public key as SendGrid shows it: base64 DER SubjectPublicKeyInfo, no PEM lines."""
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode("ascii")

    def signature(self, body: bytes, timestamp: str) -> str:
        der = self._key.sign(timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(der).decode("ascii")

    def headers(self, body: bytes, timestamp: int | str | None = None) -> dict[str, str]:
        """The two signature headers for `body` (timestamp defaults to now)."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        return {SIGNATURE_HEADER: self.signature(body, stamp), TIMESTAMP_HEADER: stamp}
