"""The composed message as RFC 5322 MIME: headers, part order, determinism."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage

from calm_mail.compose.composer import Composer
from calm_mail.compose.mime import to_email_message, to_eml_bytes

from .conftest import NASTY_TITLE, DeliveryFactory

DELIVERY_ID = "Mime0123456789abcdef_-"


def parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_eml_parses_into_text_then_html(composer: Composer, delivery: DeliveryFactory) -> None:
    msg = composer.compose(delivery(), DELIVERY_ID)
    parsed = parse(to_eml_bytes(msg))
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    # On the wire, text lines end in CRLF and a part ends with a line break.
    assert parts[0].get_content().replace("\r\n", "\n") == msg.text
    assert parts[1].get_content().replace("\r\n", "\n") == msg.html + "\n"
    assert NASTY_TITLE in parts[0].get_content()
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().replace("\r\n", "\n") == msg.text


def test_headers_follow_rfc_5322_and_8058(composer: Composer, delivery: DeliveryFactory) -> None:
    msg = composer.compose(delivery(locale="fr-FR"), DELIVERY_ID)
    parsed = parse(to_eml_bytes(msg))
    assert parsed["From"] == "Calm <winddown@mail.calm.example>"
    assert parsed["To"] == "reader@example.com"
    assert parsed["Reply-To"] == "hello@calm.example"
    assert parsed["Subject"] == msg.subject and "Votre pause" in parsed["Subject"]
    assert parsed["Date"].datetime == msg.send_at
    assert parsed["Message-ID"] == f"<{DELIVERY_ID}@mail.calm.example>"
    assert parsed["X-Calm-Delivery-Id"] == DELIVERY_ID
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    targets = [t.strip() for t in str(parsed["List-Unsubscribe"]).split(",")]
    assert targets[0].startswith("<https://") and targets[0].endswith(">")
    assert targets[1] == f"<mailto:unsubscribe@mail.calm.example?subject=unsubscribe-{DELIVERY_ID}>"


def test_eml_bytes_are_deterministic_and_smtp_safe(
    composer: Composer, delivery: DeliveryFactory
) -> None:
    first = to_eml_bytes(composer.compose(delivery(), DELIVERY_ID))
    again = to_eml_bytes(composer.compose(delivery(), DELIVERY_ID))
    assert first == again
    assert b"\r\n" in first and b"\n" not in first.replace(b"\r\n", b"")
    assert max(len(line) for line in first.split(b"\r\n")) <= 998
    other = to_eml_bytes(composer.compose(delivery(), "Other0123456789abcdef_"))
    assert other != first


def test_email_message_object_has_the_same_parts(
    composer: Composer, delivery: DeliveryFactory
) -> None:
    msg = composer.compose(delivery(locale="ja-JP"), DELIVERY_ID)
    built = to_email_message(msg)
    assert built.is_multipart()
    assert built.get_boundary() == f"=_calm_{DELIVERY_ID}"
    plain = built.get_body(preferencelist=("plain",))
    html = built.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    assert plain.get_content() == msg.text and html.get_content() == msg.html + "\n"
